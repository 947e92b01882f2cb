"""Process-wide plugin state and the nbdkit lifecycle around VDDK.

get_ready loads the library (and may re-exec nbdkit), after_fork calls
InitEx in the serving process (VDDK starts threads there, which a fork
would lose), cleanup quiets VDDK and prints statistics before Python is
finalised.
"""

import errno
import os
import sys
import threading

from . import __file__ as package_file, __version__, statsfile
from .abi import ffi
from .calls import Vddk
from .disk import Disk
from .errors import PluginError
from .library import Library, LoadError, MissingSymbol, default_libdir
from .nbdkit_compat import debug, debug_flags, error, fail_startup
from .native import (FNM_NOMATCH, FNM_PATHNAME, c_string, fnmatch_bytes,
                     process, to_bytes)
from .printable import printable, quoted
from .reexec import reexec_if_needed
from .vddklog import error_function, log_function

RHEL_54377_HINT = (
    "if nbdkit crashes when you open a connection, read this link for "
    "workarounds: https://issues.redhat.com/browse/RHEL-54377")


class Session:
    def __init__(self, params):
        self.params = params
        self.library = None
        self.vddk = None
        self.initialized = False
        self.open_close_lock = threading.Lock()
        self.create_pending = False     # set from create= in load()
        self.disks = set()              # open, until close_disk

    @property
    def libdir(self):
        return self.params.libdir or default_libdir()

    # -- lifecycle ----------------------------------------------------------

    def load(self):
        """get_ready: load VDDK (exits with upstream's message if not)."""
        try:
            self.library = Library(self.libdir)
        except LoadError as e:
            fail_startup(str(e))
        reexec_if_needed(self.library.directory, self.params)
        self.create_pending = self.params.create
        collect = debug_flags.stats or self.params.stats_file is not None
        self.vddk = Vddk(self.library, collect)
        if (self.library.version >= 8 and self.params.transports is None
                and not os.path.exists("/sys/class/scsi_disk")):
            debug(RHEL_54377_HINT)

    def initialize(self):
        """after_fork: VixDiskLib_InitEx in the serving process."""
        config = self.params.config
        code = self.vddk.call(
            "InitEx", "6, 5, &debug_fn, &error_fn, &error_fn, %s, %s"
            % (self.libdir, config or "NULL"),
            6, 5, log_function, error_function, error_function,
            *self._init_directories())
        if code != 0:
            fail_startup(str(self.vddk.error("VixDiskLib_InitEx", code)))
        self.initialized = True

    def _init_directories(self):
        """InitEx's libDir and configFile arguments."""
        config = self.params.config
        return (to_bytes(self.libdir),
                ffi.NULL if config is None else to_bytes(config))

    def shutdown(self):
        """cleanup: no VDDK thread may call into Python after this.

        nbdkit may run cleanup with connections whose close callback never
        ran: it skips close when it quits on SIGTERM (after their threads
        have ended), and may unload before a finished connection's close.
        VDDK wants every disk closed before Exit (its requests waited for,
        the server session ended, a stream-optimized disk completed), so
        what is still open is closed here.
        """
        for disk in list(self.disks):
            self.close_disk(disk)
        if self.initialized:
            self.vddk.call("Exit", "")
            self.initialized = False
        self._report_stats()

    def _report_stats(self):
        stats = self.vddk.stats if self.vddk else None
        if stats is None:
            return
        if debug_flags.stats:
            for line in stats.table():
                debug(line)
        path = self.params.stats_file
        if path:
            try:
                statsfile.write(path, stats.as_json(),
                                self.params.disk_files())
            except statsfile.Refused as e:
                error(str(e))
            except OSError as e:
                error("stats-file: %s: %s" % (printable(path), e.strerror))

    # -- connections --------------------------------------------------------

    def open_disk(self, readonly, export_name):
        filename = self._choose_file(export_name)
        disk = Disk(self, filename, readonly)
        with self.open_close_lock:
            disk.open()
        try:
            disk.start()
        except BaseException:
            self.close_disk(disk)
            raise
        self.disks.add(disk)
        return disk

    def close_disk(self, disk):
        with self.open_close_lock:
            self.disks.discard(disk)
            disk.close()

    def create_if_pending(self, disk):
        """Create the local disk on the first connection (until it works)."""
        if self.create_pending:
            if disk.readonly:
                raise PluginError("create=true: cannot create %s on a "
                                  "read-only connection"
                                  % printable(self.params.file),
                                  errno.EROFS)
            disk.create()
            self.create_pending = False

    def _choose_file(self, export_name):
        """The file to open: file=, or the client's export name (bytes)
        if it matches export=."""
        wildcard = self.params.export
        if wildcard is None:
            return self.params.file
        if export_name is None:
            raise PluginError("'export' parameter used, but the client did "
                              "not negotiate an export name.  Using oldstyle "
                              "protocol?")
        r = fnmatch_bytes(to_bytes(wildcard), export_name, FNM_PATHNAME)
        name = export_name.decode("utf-8", "surrogateescape")
        if r == 0:
            return name
        if r == FNM_NOMATCH:
            raise PluginError('access denied: client requested %s which '
                              'does not match export="%s"'
                              % (quoted(name), wildcard))
        raise PluginError("fnmatch returned error code %d" % r)

    # -- --dump-plugin --------------------------------------------------------

    def dump(self):
        # The server's lines sit in C stdio's buffer; ours must follow them.
        process.fflush(ffi.NULL)
        try:
            self._dump()
            sys.stdout.flush()      # nbdkit exits without finalising Python
        except BrokenPipeError:
            # The reader has gone (`| head`), so nothing more can be said;
            # raising would crash nbdkit 1.32, whose python plugin does not
            # expect dump_plugin to fail.
            pass

    def _dump(self):
        try:
            library = Library(self.libdir)
            reexec_if_needed(library.directory, self.params)
        except MissingSymbol as e:
            fail_startup(str(e))
        except LoadError:
            library = None
        # Which copy of vddkpy this is (vddkpy --check names it).
        print("vddkpy_version=%s" % __version__)
        print("vddkpy_module=%s" % package_file)
        print("vddk_default_libdir=%s" % default_libdir())
        print("vddk_has_nfchostport=1")
        if library is None:
            return
        print("vddk_library_version=%d" % library.version)
        dll = library.dll()
        if dll:
            print("vddk_dll=%s" % printable(dll))
        modes = self._transport_modes(library)
        if modes is not None:
            print("vddk_transport_modes=%s" % printable(modes))
        for name in library.functions:
            print("VixDiskLib_%s=1" % name)

    def _transport_modes(self, library):
        f = library.functions
        if f["InitEx"](6, 5, ffi.NULL, ffi.NULL, ffi.NULL,
                       *self._init_directories()) != 0:
            return None
        try:
            return c_string(f["ListTransportModes"]())
        finally:
            f["Exit"]()
