"""Exceptions with a message meant for the user, and how nbdkit shows them.

A ``PluginError`` says what went wrong in one line and carries the errno
the NBD client is to see; a ``VddkError`` is one made from a VixError.

When an exception escapes a callback, nbdkit's Python plugin (1.24 to at
least 1.46) prints ``SCRIPT: CALLBACK: error: TEXT``, TEXT being what
``traceback.format_exception`` makes of it: for a PluginError a traceback
and the class name around a message already phrased for the user.  That
function is the only thing the plugin asks, and whatever a Python
callback raises reaches it with the callback's frame and its class, so
``show_in_nbdkit`` (called by ``vddkpy.callbacks`` alone, when a
PluginError is leaving a callback) makes it give such an error's message
alone, and sets the error's errno on the failing callback's thread.
Programs that merely import vddkpy (``vddkpy check``, the tests) are left
alone.  ``traceback`` (with ``re`` and ``tokenize``, some 5 ms) is imported
only then, not at every start.
"""

import errno

from .printable import printable
from .vddk.abi import (VIX_E_DISK_FULL, VIX_E_DISK_INVAL,
                       VIX_E_DISK_OUTOFRANGE, VIX_E_FILE_ACCESS_ERROR,
                       VIX_E_FILE_READ_ONLY, VIX_E_HOST_SERVER_SHUTDOWN,
                       VIX_E_INVALID_ARG, VIX_E_OUT_OF_MEMORY, error_code)


class PluginError(Exception):
    """A failure whose message is meant for the user, with its NBD errno."""

    def __init__(self, message, errno_value=errno.EIO):
        super().__init__(message)
        self.errno = errno_value


# VixError code -> the errno an NBD client sees (EIO otherwise).
# Network failures (VIX_E_HOST_NETWORK_* etc., 14008..14015) stay EIO: NBD
# has no errno for them, except ESHUTDOWN for a host going away.
_ERRNO_BY_CODE = {
    VIX_E_OUT_OF_MEMORY: errno.ENOMEM,      # e.g. NFC's memory limit
    VIX_E_INVALID_ARG: errno.EINVAL,
    VIX_E_DISK_FULL: errno.ENOSPC,
    VIX_E_FILE_READ_ONLY: errno.EROFS,
    VIX_E_FILE_ACCESS_ERROR: errno.EPERM,
    VIX_E_DISK_INVAL: errno.EINVAL,
    VIX_E_DISK_OUTOFRANGE: errno.EINVAL,
    VIX_E_HOST_SERVER_SHUTDOWN: errno.ESHUTDOWN,
}


class VddkError(PluginError):
    """A VixError: the status VDDK returned and VDDK's own text.

    ``prefix`` says what failed, as upstream's messages do
    (``VixDiskLib_Open: FILE``); ``unescaped()`` is ``PREFIX: TEXT`` as
    the user and VDDK wrote them, for a report that escapes its lines
    itself (``vddkpy check``); the message is the same through
    ``printable``, to be printed as it is.
    """

    def __init__(self, prefix, code, text):
        self.prefix = prefix
        self.code = code
        self.text = text
        super().__init__(printable(self.unescaped()),
                         _ERRNO_BY_CODE.get(error_code(code), errno.EIO))

    def unescaped(self):
        return "%s: %s" % (self.prefix, self.text)


def show_in_nbdkit(error):
    """Make ``error``, a PluginError about to leave an nbdkit callback on
    this thread, reach the client with its errno and the log as its
    message alone."""
    import nbdkit
    nbdkit.set_error(error.errno)
    error.shown_as_message = True
    import traceback
    if not hasattr(traceback.format_exception, "formats_as_message"):
        traceback.format_exception = _messages_alone(
            traceback.format_exception)


def _messages_alone(format_exception):
    def formatted(exc, *args, **kwargs):
        value = args[0] if args else kwargs.get("value", exc)
        if getattr(value, "shown_as_message", False):
            return [str(value)]
        return format_exception(exc, *args, **kwargs)
    formatted.formats_as_message = True
    return formatted
