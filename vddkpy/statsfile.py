"""stats-file=: where the JSON statistics go, checked before serving and
again right before they are put in place at exit.

nbdkit often runs as root and may write in a shared directory, so the
target is refused (one error line; at start-up exit status 1) unless its
directory exists and it is absent or a regular file holding a previous
vddkpy statistics document; never a symbolic link (not followed), never a
file of the disk being served under any name (``vmdkfiles``).  At exit the
JSON goes to a new 0600 file in the same directory, which takes the
target's name after the same checks; an existing target swaps names with
it and is checked once more before it is removed (a file that appeared
meanwhile and is not a statistics document stays as it is, and the
statistics are not written).

A statistics document is JSON whose top-level "format" is ``FORMAT``
(``vddkpy-stats/N`` for any N: a newer vddkpy's too); documents written
before the marker existed are recognised by their exact shape.
"""

import errno
import functools
import json
import os
import re
import stat
import tempfile

from .printable import printable

FORMAT = "vddkpy-stats/1"
_FORMAT = re.compile(r"vddkpy-stats/\d+")
_MAX_DOCUMENT = 1024 * 1024       # a real one is a few KiB
# The temporary file's name: short and fixed, so that it fits NAME_MAX
# whatever the length of the target's name.
_TEMPORARY_PREFIX = ".vddkpy-stats-"


class Refused(Exception):
    """The target may not be replaced (the message says why)."""


def problem(path, disk_files=None):
    """Why ``path`` (absolute) cannot be the stats file, or None.

    ``disk_files`` are the served local disk's (``vmdkfiles``), None for
    a disk on a server.
    """
    directory, name = os.path.split(path)
    reason = _directory_problem(directory) if name else "Is a directory"
    if reason is None:
        reason = _target_problem(path, disk_files)
    return None if reason is None else "stats-file: %s: %s" % (
        printable(path), reason)


def _directory_problem(directory):
    try:
        if not stat.S_ISDIR(os.stat(directory).st_mode):
            return "%s: Not a directory" % printable(directory)
    except OSError as e:
        return "%s: %s" % (printable(directory), e.strerror)
    if not os.access(directory, os.W_OK | os.X_OK):
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return "cannot create files in %s: it is on a read-only " \
                "filesystem" % printable(directory)
        return "cannot create files in %s: Permission denied" % \
            printable(directory)
    return None


def _target_problem(path, disk_files):
    try:
        target = os.lstat(path)
    except FileNotFoundError:
        target = None
    except OSError as e:
        return e.strerror
    role = disk_files.role_of(path, target) if disk_files else None
    if role is not None:
        return "is %s (file=)" % role
    if target is None:
        return None
    if stat.S_ISLNK(target.st_mode):
        return "is a symbolic link (not followed)"
    if stat.S_ISDIR(target.st_mode):
        return "Is a directory"
    if not stat.S_ISREG(target.st_mode):
        return "is not a regular file"
    try:
        if not _is_stats_document(path):
            return "exists and is not a vddkpy statistics document " \
                   "(not replaced)"
    except OSError as e:
        return e.strerror
    return None


def _is_stats_document(path):
    """Whether ``path`` holds a statistics document (OSError if it cannot
    be read)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
                 | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):     # swapped since lstat
        os.close(fd)
        raise OSError(0, "is not a regular file")
    with os.fdopen(fd, "rb") as f:
        data = f.read(_MAX_DOCUMENT + 1)
    try:
        document = json.loads(data) if len(data) <= _MAX_DOCUMENT else None
    except (ValueError, RecursionError):
        return False
    if not isinstance(document, dict):
        return False
    marker = document.get("format")
    return isinstance(marker, str) and _FORMAT.fullmatch(marker) is not None


def write(path, document, disk_files=None):
    """Write ``document`` (with the format marker) as JSON to a new file
    and put it at ``path`` if ``problem`` still finds nothing against it;
    raises Refused otherwise, OSError if writing failed."""
    directory = os.path.dirname(path)
    fd, temporary = tempfile.mkstemp(prefix=_TEMPORARY_PREFIX, dir=directory)
    ours = os.fstat(fd)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(dict(document, format=FORMAT), f, indent=2,
                      sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        # Checked again now: the target may have changed while serving.
        reason = problem(path, disk_files)
        if reason is not None:
            raise Refused(reason + "; statistics not written")
        _put_in_place(temporary, path, disk_files)
    finally:
        _remove_if_same(temporary, ours)


def _put_in_place(temporary, path, disk_files):
    """Move ``temporary`` to ``path`` without ever unlinking a file that
    was not checked: the new document takes the name of an absent target
    (RENAME_NOREPLACE), or swaps names with the existing one
    (RENAME_EXCHANGE), which is checked again under its new, private name
    and swapped back if it is not a statistics document.  A file moved to
    ``path`` after the last check thus survives, under its own name.
    Where the kernel or file system has no renameat2 flags, a plain
    rename after the check is all there is."""
    try:
        if _renameat2(temporary, path, _RENAME_NOREPLACE):
            return
    except FileExistsError:
        pass
    if not _renameat2(temporary, path, _RENAME_EXCHANGE):
        os.replace(temporary, path)
        return
    # ``temporary`` now names what was at ``path``.
    previous = os.lstat(temporary)
    reason = _target_problem(temporary, disk_files)
    if reason is None:
        _remove_if_same(temporary, previous)
    else:
        _renameat2(temporary, path, _RENAME_EXCHANGE)
        raise Refused("stats-file: %s: %s; statistics not written"
                      % (printable(path), reason))


def _renameat2(source, target, flags):
    """renameat2(2); False when this kernel or file system lacks ``flags``."""
    import ctypes          # needed once, at exit, and only with stats-file=
    libc = _libc()
    if libc is None or not hasattr(libc, "renameat2"):
        return False
    if libc.renameat2(_AT_FDCWD, os.fsencode(source), _AT_FDCWD,
                       os.fsencode(target), flags) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(error, os.strerror(error), target)


def _remove_if_same(path, expected):
    """Unlink ``path`` if it is still the file ``expected`` (an fstat or
    lstat result) describes: after a swap it may name another file, which
    is never deleted."""
    try:
        current = os.lstat(path)
    except FileNotFoundError:
        return
    if (current.st_dev, current.st_ino) == (expected.st_dev,
                                            expected.st_ino):
        os.unlink(path)


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


@functools.lru_cache(maxsize=None)
def _libc():
    import ctypes
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
