"""The plugin's parameters: one table, parsing, validation, and what they
imply.

Same keys, defaults, accepted values and messages as upstream's
nbdkit-vddk-plugin; parsing of booleans, numbers, sizes, paths and
passwords is delegated to the nbdkit server's own helpers.  ``PARAMETERS``
declares each key once; parsing, the defaults, the usage text (``usage``),
the ``--dump-plugin`` lines announcing parameters and the test that the
manual documents every key all read it.
"""

import os

from .vddk import abi
from .printable import printable
from .nbdkit.compat import (debug, exit_startup, fail_startup, parse_bool,
                            parse_size, parse_uint16, read_password,
                            readonly_server, realpath)


# -- parsers: (key, value) -> the value kept, or exit with one error line --

def _verbatim(key, value):
    return value


def _ignored(key, value):
    return None


def _boolean(key, value):
    return parse_bool(value)


def _port(key, value):
    port = parse_uint16(key, value)
    if port is None:
        exit_startup()
    return port


def _word(table, what):
    """A value that must be one of ``table``'s names."""
    def parse(key, value):
        if value not in table:
            fail_startup("unknown %s: %s" % (what, printable(value)))
        return table[value]
    return parse


def _real_path(key, value):
    return realpath(value)


def _absolute_path(key, value):
    return os.path.abspath(value)


def _password(key, value):
    return read_password(value)


def _wildcard(key, value):
    if value == "":
        fail_startup("export parameter should be a wildcard, "
                     "not an empty string")
    return value


def _hwversion(key, value):
    if value in abi.HW_VERSIONS:
        return abi.HW_VERSIONS[value]
    number = parse_uint16(key, value)
    if number is None:
        fail_startup("unknown create-hwversion: %s" % printable(value))
    return number


def _create_size(key, value):
    size = parse_size(value)
    if size <= 0 or size % abi.SECTOR_SIZE:
        fail_startup("create-size must be greater than zero and a "
                     "multiple of %d" % abi.SECTOR_SIZE)
    return size


def _seconds(key, value):
    """A positive number of seconds (changed-since='s vSphere calls)."""
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if not 0 < seconds < 1e6:
        fail_startup("%s: expected a number of seconds greater than 0, not "
                     "%s" % (key, printable(value)))
    return seconds


def _bytes(key, value):
    """A number of bytes, written out (as stats-file= records it)."""
    if not (value.isascii() and value.isdigit()):
        fail_startup("%s: expected a number of bytes, not %s"
                     % (key, printable(value)))
    return int(value)


class Parameter:
    """One ``key=value`` parameter (a plain class, not a namedtuple:
    collections costs 3 ms at every start).

    ``parse(key, value)`` gives what ``Params`` keeps (as the attribute
    named like the key, ``-`` written ``_``) or exits with one error line;
    ``default`` is kept until the key is given.  ``value`` and ``help``
    make the key's line of the usage text, and ``anchor`` names the manual
    entry (under PARAMETERS) documenting it, by the key it starts with;
    the three are None for a key users never write.  ``announce`` is the
    ``--dump-plugin`` line saying that this plugin has the key, if any.
    """

    __slots__ = ("key", "parse", "default", "value", "help", "anchor",
                 "announce")

    def __init__(self, key, parse, default, value, help, anchor, announce):
        self.key = key
        self.parse = parse
        self.default = default
        self.value = value
        self.help = help
        self.anchor = anchor
        self.announce = announce

    @property
    def attribute(self):
        return self.key.replace("-", "_")

    def usage_line(self):
        head = "%s=%s" % (self.key, self.value)
        lines = self.help.split("\n")
        if len(head) >= _HELP_COLUMN:
            lines.insert(0, "")
        first = "%-*s%s" % (_HELP_COLUMN, head, lines[0])
        return "\n".join([first.rstrip()] + [" " * _HELP_COLUMN + line
                                             for line in lines[1:]])


_HELP_COLUMN = 31


def _key(key, parse, default=None, value=None, help=None, anchor=None,
         announce=None):
    """A table row; a key with usage text is documented under its own
    name unless ``anchor`` names the entry it shares."""
    if help is not None and anchor is None:
        anchor = key
    return Parameter(key, parse, default, value, help, anchor, announce)


