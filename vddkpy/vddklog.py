"""VDDK's log, warn and panic callbacks, routed to nbdkit.

VDDK passes a printf format and a ``va_list``; on x86-64 the ``va_list``
arrives as a pointer that libc's ``vsnprintf`` formats (it can be used
only once, hence one generous buffer).  Log goes to debug; warn and panic
go to error, except VDDK's phone-home noise, and except on a thread that
asked for silence (upstream's extents probe).
"""

import threading

from .binding import ffi
from .nbdkit_compat import debug, debug_flags, error
from .native import c_string, process
from .printable import printable

_BUFFER_SIZE = 65536
_NOISE = ("Get CEIP status failed", "VDDK_PhoneHome:")

# Threads (by ident) whose warnings are being dropped.
_silenced = set()


def _format(fmt, args):
    buffer = ffi.new("char[]", _BUFFER_SIZE)
    if process.vsnprintf(buffer, _BUFFER_SIZE, fmt, args) < 0:
        return None
    text = ffi.string(buffer).decode("utf-8", "surrogateescape")
    if text.endswith("\n"):
        text = text[:-1]                # nbdkit adds one, as upstream
    # VDDK's messages name files, which export= lets clients choose, and
    # quote descriptors: escape within the message; newlines VDDK adds at
    # its end stay (blank lines).
    body = text.rstrip("\n")
    return printable(body) + text[len(body):]


def _report_callback_failure(exception, value, traceback):
    # Never let an exception escape into VDDK's thread.
    error("internal error in VDDK log callback: %s" % printable(str(value)))


@ffi.callback("VixDiskLibGenericLogFunc", onerror=_report_callback_failure)
def log_function(fmt, args):
    if not debug_flags.verbose:
        return
    text = _format(fmt, args)
    if text is None:
        debug("lost debug message: %s" % printable(c_string(fmt)))
    else:
        debug(text)


@ffi.callback("VixDiskLibGenericLogFunc", onerror=_report_callback_failure)
def error_function(fmt, args):
    if threading.get_ident() in _silenced:
        return
    text = _format(fmt, args)
    if text is None:
        error("lost error message: %s" % printable(c_string(fmt)))
    elif any(noise in text for noise in _NOISE):
        debug(text)
    else:
        error(text)


class silenced_errors:
    """Drop VDDK warnings on this thread while in the ``with`` block."""

    def __enter__(self):
        _silenced.add(threading.get_ident())

    def __exit__(self, *exc):
        _silenced.discard(threading.get_ident())
