"""The checks of a vSphere server: its ports, certificate, version; then,
through VDDK, the login, the VM and snapshot, and the disk."""

from .. import hints
from ..vddk import log as vddklog
from ..vddk.abi import SECTOR_SIZE
from ..vddk.binding import ffi
from ..disk import fill_remote_params
from ..errors import VddkError
from ..nbdkit.native import c_string, to_bytes

from .report import FAIL, OK, WARN, Result

VIX_E_AUTHENTICATION_FAIL = 35
# One request as large as virt-v2v's (blocksize filter maxdata=2M): NFC's
# memory limit on the host fails larger ones.
LARGE_READ = 2 * 1024 * 1024 // SECTOR_SIZE


class Connection:
    """One VDDK connection and read-only disk handle, as the plugin makes
    them (same connect parameters, same open flags)."""

    def __init__(self, vddk, params):
        self.vddk = vddk
        self.params = params
        self._keep = []
        self.allocated = vddk.has("AllocateConnectParams")
        self.cp = vddk.call("AllocateConnectParams", "") if self.allocated \
            else ffi.new("VixDiskLibConnectParams *")
        self.connection = self.handle = None

    def _c(self, text):
        cdata = ffi.NULL if text is None else ffi.new("char[]",
                                                      to_bytes(text))
        self._keep.append(cdata)
        return cdata

    def connect(self, transports):
        if self.params.is_remote:
            fill_remote_params(self.cp, self.params, self._c)
        connection = ffi.new("VixDiskLibConnection *")
        self.vddk.check("ConnectEx", "", self.cp, b"\1",
                        self._c(self.params.snapshot), self._c(transports),
                        connection)
        self.connection = connection[0]

    def open(self, filename):
        handle = ffi.new("VixDiskLibHandle *")
        self.vddk.check("Open", "", self.connection, self._c(filename),
                        self.params.open_flags(True), handle,
                        prefix="VixDiskLib_Open: %s" % filename)
        self.handle = handle[0]
        return c_string(self.vddk.call("GetTransportMode", "", self.handle))

    def read(self, sectors):
        """Read the first ``sectors`` sectors (one request)."""
        buffer = ffi.new("uint8_t[]", sectors * SECTOR_SIZE)
        self.vddk.check("Read", "", self.handle, 0, sectors, buffer)

    def capacity(self):
        info = ffi.new("VixDiskLibInfo **")
        self.vddk.check("GetInfo", "", self.handle, info)
        try:
            return info[0].capacity
        finally:
            self.vddk.call("FreeInfo", "", info[0])

    def close(self):
        if self.handle is not None:
            self.vddk.call("Close", "", self.handle)
        if self.connection is not None:
            self.vddk.call("Disconnect", "", self.connection)
        if self.allocated:
            self.vddk.call("FreeConnectParams", "", self.cp)
        self.handle = self.connection = self.cp = None


def _fix(error, params, where):
    lines = hints.for_error(error.code, params, where,
                            vddklog.seen.actual_thumbprint)
    text = lines[-1] if lines else None
    return text[len("hint: "):] if text and text.startswith("hint: ") \
        else text


def login(vddk, params):
    """The ``login``, ``vm`` and ``snapshot`` steps, from one ConnectEx."""
    connection = Connection(vddk, params)
    try:
        connection.connect(params.transports)
    except VddkError as e:
        return _login_failure(e, params)
    finally:
        connection.close()
    results = [Result(OK, "login", "user %s logged in to %s"
                      % (params.user, params.server)),
               Result(OK, "vm", "vm=%s found" % params.vm)]
    if params.snapshot is not None:
        results.append(Result(OK, "snapshot", "snapshot=%s found"
                              % params.snapshot))
    return results


def _login_failure(e, params):
    fix = _fix(e, params, "connect")
    code = e.code & 0xFFFF
    if code == hints.VIX_E_VM_NOT_FOUND:
        return [Result(OK, "login", "user %s logged in" % params.user),
                Result(FAIL, "vm", "vm=%s: %s" % (params.vm, e.text), fix)]
    if code == hints.VIX_E_SNAPSHOT_NOTFOUND:
        return [Result(OK, "login", "user %s logged in" % params.user),
                Result(OK, "vm", "vm=%s found" % params.vm),
                Result(FAIL, "snapshot", "snapshot=%s: %s"
                       % (params.snapshot, e.text), fix)]
    if code == VIX_E_AUTHENTICATION_FAIL:
        fix = "check user= and the password (or cookie=)"
    return [Result(FAIL, "login", str(e), fix or "check server= and port=")]


def read_disk(vddk, params, transport):
    """The ``disk`` step over one transport (None: VDDK's choice): open
    read-only, read sector 0, then one request as large as virt-v2v's."""
    step = "disk" if transport is None else "disk over %s" % transport
    connection = Connection(vddk, params)
    try:
        return _read(connection, params, step, transport)
    finally:
        connection.close()


def _read(connection, params, step, transport):
    stage = "connect"
    try:
        connection.connect(transport)
        stage = "open"
        used = connection.open(params.file)
        stage = "data"
        connection.read(1)
        large = min(connection.capacity(), LARGE_READ)
    except VddkError as e:
        return Result(FAIL, step, str(e), _fix(e, params, stage))
    saw = "read sector 0 of %s read-only, %%s %d KiB at once (transport " \
        "used: %s)" % (params.file, large * SECTOR_SIZE // 1024, used)
    try:
        connection.read(large)
    except VddkError as e:
        return Result(FAIL, step, saw % "but not" + ": %s" % e,
                      _fix(e, params, "data"))
    return Result(OK, step, saw % "and")
