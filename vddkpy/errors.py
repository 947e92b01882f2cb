"""Exceptions, and how nbdkit shows them.

nbdkit's Python plugin reports an exception escaping a callback by
formatting it with ``traceback.format_exception`` and passing the text to
``nbdkit_error``.  For errors we have already phrased for the user
(``PluginError``) a traceback is noise, so ``install_reporting`` makes the
formatted text just the message, and records the exception's errno for the
NBD client: nbdkit formats the exception on the failing callback's own
thread, right before it reads that thread's error, so this one place serves
every callback.  It is installed when the first PluginError is made, before
that error can escape: importing ``traceback`` (with ``re`` and
``tokenize``) at every start would cost some 5 ms per process.
"""

import errno

from .vddk.abi import error_name


class PluginError(Exception):
    """A failure whose message is meant for the user, with its NBD errno."""

    def __init__(self, message, errno_value=errno.EIO):
        super().__init__(message)
        self.errno = errno_value
        install_reporting()


# VixError code -> the errno an NBD client sees (EIO otherwise).
# Network failures (VIX_E_HOST_NETWORK_* etc., 14008..14015) stay EIO: NBD
# has no errno for them, except ESHUTDOWN for a host going away.
_ERRNO_BY_CODE = {
    2: errno.ENOMEM,        # VIX_E_OUT_OF_MEMORY (e.g. NFC's memory limit)
    3: errno.EINVAL,        # VIX_E_INVALID_ARG
    8: errno.ENOSPC,        # VIX_E_DISK_FULL
    11: errno.EROFS,        # VIX_E_FILE_READ_ONLY
    13: errno.EPERM,        # VIX_E_FILE_ACCESS_ERROR
    16000: errno.EINVAL,    # VIX_E_DISK_INVAL
    16007: errno.EINVAL,    # VIX_E_DISK_OUTOFRANGE
    14014: errno.ESHUTDOWN,  # VIX_E_HOST_SERVER_SHUTDOWN
}


class VddkError(PluginError):
    """A VixError: the numeric code, its vix.h name and VDDK's own text.

    ``prefix`` says what failed, as upstream's messages do
    (``VixDiskLib_Open: FILE``); the message is ``PREFIX: TEXT``.
    """

    def __init__(self, prefix, code, text):
        super().__init__("%s: %s" % (prefix, text),
                         _ERRNO_BY_CODE.get(code & 0xFFFF, errno.EIO))
        self.prefix = prefix
        self.code = code
        self.name = error_name(code)
        self.text = text


def _format_plugin_errors(original):
    def format_exception(exc, *args, **kwargs):
        value = args[0] if args else kwargs.get("value", exc)
        if isinstance(value, PluginError):
            _record_errno(value.errno)
            return [str(value)]
        return original(exc, *args, **kwargs)
    format_exception.original = original
    return format_exception


def _record_errno(value):
    try:
        import nbdkit
    except ImportError:         # not running inside nbdkit
        return
    nbdkit.set_error(value)


def install_reporting():
    import traceback
    if not hasattr(traceback.format_exception, "original"):
        traceback.format_exception = _format_plugin_errors(
            traceback.format_exception)
