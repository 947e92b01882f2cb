"""The nbdkit callbacks, adapted to ``vddkpy``.

nbdkit's Python plugin looks the callbacks up in the script it runs, so a
script (``plugin/plugin.py``, or the installed ``nbdkit-vddk-plugin``)
does ``from vddkpy.callbacks import *``.  (Defining ``open`` hides the
builtin in this module: use ``builtins.open`` if it is ever needed here.)
"""

import nbdkit

from .nbdkit.prerequisites import require_cffi

# One error line, before cffi's ImportError could escape (binding asks for
# the rest of cffi if it has to parse the declarations).
require_cffi(parser=False)

from .nbdkit import native  # noqa: E402
from .nbdkit.compat import ServingProcess  # noqa: E402
from .params import Params  # noqa: E402
from .nbdkit.reexec import load_library  # noqa: E402

__all__ = [
    "API_VERSION", "thread_model", "dump_plugin", "config",
    "config_complete", "get_ready", "after_fork", "cleanup", "open", "close",
    "get_size", "block_size", "can_flush", "can_fua", "can_extents",
    "pread", "pwrite", "flush", "extents",
]

API_VERSION = 2

params = Params()
# Made by get_ready: the session's modules (the data path) are imported only
# once nbdkit is past its re-exec, so the re-executing process and
# --dump-plugin skip them.
session = None
# VDDK's InitEx and Exit, at whichever callbacks this server has (nbdkit
# 1.24 calls neither after_fork nor cleanup).
serving = None


def _reporting(callback):
    """``callback``, its PluginErrors shown by nbdkit as one line with
    their errno (errors.show_in_nbdkit); other exceptions keep their
    traceback (they are bugs)."""
    def reporting(*args):
        try:
            return callback(*args)
        except Exception as e:
            # errors is imported only here: not by starts that fail nothing
            # (--dump-plugin, the re-executing process).
            from .errors import PluginError, show_in_nbdkit
            if isinstance(e, PluginError):
                show_in_nbdkit(e)
            raise
    # Not functools.wraps: functools imports collections, 4 ms at every
    # start.
    reporting.__name__ = callback.__name__
    reporting.__doc__ = callback.__doc__
    return reporting


def thread_model():
    return nbdkit.THREAD_MODEL_PARALLEL


def dump_plugin():
    from .dump import dump
    dump(params)


def config(key, value):
    params.set(key, value)


def config_complete():
    params.complete()


@_reporting
def get_ready():
    global session, serving
    if params.changed_since is not None and params.cbt_agent_ is None:
        # Before VDDK is loaded and nbdkit re-executed (see cbt.agent).
        from .cbt.agent import start
        start(params)
    library = load_library(params)
    from .session import Session
    session = Session(params, library)
    serving = ServingProcess(session.initialize, session.shutdown)


@_reporting
def after_fork():
    serving.after_fork()


@_reporting
def cleanup():
    if serving is not None:     # also after --dump-plugin
        serving.stop()


@_reporting
def open(readonly):
    serving.before_open()
    # Only export= lets the client choose; otherwise its name is ignored.
    export_name = native.export_name() if params.export is not None \
        else None
    return session.open_disk(readonly, export_name)


@_reporting
def close(disk):
    try:
        session.close_disk(disk)
    finally:
        disk.thread_states.release()


@_reporting
def get_size(disk):
    return disk.get_size()


@_reporting
def block_size(disk):
    return disk.block_size()


def can_flush(disk):
    # As upstream, also under -r (Disk.flush keeps it away from VDDK then).
    return True


def can_fua(disk):
    return nbdkit.FUA_NATIVE


@_reporting
def can_extents(disk):
    return disk.extents_supported()


@_reporting
def pread(disk, buf, offset, flags):
    disk.thread_states.keep_current()
    disk.pread(buf, offset)


@_reporting
def pwrite(disk, buf, offset, flags):
    disk.thread_states.keep_current()
    disk.pwrite(buf, offset, flags & nbdkit.FLAG_FUA)


@_reporting
def flush(disk, flags):
    disk.thread_states.keep_current()
    disk.flush()


@_reporting
def extents(disk, count, offset, flags):
    disk.thread_states.keep_current()
    # nbdkit 1.24's python plugin passes the request's uint32 count as a
    # signed int: 2 GiB or more arrives negative.
    count &= 0xFFFFFFFF
    return disk.extents(offset, count, flags & nbdkit.FLAG_REQ_ONE)
