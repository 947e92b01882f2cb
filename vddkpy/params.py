"""The plugin's parameters: parsing, validation, and what they imply.

Same keys, defaults, accepted values and messages as upstream's
nbdkit-vddk-plugin; parsing of booleans, numbers, sizes, paths and
passwords is delegated to the nbdkit server's own helpers.
"""

import os

from .vddk import abi
from .printable import printable
from .nbdkit.compat import (debug, exit_startup, fail_startup, parse_bool,
                            parse_size, parse_uint16, read_password,
                            readonly_server, realpath)

USAGE = """\
file=<FILENAME>                The filename (eg. VMDK file) to serve.
                               (file= must be written out: nbdkit's
                               Python plugin has no bare-filename form.)
export=<WILDCARD>              Let client choose file matching wildcard.
libdir=<DIR>                   VDDK directory (vmware-vix-disklib-distrib).
stats-file=<PATH>              Write per-function VDDK statistics as JSON.
changed-since=<CHANGEID>|*     Serve what changed since CHANGEID (vSphere).
Many optional parameters are supported, see nbdkit-vddk-plugin(1)."""

# Keys whose value is stored as given.
_VERBATIM = {"changed-since", "cookie", "file", "server", "snapshot",
             "thumbprint", "transports", "user", "vm", "reexeced_"}
_BOOLEANS = {"create", "noreexec", "single-link", "unbuffered"}
_PORTS = {"port", "nfchostport"}
_WORDS = {
    "compression": (abi.COMPRESSION_FLAGS, "unknown compression type: %s"),
    "create-adapter-type": (abi.ADAPTER_TYPES,
                            "unknown create-adapter-type: %s"),
    "create-type": (abi.DISK_TYPES, "unknown create-type: %s"),
}


def _attribute(key):
    return key.replace("-", "_")


