"""``--dump-plugin``: what this VDDK offers, in upstream's ``key=value`` lines.

Needs only the library (no session, no disk), so the modules of the data
path are never imported for it.
"""

import sys

from . import __file__ as package_file, __version__
from .vddk.binding import ffi
from .vddk.library import Library, LoadError, MissingSymbol, default_libdir, \
    libdir_of
from .nbdkit.compat import fail_startup
from .nbdkit.native import c_string, process
from .params import announcements
from .printable import printable
from .nbdkit.reexec import reexec_if_needed


def dump(params):
    # The server's lines sit in C stdio's buffer; ours must follow them.
    process.fflush(ffi.NULL)
    try:
        _dump(params)
        sys.stdout.flush()      # nbdkit exits without finalising Python
    except BrokenPipeError:
        # The reader has gone (`| head`), so nothing more can be said;
        # raising would crash nbdkit 1.32, whose python plugin does not
        # expect dump_plugin to fail.
        pass


def _dump(params):
    try:
        library = Library(libdir_of(params))
        reexec_if_needed(library.directory, params)
    except MissingSymbol as e:
        fail_startup(str(e))
    except LoadError:
        library = None
    # Which copy of vddkpy this is (vddkpy status names it).
    print("vddkpy_version=%s" % __version__)
    print("vddkpy_module=%s" % package_file)
    # The parameters' own lines first, then upstream's, in upstream's order.
    _print_lines(announcements("vddkpy_"))
    print("vddk_default_libdir=%s" % default_libdir())
    _print_lines(announcements("vddk_"))
    if library is None:
        return
    print("vddk_library_version=%d" % library.version)
    dll = library.dll()
    if dll:
        print("vddk_dll=%s" % printable(dll))
    modes = _transport_modes(library, params)
    if modes is not None:
        print("vddk_transport_modes=%s" % printable(modes))
    for name in library.functions:
        print("VixDiskLib_%s=1" % name)


def _print_lines(lines):
    for line in lines:
        print(line)


def _transport_modes(library, params):
    f = library.functions
    if f["InitEx"](6, 5, ffi.NULL, ffi.NULL, ffi.NULL,
                   *library.init_directories(params.config)) != 0:
        return None
    try:
        return c_string(f["ListTransportModes"]())
    finally:
        f["Exit"]()
