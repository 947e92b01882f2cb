"""libc and nbdkit-server functions reached through cffi.

nbdkit exports its helper functions (``nbdkit_error``, ``nbdkit_parse_bool``,
``nbdkit_read_password`` ...) to plugins; calling them gives the running
server's exact parsing rules and message texts.  libc gives the dynamic
loader (for the loader's own error texts), ``vsnprintf`` for VDDK's
``va_list`` log messages and glibc's ``fnmatch``, run in the C locale
(declared in abi.PROCESS_DECLARATIONS).
"""

from ..vddk.binding import ffi

RTLD_NOW = 2
PR_SET_DUMPABLE = 4
FNM_NOMATCH = 1
# LC_CTYPE_MASK | LC_COLLATE_MASK (the same bits in glibc and musl).
_MATCHING_CATEGORIES = (1 << 0) | (1 << 3)

# The running process: the nbdkit executable (its exported helpers) and libc.
process = ffi.dlopen(None)


def c_string(cdata):
    """A C string as Python str, or None for NULL."""
    if cdata == ffi.NULL:
        return None
    return ffi.string(cdata).decode("utf-8", "surrogateescape")


def has_symbol(name):
    """Whether this process exports ``name`` (declared in abi).  A missing
    symbol is AttributeError with declarations cffi parsed, ffi.error with
    the generated module."""
    try:
        getattr(process, name)
    except (AttributeError, ffi.error):
        return False
    return True


def not_dumpable():
    """No core dump of this process, and no ptrace or /proc/PID/mem by
    other processes of its user: it holds a password or cookie.  (exec
    makes a process dumpable again.)"""
    process.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def to_bytes(text):
    return text.encode("utf-8", "surrogateescape")


def fnmatch_bytes(pattern, name, flags):
    """libc fnmatch(3) comparing bytes, whatever the process's locale.

    nbdkit never sets a locale, so upstream's fnmatch runs in the C locale
    and compares bytes; but the embedded Python sets LC_CTYPE from the
    environment, and under a UTF-8 locale fnmatch compares characters
    (``?`` then matches the two bytes of "é").  The C locale is used for
    this call only, on this thread only (uselocale).
    """
    previous = process.uselocale(_C_LOCALE)
    try:
        return process.fnmatch(pattern, name, flags)
    finally:
        process.uselocale(previous)


def export_name():
    """The NBD export name the client chose, as bytes (None if it chose
    none): the bytes upstream matches, even when they are not UTF-8."""
    name = process.nbdkit_export_name()
    return None if name == ffi.NULL else ffi.string(name)

# cffi resolves a function on first use with dlsym, which clears the
# loader's error state: resolve the loader functions now, so dlerror()
# still describes the last dlopen/dlsym when we ask.
_preload = (process.dlopen, process.dlsym, process.dlerror)

_C_LOCALE = process.newlocale(_MATCHING_CATEGORIES, b"C", ffi.NULL)
