"""Finding and loading libvixDiskLib.so.

Upstream looks only in its compiled-in libdir and only for majors 9..6;
distributions disagree on the directory and VDDK 10 will ship
``libvixDiskLib.so.10``, so we try a list of directories and any major
found on disk.
"""

import os

from .abi import FUNCTIONS
from .binding import ffi
from ..nbdkit.native import RTLD_NOW, c_string, process, to_bytes
from ..printable import printable

DEFAULT_LIBDIRS = [
    "/usr/lib64/vmware-vix-disklib",
    "/usr/lib/vmware-vix-disklib",
    "/usr/lib/x86_64-linux-gnu/vmware-vix-disklib",
    "/opt/vmware-vix-disklib-distrib",
]
KNOWN_MAJORS = [9, 8, 7, 6]
# VDDK 6.7 is the oldest supported; it is libvixDiskLib.so.6, as are 6.0
# and 6.5, which the check for required symbols refuses.
MIN_MAJOR = 6
_SONAME_PREFIX = "libvixDiskLib.so."


class LoadError(Exception):
    """The library could not be loaded; the message is upstream's.

    ``path`` is the file that is there but did not load (None when no
    candidate exists) and ``reason`` the loader's own words for it.
    """

    def __init__(self, message, path=None, reason=None):
        super().__init__(message)
        self.path = path
        self.reason = reason


class MissingSymbol(LoadError):
    pass


def _soname_major(name):
    """N of a file named libvixDiskLib.so.N, else None."""
    number = name[len(_SONAME_PREFIX):]
    if name.startswith(_SONAME_PREFIX) and number.isascii() \
            and number.isdigit():
        return int(number)
    return None


def default_libdir():
    """The first default directory that exists (the first if none does)."""
    for libdir in DEFAULT_LIBDIRS:
        if os.path.isdir(libdir):
            return libdir
    return DEFAULT_LIBDIRS[0]


def libdir_of(params):
    """The VDDK directory used: libdir=, else the default."""
    return params.libdir or default_libdir()


def sonames_on_disk(libdir):
    """{major: path} of the libvixDiskLib.so.N files in libdir."""
    found = {}
    for sub in ("lib64", ""):
        try:
            names = os.listdir(os.path.join(libdir, sub))
        except OSError:
            continue
        for name in names:
            major = _soname_major(name)
            if major is not None:
                found.setdefault(major, os.path.join(libdir, sub, name))
    return found


def candidates(libdir):
    """(path, major) in the order they are tried: newest major first,
    the VDDK tarball's lib64/ layout before the flat one."""
    on_disk = {m for m in sonames_on_disk(libdir) if m >= MIN_MAJOR}
    majors = sorted(set(KNOWN_MAJORS) | on_disk, reverse=True)
    for major in majors:
        for sub in ("lib64/", ""):
            yield (os.path.join(libdir, "%slibvixDiskLib.so.%d" % (sub, major)),
                   major)


def _dlerror():
    return printable(c_string(process.dlerror()) or "(unknown error)")


def too_old_message(libdir):
    """Why an older VDDK found in libdir is not used, or None."""
    too_old = {m: p for m, p in sonames_on_disk(libdir).items()
               if m < MIN_MAJOR}
    if not too_old:
        return None
    major = max(too_old)
    return ("%s is VDDK %d, which is too old: VDDK version must be >= 6.7. "
            "See nbdkit-vddk-plugin(1) man page section \"SUPPORTED "
            "VERSIONS OF VDDK\"." % (os.path.normpath(too_old[major]), major))


def _failure_message(libdir, present_error, first_error):
    """Why no library was loaded: a library present but failing to load
    says most, then an older VDDK in libdir, then the first failure."""
    if present_error is not None:
        return _not_found_message(present_error)
    return too_old_message(libdir) or _not_found_message(first_error)


def _not_found_message(first_error):
    # Upstream names the .so.9 candidate whatever failed; so do we, since
    # users search for this text.
    return ("%s\n\n"
            "If 'lib64/libvixDiskLib.so.9' is located on a non-standard path "
            "you may need to\n"
            "set libdir=/path/to/vmware-vix-disklib-distrib.\n\n"
            "See nbdkit-vddk-plugin(1) man page section \"LIBRARY LOCATION\" "
            "for details." % first_error)


class Library:
    """A loaded libvixDiskLib: its version, file, and callable functions."""

    def __init__(self, libdir):
        self.libdir = libdir
        first_error = present_error = present_path = None
        for path, major in candidates(libdir):
            handle = process.dlopen(to_bytes(path), RTLD_NOW)
            if handle != ffi.NULL:
                break
            error = _dlerror()
            first_error = first_error or error
            # A file that is there but does not load (corrupt, wrong
            # architecture) says more than the absence of .so.9.
            if present_error is None and os.path.exists(path):
                present_error, present_path = error, path
        else:
            raise LoadError(_failure_message(libdir, present_error,
                                             first_error),
                            present_path, present_error or first_error)
        self.path = path
        self.directory = os.path.dirname(path)
        self.version = major
        self.functions = self._resolve(handle)

    def _resolve(self, handle):
        functions = {}
        for function in FUNCTIONS:
            pointer = process.dlsym(handle, to_bytes(function.symbol))
            if pointer == ffi.NULL:
                if function.required:
                    raise MissingSymbol(
                        'required VDDK symbol "%s" is missing. '
                        "VDDK version must be >= 6.7. See "
                        "nbdkit-vddk-plugin(1) man page section "
                        '"SUPPORTED VERSIONS OF VDDK". '
                        "Original dlopen error: %s\n"
                        % (function.symbol, _dlerror()))
                continue
            functions[function.name] = ffi.cast(function.ctype, pointer)
        return functions

    def init_directories(self, config):
        """InitEx's libDir and configFile arguments (config= or None)."""
        return (to_bytes(self.libdir),
                ffi.NULL if config is None else to_bytes(config))

    def dll(self):
        """Real path of the file that provides the library, or None."""
        info = ffi.new("Dl_info *")
        if not process.dladdr(self.functions["InitEx"], info):
            return None
        name = c_string(info.dli_fname)
        return os.path.realpath(name) if name else None
