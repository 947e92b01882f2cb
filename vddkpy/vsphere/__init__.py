"""Talking to vSphere.  Here: whether pyvmomi can be had, asked at start-up
without importing it or anything heavy (the process that only
re-executes nbdkit has no use for them), and how messages name the
server."""

import sys


def pyvmomi_missing_message():
    return ("changed-since needs pyvmomi, which is not installed for Python "
            "%d.%d: apt install python3-pyvmomi" % sys.version_info[:2])


def pyvmomi_problem():
    """Why pyvmomi cannot be imported, or None; asked of the import
    system's finders without importing it (nor importlib.util, which
    brings contextlib, functools and collections: 4 ms at each start,
    the re-executing one's included)."""
    if "pyVmomi" in sys.modules:
        return None
    for finder in sys.meta_path:        # in the order an import asks them
        find_spec = getattr(finder, "find_spec", None)
        try:
            if find_spec is not None and find_spec("pyVmomi", None):
                return None
        except (ImportError, ValueError):   # as the import would fail
            break
    return pyvmomi_missing_message()


def address(params):
    """The vSphere server of ``params`` as messages name it, host:port."""
    from ..printable import printable
    return "%s:%d" % (printable(params.server), params.port or 443)


def stopped_waiting(params):
    """The error of a wait for vSphere that nbdkit ended."""
    from ..errors import PluginError
    return PluginError("stopped waiting for vSphere %s: nbdkit is shutting "
                       "down or the client has gone" % address(params))
