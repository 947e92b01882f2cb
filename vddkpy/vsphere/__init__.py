"""Talking to vSphere.  Here: whether pyvmomi can be had, asked at start-up
without importing it or anything heavy (the process that only
re-executes nbdkit has no use for them), and how messages name the
server."""

import sys


def pyvmomi_missing_message():
    return ("changed-since needs pyvmomi, which is not installed for Python "
            "%d.%d: apt install python3-pyvmomi" % sys.version_info[:2])


def pyvmomi_problem():
    """Why pyvmomi cannot be imported, or None; looked up without importing
    it."""
    from importlib.util import find_spec
    try:
        found = find_spec("pyVmomi") is not None
    except (ImportError, ValueError):
        found = False
    return None if found else pyvmomi_missing_message()


def address(params):
    """The vSphere server of ``params`` as messages name it, host:port."""
    from ..printable import printable
    return "%s:%d" % (printable(params.server), params.port or 443)


def stopped_waiting(params):
    """The error of a wait for vSphere that nbdkit ended."""
    from ..errors import PluginError
    return PluginError("stopped waiting for vSphere %s: nbdkit is shutting "
                       "down or the client has gone" % address(params))
