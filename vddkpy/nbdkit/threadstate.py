"""Python thread states kept across the nbdkit callbacks of a connection.

nbdkit's Python plugin wraps every callback in PyGILState_Ensure/Release.
On a thread without a Python thread state, Ensure creates one and Release
destroys it again, so each request would pay for building and tearing down
a thread state and its frame stack.  Measured on a 2-core machine: server
CPU per 4 KiB read 58 -> 26-43 µs, per block-status request 86 -> 37-55 µs.

So a thread takes one extra Ensure on its first data request, which keeps
its state alive between callbacks.  Every state is given back by the thread
that owns it, through the public PyGILState API only: since Python 3.12,
deleting another thread's state also unbinds the *calling* thread's own
state, and nbdkit then aborts in its next PyGILState_Release.

- nbdkit's worker threads (default, several threads per connection) give
  their hold back when they exit, from a thread-exit hook registered with
  glibc's ``__cxa_thread_atexit_impl`` (the hook C++ ``thread_local``
  destructors use).  Those hooks run before the thread's TLS keys are torn
  down, so PyGILState still finds the state, and nbdkit joins a
  connection's workers before it closes the connection and long before it
  unloads the plugin, so no hook runs after Python is finalised.
- The thread that opened the disk (the connection's own thread, which
  serves the requests itself under ``-t 1``) is not joined before unload:
  it gives its hold back in ``close``.

Without the glibc hook (another C library) threads other than the opener
keep nothing: each request then builds its own state, slower but correct.

The hold is taken and given back with the GIL held, which cffi always
releases around a foreign call, so these go through ctypes.pythonapi.
"""

import ctypes
import _thread

from .native import ffi, has_symbol, process

_api = ctypes.pythonapi
_api.PyGILState_Ensure.restype = ctypes.c_int
_api.PyGILState_Release.argtypes = [ctypes.c_int]


def _find_exit_hook():
    if not has_symbol("__cxa_thread_atexit_impl"):
        return None
    return process.__cxa_thread_atexit_impl


_register_exit_hook = _find_exit_hook()

# Native ids of the threads whose hold their exit hook gives back.
_held_until_exit = set()


# Holds are taken inside callbacks, with the GIL held, so Ensure always
# answers PyGILState_LOCKED: releasing with it never gives up the GIL.
_LOCKED = 0


def _take_hold():
    _api.PyGILState_Ensure()


def _give_back_hold():
    _api.PyGILState_Release(_LOCKED)


@ffi.callback("void(void *)")
def _give_back_at_exit(_unused):
    # cffi has made this thread's kept state current for the call; dropping
    # our hold leaves cffi's own, whose release then frees the state.
    _held_until_exit.discard(_thread.get_native_id())
    _give_back_hold()


# The hook is tied to the library holding this symbol (libpython), which
# glibc then keeps loaded until the hook has run; with NULL glibc would
# dereference a null link map on a thread's first registration.
_PYTHON_SYMBOL = ffi.cast(
    "void *", ctypes.cast(_api.PyGILState_Ensure, ctypes.c_void_p).value)


def _keep_until_exit(native_id):
    _take_hold()
    _held_until_exit.add(native_id)
    _register_exit_hook(_give_back_at_exit, ffi.NULL, _PYTHON_SYMBOL)


class KeptStates:
    """The thread states one connection keeps alive."""

    def __init__(self):
        self._opener = _thread.get_native_id()
        self._opener_holds = False

    def keep_current(self):
        """Keep the calling thread's state (cheap once kept)."""
        native_id = _thread.get_native_id()
        if native_id in _held_until_exit:
            return          # kept already (also if it reopened the disk)
        if native_id == self._opener:
            if not self._opener_holds:
                _take_hold()
                self._opener_holds = True
        elif _register_exit_hook:
            _keep_until_exit(native_id)

    def release(self):
        """Give back the opener's hold; called by close on its thread."""
        if self._opener_holds and _thread.get_native_id() == self._opener:
            _give_back_hold()
            self._opener_holds = False