# In the manual's order.  Adding a parameter: one row here, its entry in
# doc/nbdkit-vddk-plugin.md (tests/unit/test_params_table.py checks both).
PARAMETERS = (
    _key("file", _verbatim, None, "<FILENAME>",
         "The filename (eg. VMDK file) to serve.\n(file= must be written "
         "out: nbdkit's\nPython plugin has no bare-filename form.)"),
    _key("export", _wildcard, None, "<WILDCARD>",
         "Let client choose file matching wildcard."),
    _key("libdir", _real_path, None, "<DIR>",
         "VDDK directory (vmware-vix-disklib-distrib)."),
    _key("server", _verbatim, None, "<HOST>",
         "ESXi host or vCenter server (remote disk)."),
    _key("port", _port, 0, "<PORT>", "Its HTTPS port (default 443).",
         anchor="server"),
    _key("nfchostport", _port, 0, "<PORT>", "Its NFC port (default 902).",
         anchor="server", announce="vddk_has_nfchostport=1"),
    _key("user", _verbatim, None, "<NAME>", "User name on the server."),
    _key("password", _password, None, "<SECRET>|-|-FD|+FILE",
         "The password (+FILE: read from FILE)."),
    _key("cookie", _verbatim, None, "<COOKIE>",
         "vCenter session cookie, instead of password."),
    _key("thumbprint", _verbatim, None, "<XX:XX:...>",
         "SHA-1 fingerprint of the server's certificate."),
    _key("vm", _verbatim, None, "moref=<ID>", "The virtual machine."),
    _key("snapshot", _verbatim, None, "<MOREF>",
         "Read the disk as it was in this snapshot."),
    _key("transports", _verbatim, None, "<MODE>:<MODE>...",
         "VDDK transport modes to try, in order."),
    _key("compression", _word(abi.COMPRESSION_FLAGS, "compression type"),
         0, "none|zlib|fastlz|skipz",
         "Compression between VDDK and the host."),
    _key("single-link", _boolean, False, "<BOOL>",
         "Open only the top file of a snapshot chain."),
    _key("unbuffered", _boolean, False, "<BOOL>",
         "Ask the host not to cache the disk's data."),
    _key("config", _real_path, None, "<FILE>", "VDDK configuration file."),
    _key("create", _boolean, False, "<BOOL>",
         "Create file= (local) before serving."),
    _key("create-size", _create_size, 0, "<SIZE>",
         "Size of the disk to create.", anchor="create"),
    _key("create-type", _word(abi.DISK_TYPES, "create-type"),
         abi.DISK_TYPES["monolithic-sparse"], "<TYPE>",
         "Kind of VMDK to create (monolithic-sparse)."),
    _key("create-adapter-type",
         _word(abi.ADAPTER_TYPES, "create-adapter-type"),
         abi.ADAPTER_TYPES["scsi-buslogic"], "<TYPE>",
         "Its disk controller (scsi-buslogic)."),
    _key("create-hwversion", _hwversion, abi.HW_VERSIONS["workstation5"],
         "<VERSION>", "Its virtual hardware version (workstation5)."),
    _key("stats-file", _absolute_path, None, "<PATH>",
         "Write per-function VDDK statistics as JSON."),
    # A changeId, or changed.ALL ("*").
    _key("changed-since", _verbatim, None, "<CHANGEID>|*",
         "Serve what changed since CHANGEID (vSphere).",
         announce="vddkpy_changed_since=1"),
    _key("changed-since-capacity", _bytes, None, "<BYTES>",
         "The disk's capacity when CHANGEID was taken."),
    _key("vsphere-timeout", _seconds, None, "<SECONDS>",
         "Bound on each vSphere call (default 120)."),
    _key("noreexec", _boolean, False, "<BOOL>",
         "Do not re-execute nbdkit (debugging only)."),
    _key("vimapiver", _ignored, None, "<ANY>",
         "Ignored, for old command lines."),
    _key("reexeced_", _verbatim),   # added by the re-exec, never by users
    # cookie= read from -FD (the re-exec, vddkpy sync's children): never
    # written by users.
    _key("cookie_", _verbatim),
    # changed-since=: the socket and pid of vddkpy's vSphere process
    # (cbt.agent), handed on by the re-exec; never written by users.
    _key("cbt_agent_", _verbatim),
)

_BY_KEY = {parameter.key: parameter for parameter in PARAMETERS}


def usage():
    """One line (or a few) per parameter users write, in table order."""
    return "\n".join(parameter.usage_line() for parameter in PARAMETERS
                     if parameter.help is not None)


def announcements(prefix):
    """The ``--dump-plugin`` lines of the parameters whose line starts
    with ``prefix`` (vddkpy's own, or upstream's ``vddk_``)."""
    return [parameter.announce for parameter in PARAMETERS
            if parameter.announce and parameter.announce.startswith(prefix)]



class Params:
    """Every parameter, with upstream's defaults."""

    def __init__(self):
        for parameter in PARAMETERS:
            setattr(self, parameter.attribute, parameter.default)
        self.file_at_start = None       # absolute, as at config_complete

    # -- config(key, value) ------------------------------------------------

    def set(self, key, value):
        parameter = _BY_KEY.get(key)
        if parameter is None:
            fail_startup("unknown parameter '%s'" % printable(key))
        if key == "cookie_":
            # vddkpy's own: cookie= from a descriptor (the re-exec's memory
            # file, sync's pipe); cookie= itself is always the cookie.
            parameter, value = _BY_KEY["cookie"], read_password(value)
        setattr(self, parameter.attribute, parameter.parse(key, value))

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
