"""VixError statuses: one function reads a status's code, the named codes
give the NBD client its errno, and making an error changes nothing in the
process (only nbdkit's callbacks change how nbdkit prints one)."""

import errno
import traceback

from vddkpy.errors import PluginError, VddkError
from vddkpy.vddk import abi


def test_error_code_is_the_low_16_bits():
    assert abi.error_code(abi.VIX_E_FILE_ACCESS_ERROR) == 13
    # VDDK sets flag bits above the code (seen: 0x3_0000_000D for Error 13).
    assert abi.error_code((3 << 32) | 13) == abi.VIX_E_FILE_ACCESS_ERROR
    assert abi.error_code(0x10000 | abi.VIX_E_HOST_NETWORK_CONN_REFUSED) \
        == 14009


def test_vddk_error_errno_comes_from_the_code_without_flag_bits():
    for code, expected in ((abi.VIX_E_OUT_OF_MEMORY, errno.ENOMEM),
                           (abi.VIX_E_DISK_FULL, errno.ENOSPC),
                           (abi.VIX_E_FILE_READ_ONLY, errno.EROFS),
                           (abi.VIX_E_HOST_SERVER_SHUTDOWN, errno.ESHUTDOWN),
                           (abi.VIX_E_FAIL, errno.EIO),
                           (14009, errno.EIO)):
        error = VddkError("VixDiskLib_Read", (7 << 32) | code, "text")
        assert error.errno == expected, code
        assert str(error) == "VixDiskLib_Read: text"
        assert error.code == (7 << 32) | code


def test_making_errors_leaves_traceback_formatting_alone():
    before = traceback.format_exception
    error = PluginError("read is not aligned to sectors", errno.EINVAL)
    VddkError("VixDiskLib_Open: f", abi.VIX_E_FAIL, "Unknown error")
    assert traceback.format_exception is before
    try:
        raise error
    except PluginError as e:
        text = "".join(traceback.format_exception(type(e), e,
                                                  e.__traceback__))
    assert text.startswith("Traceback (most recent call last):")
    assert text.endswith("PluginError: read is not aligned to sectors\n")



def test_vddk_error_message_escaped_once_and_kept_as_written():
    """The message is printed as is (escaped); ``unescaped()`` is for a
    report that escapes its lines itself."""
    error = VddkError("VixDiskLib_Open: a\x1bb", abi.VIX_E_FAIL, "c\\d")
    assert str(error) == "VixDiskLib_Open: a\\x1bb: c\\\\d"
    assert error.unescaped() == "VixDiskLib_Open: a\x1bb: c\\d"
