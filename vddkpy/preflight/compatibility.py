"""VMware's compatibility rule for VDDK and vSphere (VDDK 8.0.2.1 release
notes): VDDK supports the N-2 and N+1 releases, e.g. VDDK 8.0 supports
vSphere 6.7, 7.0.x, 8.0 and, except for new features, the next major."""

OK, NEXT, TOO_OLD, TOO_NEW = "ok", "next", "too old", "too new"

# vSphere releases in order; from 7 on one per major (7.0, 8.0, 9.0 ...).
_SIXES = [(6, 0), (6, 5), (6, 7)]


def release(major, minor=0):
    """The release a version belongs to: 6.x keep their minor."""
    return (6, minor) if major == 6 else (major, 0)


def _index(r):
    if r in _SIXES:
        return _SIXES.index(r)
    if r[0] >= 7:
        return len(_SIXES) + r[0] - 7
    return -1                                   # before 6.0


def _at(index):
    return _SIXES[index] if index < len(_SIXES) else \
        (7 + index - len(_SIXES), 0)


def text(r):
    return "%d.%d" % r


def supported(vddk_major):
    """(oldest, newest) vSphere release VDDK ``vddk_major`` supports;
    libvixDiskLib.so.6 is taken as 6.7, the oldest the plugin loads."""
    own = _index(release(vddk_major, 7))
    return _at(max(own - 2, 0)), _at(own + 1)


def verdict(vddk_major, server):
    """OK, NEXT (N+1: supported except new features), TOO_OLD or TOO_NEW
    for the server release ``server`` (major, minor)."""
    oldest, newest = supported(vddk_major)
    at = _index(release(*server))
    if at < _index(oldest):
        return TOO_OLD
    if at > _index(newest):
        return TOO_NEW
    return NEXT if at == _index(newest) else OK


def vddk_for(server):
    """The newest VDDK release whose range includes ``server``, or None
    when only a VDDK older than 6.7 (which the plugin cannot load) has."""
    at = _index(release(*server))
    if at < 0:
        return None
    return _at(at + 2)
