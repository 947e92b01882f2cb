"""VDDK's log, warn and panic callbacks, routed to nbdkit.

VDDK passes a printf format and a ``va_list``; on x86-64 the ``va_list``
arrives as a pointer that libc's ``vsnprintf`` formats (it can be used
only once, hence one generous buffer).  Log goes to debug; warn and panic
go to error, except VDDK's phone-home noise, and except on a thread that
asked for silence (upstream's extents probe).  Whatever the verbosity,
the certificate thumbprint VDDK reports on a failed verification is kept
for the hint that follows the open error (``hints``).
"""

import _thread

from .binding import ffi
from ..nbdkit.compat import debug, debug_flags, error
from ..nbdkit.native import c_string, process
from ..printable import printable

_BUFFER_SIZE = 65536
_NOISE = ("Get CEIP status failed", "VDDK_PhoneHome:")

# Threads (by ident) whose warnings are being dropped.
_silenced = set()

# VDDK's line when the server's certificate is not the one thumbprint= names.
_ACTUAL_THUMBPRINT = r"actual thumbprint=([0-9A-Fa-f:]+)"


class _Seen:
    """What VDDK's log said that a hint can use."""
    actual_thumbprint = None


seen = _Seen()


def format_raw(fmt, args):
    """VDDK's message as it wrote it (None if it cannot be formatted)."""
    buffer = ffi.new("char[]", _BUFFER_SIZE)
    if process.vsnprintf(buffer, _BUFFER_SIZE, fmt, args) < 0:
        return None
    return ffi.string(buffer).decode("utf-8", "surrogateescape")


def format_message(fmt, args):
    text = format_raw(fmt, args)
    if text is None:
        return None
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
    watched = b"thumbprint=" in ffi.string(fmt)
    if not (debug_flags.verbose or watched):
        return
    text = format_message(fmt, args)        # va_list: usable only once
    if watched:
        note_thumbprint(text)
    if not debug_flags.verbose:
        return
    if text is None:
        debug("lost debug message: %s" % printable(c_string(fmt)))
    else:
        debug(text)


@ffi.callback("VixDiskLibGenericLogFunc", onerror=_report_callback_failure)
def error_function(fmt, args):
    if _thread.get_ident() in _silenced:
        return
    text = format_message(fmt, args)
    if text is None:
        error("lost error message: %s" % printable(c_string(fmt)))
    elif any(noise in text for noise in _NOISE):
        debug(text)
    else:
        error(text)


def note_thumbprint(text):
    import re       # only for a line naming a thumbprint: not at every start
    match = re.search(_ACTUAL_THUMBPRINT, text or "")
    if match:
        seen.actual_thumbprint = match.group(1)


class silenced_errors:
    """Drop VDDK warnings on this thread while in the ``with`` block."""

    def __enter__(self):
        _silenced.add(_thread.get_ident())

    def __exit__(self, *exc):
        _silenced.discard(_thread.get_ident())