class Params:
    """Every parameter, with upstream's defaults."""

    def __init__(self):
        self.changed_since = None       # a changeId, or changed.ALL
        self.compression = 0            # open flag bits
        self.config = None
        self.cookie = None
        self.create = False
        self.create_adapter_type = abi.ADAPTER_TYPES["scsi-buslogic"]
        self.create_hwversion = abi.HW_VERSIONS["workstation5"]
        self.create_size = 0
        self.create_type = abi.DISK_TYPES["monolithic-sparse"]
        self.export = None
        self.file = None
        self.file_at_start = None       # absolute, as at config_complete
        self.libdir = None
        self.nfchostport = 0
        self.noreexec = False
        self.password = None
        self.port = 0
        self.reexeced_ = None
        self.server = None
        self.single_link = False
        self.snapshot = None
        self.stats_file = None
        self.thumbprint = None
        self.transports = None
        self.unbuffered = False
        self.user = None
        self.vm = None

    # -- config(key, value) ------------------------------------------------

    def set(self, key, value):
        if key == "cookie" and self.reexeced_ is not None:
            value = read_password(value)    # the re-exec's file (reexec)
        if key in _VERBATIM:
            setattr(self, _attribute(key), value)
        elif key in _BOOLEANS:
            setattr(self, _attribute(key), parse_bool(value))
        elif key in _PORTS:
            self._set_port(key, value)
        elif key in _WORDS:
            table, message = _WORDS[key]
            if value not in table:
                fail_startup(message % printable(value))
            setattr(self, _attribute(key), table[value])
        elif key in ("config", "libdir"):
            setattr(self, key, realpath(value))
        elif key == "create-hwversion":
            self.create_hwversion = self._hwversion(value)
        elif key == "create-size":
            self.create_size = self._create_size(value)
        elif key == "export":
            if value == "":
                fail_startup("export parameter should be a wildcard, "
                             "not an empty string")
            self.export = value
        elif key == "password":
            self.password = read_password(value)
        elif key == "stats-file":
            self.stats_file = os.path.abspath(value)
        elif key == "vimapiver":
            pass                        # ignored, for old command lines
        else:
            fail_startup("unknown parameter '%s'" % key)

    def _set_port(self, key, value):
        port = parse_uint16(key, value)
        if port is None:
            exit_startup()
        setattr(self, key, port)

    @staticmethod
    def _hwversion(value):
        if value in abi.HW_VERSIONS:
            return abi.HW_VERSIONS[value]
        number = parse_uint16("create-hwversion", value)
        if number is None:
            fail_startup("unknown create-hwversion: %s" % printable(value))
        return number

    @staticmethod
    def _create_size(value):
        size = parse_size(value)
        if size <= 0 or size % abi.SECTOR_SIZE:
            fail_startup("create-size must be greater than zero and a "
                         "multiple of %d" % abi.SECTOR_SIZE)
        return size

    # -- config_complete ---------------------------------------------------

    @property
    def is_remote(self):
        """Upstream's (and VMware's sample program's) test."""
        given = (self.vm, self.server, self.user, self.password,
                 self.cookie, self.thumbprint)
        return (any(v is not None for v in given)
                or self.port != 0 or self.nfchostport != 0)

    def complete(self):
        """Check the combination, in upstream's order; exit on error."""
        if self.file is not None:
            # Kept for the check at exit, when nbdkit may have changed
            # directory (a relative file= is VDDK's error, not ours).
            self.file_at_start = os.path.abspath(self.file)
        for message in self.problems():
            fail_startup(message)
        if self.reexeced_ is not None:
            self._restore_library_path()

    def problems(self):
        if self.file is not None and self.export is not None:
            yield "file and export parameters cannot be used together"
        if not self.is_remote:
            if self.file is None:
                yield ("you must supply the file=<FILENAME> parameter after "
                       "the plugin name on the command line")
        else:
            if self.file is None and self.export is None:
                yield ("remote connection requested, either file or export "
                       "parameter is required")
            for name in ("server", "user", "password", "vm"):
                if getattr(self, name) is None:
                    yield ("remote connection requested, missing "
                           "parameter: %s" % name)
        if self.create:
            if self.is_remote:
                yield ("create=true can only be used to create local VMDK "
                       "files")
            if self.create_size == 0:
                yield ("if using create=true you must specify the size "
                       "using the create-size parameter")
        if self.changed_since is not None:
            from .cbt.tracked import parameter_problems
            yield from parameter_problems(self, readonly_server())
        if self.stats_file is not None:
            # Imported only for stats-file= (json, re, tempfile at start-up).
            from . import statsfile
            problem = statsfile.problem(self.stats_file, self.disk_files())
            if problem:
                yield problem

    def _restore_library_path(self):
        """Give --run commands the LD_LIBRARY_PATH the user started with."""
        debug("cleaning up after re-exec")
        current = os.environ.get("LD_LIBRARY_PATH")
        if (current is None or self.reexeced_ not in current
                or (self.libdir is not None
                    and not current.startswith(self.libdir))):
            fail_startup("'reexeced_' set with garbled environment")
        if self.reexeced_:
            os.environ["LD_LIBRARY_PATH"] = self.reexeced_
        else:
            del os.environ["LD_LIBRARY_PATH"]

    # -- derived values ----------------------------------------------------

    def disk_files(self):
        """The files of a local disk (``vmdkfiles``); None for a remote one
        (its files are not on this machine)."""
        if self.is_remote or self.file_at_start is None:
            return None
        from . import vmdkfiles
        return vmdkfiles.local_disk(
            self.file_at_start, self.create_type if self.create else None)

    def open_flags(self, readonly):
        flags = self.compression
        if readonly:
            flags |= abi.FLAG_OPEN_READ_ONLY
        if self.single_link:
            flags |= abi.FLAG_OPEN_SINGLE_LINK
        if self.unbuffered:
            flags |= abi.FLAG_OPEN_UNBUFFERED
        return flags
