"""libc and nbdkit-server functions reached through cffi.

nbdkit exports its helper functions (``nbdkit_error``, ``nbdkit_parse_bool``,
``nbdkit_read_password`` ...) to plugins; calling them gives the running
server's exact parsing rules and message texts.  libc gives the dynamic
loader (for the loader's own error texts), ``vsnprintf`` for VDDK's
``va_list`` log messages and glibc's ``fnmatch``, run in the C locale.
"""

from .abi import ffi

ffi.cdef("""
void *dlopen(const char *filename, int flags);
void *dlsym(void *handle, const char *symbol);
char *dlerror(void);
typedef struct {
    const char *dli_fname;
    void *dli_fbase;
    const char *dli_sname;
    void *dli_saddr;
} Dl_info;
int dladdr(const void *addr, Dl_info *info);
int vsnprintf(char *str, size_t size, const char *format, void *ap);
int fnmatch(const char *pattern, const char *string, int flags);
void *newlocale(int category_mask, const char *locale, void *base);
void *uselocale(void *newloc);
void exit(int status);
int fflush(void *stream);
void free(void *ptr);

void nbdkit_error(const char *fs, ...);
void nbdkit_debug(const char *fs, ...);
int nbdkit_parse_bool(const char *str);
int nbdkit_parse_uint16_t(const char *what, const char *str, uint16_t *r);
int64_t nbdkit_parse_size(const char *str);
int nbdkit_read_password(const char *value, char **password);
char *nbdkit_realpath(const char *path);
const char *nbdkit_export_name(void);
""")

RTLD_NOW = 2
FNM_PATHNAME = 1
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
