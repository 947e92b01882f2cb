"""The checks of a vSphere server: its ports, certificate, version; then,
through VDDK, the login, the VM and snapshot, and the disk."""

from .. import hints
from ..vddk import log as vddklog
from ..vddk.abi import (SECTOR_SIZE, VIX_E_AUTHENTICATION_FAIL,
                        VIX_E_FILE_ACCESS_ERROR, VIX_E_FILE_READ_ONLY,
                        VIX_E_SNAPSHOT_NOTFOUND, VIX_E_VM_NOT_FOUND,
                        error_code)
from ..vddk.binding import ffi
from ..connection import Connection
from ..errors import VddkError

from .report import FAIL, OK, Result

# One request as large as virt-v2v's (blocksize filter maxdata=2M): NFC's
# memory limit on the host fails larger ones.
LARGE_READ = 2 * 1024 * 1024 // SECTOR_SIZE


def _fix(error, params, where):
    lines = hints.for_error(error.code, params, where,
                            vddklog.seen.actual_thumbprint)
    text = lines[-1] if lines else None
    return text[len("hint: "):] if text and text.startswith("hint: ") \
        else text


def login(vddk, params):
    """The ``login``, ``vm`` and ``snapshot`` steps, from one ConnectEx."""
    connection = Connection(vddk, params, readonly=True)
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
    code = error_code(e.code)
    if code == VIX_E_VM_NOT_FOUND:
        return [Result(OK, "login", "user %s logged in" % params.user),
                Result(FAIL, "vm", "vm=%s: %s" % (params.vm, e.text), fix)]
    if code == VIX_E_SNAPSHOT_NOTFOUND:
        return [Result(OK, "login", "user %s logged in" % params.user),
                Result(OK, "vm", "vm=%s found" % params.vm),
                Result(FAIL, "snapshot", "snapshot=%s: %s"
                       % (params.snapshot, e.text), fix)]
    if code == VIX_E_AUTHENTICATION_FAIL:
        fix = "check user= and the password (or cookie=)"
    return [Result(FAIL, "login", e.unescaped(),
                   fix or "check server= and port=")]


def read_disk(vddk, params, transport):
    """The ``disk`` step over one transport (None: VDDK's choice): open
    read-only, read sector 0, then one request as large as virt-v2v's."""
    step = "disk" if transport is None else "disk over %s" % transport
    connection = Connection(vddk, params, readonly=True)
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
        _read_start(connection, 1)
        large = min(connection.info(lambda info: info.capacity), LARGE_READ)
    except VddkError as e:
        return Result(FAIL, step, e.unescaped(), _fix(e, params, stage))
    saw = "read sector 0 of %s read-only, %%s %d KiB at once (transport " \
        "used: %s)" % (params.file, large * SECTOR_SIZE // 1024, used)
    try:
        _read_start(connection, large)
    except VddkError as e:
        return Result(FAIL, step, saw % "but not" + ": %s" % e.unescaped(),
                      _fix(e, params, "data"))
    return Result(OK, step, saw % "and")


def _read_start(connection, sectors):
    """Read the disk's first ``sectors`` sectors in one request."""
    buffer = ffi.new("uint8_t[]", sectors * SECTOR_SIZE)
    connection.vddk.check("Read", "", connection.handle, 0, sectors, buffer)


def write_access(vddk, params, transport):
    """The ``write`` step of a read-write run (no -r): open the disk for
    writing as the plugin would, and close it; nothing is written."""
    connection = Connection(vddk, params, readonly=False)
    stage = "connect"
    try:
        connection.connect(transport)
        stage = "open"
        connection.open(params.file)
    except VddkError as e:
        return Result(FAIL, "write", "%s (opening it for writing, as nbdkit "
                      "without -r does)" % e.unescaped(),
                      _write_fix(e, params, stage))
    finally:
        connection.close()
    return Result(OK, "write", "%s opens for writing (nothing was written)"
                  % params.file)


def _write_fix(error, params, stage):
    if error_code(error.code) in (VIX_E_FILE_ACCESS_ERROR, VIX_E_FILE_READ_ONLY):
        who = "user= (on the VM's datastore)" if params.is_remote else \
            "the user nbdkit runs as (on the file and its filesystem)"
        return ("the disk can be read but not written: give %s write "
                "access, or run nbdkit with -r (read-only, all a copy from "
                "the disk needs) and check with -r" % who)
    return _fix(error, params, stage)
