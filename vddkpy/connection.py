"""One VDDK connection and disk handle: connect, open, info, close.

The plugin's ``Disk`` serves a client through one, and ``vddkpy check``
tries the set-up through the same, so that the check makes exactly the
calls the plugin makes: the same connect parameters (``fill_remote_params``),
the same ConnectEx and Open flags, the same debug texts.  VixErrors are
raised as they come (``VddkError``); what to add to them is the caller's.
"""

import errno

from .vddk import abi
from .vddk.binding import ffi
from .errors import PluginError
from .nbdkit.native import c_string, to_bytes
from .printable import printable


def _or_null(text):
    """Text from VDDK or the user (or None) as a log line shows it."""
    return "NULL" if text is None else printable(text)


def fill_remote_params(cp, p, c_string_of):
    """Fill VixDiskLibConnectParams ``cp`` from the parameters ``p``;
    ``c_string_of`` makes a C string that stays alive with the connection."""
    cp.vmxSpec = c_string_of(p.vm)
    cp.serverName = c_string_of(p.server)
    if p.cookie is None:
        cp.credType = abi.CRED_UID
        cp.creds.uid.userName = c_string_of(p.user)
        cp.creds.uid.password = c_string_of(p.password)
    else:
        cp.credType = abi.CRED_SESSIONID
        cp.creds.sessionId.cookie = c_string_of(p.cookie)
        cp.creds.sessionId.userName = c_string_of(p.user)
        cp.creds.sessionId.key = c_string_of(p.password)
    cp.thumbPrint = c_string_of(p.thumbprint)
    cp.port = p.port
    cp.nfcHostPort = p.nfchostport
    cp.specType = abi.SPEC_VMX


class Connection:
    """ConnectEx and Open as the plugin makes them, for a read-only or a
    read-write use; ``close`` undoes whatever was done."""

    def __init__(self, vddk, params, readonly):
        self.vddk = vddk
        self.params = params
        self.readonly = readonly
        self._keep = []                     # C strings VDDK may point to
        self.connect_params = self.connection = self.handle = None

    def c_string(self, text):
        """A C string (NULL for None) alive as long as this connection."""
        cdata = ffi.NULL if text is None else ffi.new("char[]",
                                                      to_bytes(text))
        self._keep.append(cdata)
        return cdata

    def connect(self, transports):
        """ConnectEx with ``transports`` (None: VDDK's choice)."""
        self._allocate_params()
        p = self.params
        try:
            if p.is_remote:
                fill_remote_params(self.connect_params, p, self.c_string)
            connection = ffi.new("VixDiskLibConnection *")
            self.vddk.check(
                "ConnectEx", "h->params, %d, %s, %s, &connection"
                % (self.readonly, _or_null(p.snapshot), _or_null(transports)),
                self.connect_params, b"\1" if self.readonly else b"\0",
                self.c_string(p.snapshot), self.c_string(transports),
                connection)
        except BaseException:
            self._free_params()
            raise
        self.connection = connection[0]

    def open(self, filename):
        """Open ``filename`` on the connection; the transport mode used."""
        flags = self.params.open_flags(self.readonly)
        handle = ffi.new("VixDiskLibHandle *")
        shown = printable(filename)         # the client's, maybe
        self.vddk.check(
            "Open", "connection, %s, %d, &handle" % (shown, flags),
            self.connection, self.c_string(filename), flags, handle,
            prefix="VixDiskLib_Open: %s" % filename)
        self.handle = handle[0]
        return c_string(self.vddk.call("GetTransportMode", "handle",
                                       self.handle))

    def info(self, use):
        """``use(VixDiskLibInfo)``'s result (the structure is freed
        after)."""
        info = ffi.new("VixDiskLibInfo **")
        self.vddk.check("GetInfo", "handle, info", self.handle, info)
        try:
            return use(info[0])
        finally:
            self.vddk.call("FreeInfo", "info", info[0])

    def close(self):
        """Close the handle, disconnect, free the parameters (each only
        if there is one)."""
        if self.handle is not None:
            self.vddk.call("Close", "handle", self.handle)
            self.handle = None
        if self.connection is not None:
            self.vddk.call("Disconnect", "connection", self.connection)
            self.connection = None
        self._free_params()

    def _allocate_params(self):
        if self.vddk.has("AllocateConnectParams"):
            self.connect_params = self.vddk.call("AllocateConnectParams", "")
            if self.connect_params == ffi.NULL:
                self.connect_params = None
                raise PluginError("allocate VixDiskLibConnectParams: "
                                  "Cannot allocate memory", errno.ENOMEM)
        else:
            self.connect_params = ffi.new("VixDiskLibConnectParams *")

    def _free_params(self):
        if self.connect_params is not None and \
                self.vddk.has("AllocateConnectParams"):
            self.vddk.call("FreeConnectParams", "params",
                           self.connect_params)
        self.connect_params = None
