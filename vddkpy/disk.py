"""One NBD connection's VDDK disk: connect, open, I/O, extents, close.

Concurrency: VDDK forbids two calls on one disk handle at once, so every
call on the handle is made under ``Disk.lock``.  The nbdkit thread that
received a request makes the VDDK call itself, in one of two ways chosen
once per connection:

* over a network transport (nbd, nbdssl, hotadd, san), ReadAsync/WriteAsync
  submitted under the lock, so several requests of a connection are in
  flight together; VDDK's completion callback (from its own thread, or
  inline) wakes the waiting nbdkit thread;
* over the ``file`` transport VDDK does the I/O before returning anyway, so
  a synchronous Read/Write under the lock does the same work without the
  callback's thread hand-off (~70 µs a request in Python).

VDDK reads into and writes from nbdkit's buffer directly.
"""

import errno
import itertools
import _thread
import time

from .vddk import abi, log as vddklog
from . import extents, hints
from .connection import Connection
from .vddk.abi import SECTOR_SIZE, VIX_ASYNC, VIX_OK
from .vddk.binding import ffi
from .errors import PluginError, VddkError
from .nbdkit.compat import debug, debug_flags, error
from .nbdkit.threadstate import KeptStates
from .nbdkit.native import c_string
from .printable import printable
from .vddk.log import silenced_errors

MAX_REQUEST = 0xFFFFFFFF
_UINT64_P = ffi.typeof("uint64_t *")


class _Request:
    """An async read or write, completed by VDDK's callback."""

    __slots__ = ("done", "result", "disk", "name", "command", "nbytes",
                 "start_ns")

    def __init__(self, disk, name, command, nbytes):
        self.done = _thread.allocate_lock()
        self.done.acquire()
        self.result = None
        self.disk = disk
        self.name = name
        self.command = command
        self.nbytes = nbytes
        self.start_ns = time.monotonic_ns() if disk.vddk.stats else 0

    def complete(self, result):
        if debug_flags.datapath:
            debug("command %d (%s) completed"
                  % (self.command, _KIND[self.name]))
        if self.start_ns:
            self.disk.vddk.record_async(self.name, self.start_ns, self.nbytes)
        self.result = result
        self.done.release()


_KIND = {"ReadAsync": "read", "WriteAsync": "write"}


def _completion_failed(exception, value, traceback):
    error("internal error in VDDK completion callback: %s" % value)


@ffi.callback("void(void *, VixError)", onerror=_completion_failed)
def _completion(cb_data, result):
    ffi.from_handle(cb_data).complete(result)


def params_delta(params):
    """changed-since=CHANGEID (not "*"): unchanged areas read as zeros."""
    if params.changed_since is None:
        return False
    from .cbt import areas      # only with changed-since=: not at start
    return params.changed_since != areas.ALL


def _or_null(text):
    """Text from VDDK (or None) as a log line shows it."""
    return "NULL" if text is None else printable(text)


class Disk:
    """A VDDK connection and disk handle serving one NBD connection."""

    def __init__(self, session, filename, readonly, changes=None):
        self.session = session
        self.vddk = session.vddk
        self.params = session.params
        self.filename = filename
        self.readonly = readonly
        # Read-only remote disks: the whole disk's map, built on this
        # connection's handle at its first extents request (see extents).
        self.disk_map = None
        self._map_lock = _thread.allocate_lock()   # one scan, however many ask
        # changed-since=: the map from vSphere's change tracking (through
        # ``changes``, the connection's cbt.record.Connection, which also
        # hears of failed reads); for a delta (not "*") what it calls
        # holes also reads as zeros.
        self.changes = changes
        self.changed_map = None
        self.delta = params_delta(self.params)
        self.lock = _thread.allocate_lock()
        self.commands = itertools.count()   # upstream's command ids
        self.vddk_connection = Connection(self.vddk, self.params, readonly)
        self.connection = self.handle = None
        self.synchronous = False            # Read/Write, not the async ones
        self.size = self.logical_sector = self.physical_sector = 0
        self.can_extents = False            # the probe's answer
        self._block_list = ffi.new("VixDiskLibBlockList **")
        # The data callbacks' Python thread states (see threadstate).
        self.thread_states = KeptStates()

    # -- open / close (the caller holds the session's open/close lock) ----

    def open(self):
        opened = self.vddk_connection
        try:
            opened.connect(self.params.transports)
        except VddkError as e:
            raise self._hinted(e, "connect") from None
        try:
            self.connection = opened.connection
            self.session.create_if_pending(self)
            try:
                transport = opened.open(self.filename)
            except VddkError as e:
                raise self._hinted(e, "open") from None
        except BaseException:
            opened.close()
            self.connection = None
            raise
        self.handle = opened.handle
        debug("transport mode: %s" % _or_null(transport))
        # The file transport does its I/O before returning anyway.
        self.synchronous = transport == "file"

    def start(self):
        """Per-connection facts, read once (outside the open/close lock)."""
        self._read_info()
        if self.params.changed_since is None:
            self.can_extents = self._probe_extents()
        else:
            if not self.readonly:
                raise PluginError("changed-since serves a read-only export",
                                  errno.EROFS)
            self.changed_map = self.changes.served_map(self.size)
            self.can_extents = True

    def close(self):
        """Close once: shutdown may have closed it before nbdkit's close."""
        with self.lock:
            if self.handle is None:
                return
            code = self.vddk.call("Wait", "handle", self.handle)
            if code != VIX_OK:
                error(str(self.vddk.error("VixDiskLib_Wait", code)))
            self.vddk_connection.close()
            self.handle = self.connection = None

    def _hinted(self, e, where):
        """What to raise for VddkError ``e``: itself, or, where ``hints``
        has lines for it, those printed after it, the last one being the
        failure's message."""
        lines = hints.for_error(e.code, self.params, where,
                                vddklog.seen.actual_thumbprint)
        if not lines:
            return e
        error(str(e))
        for line in lines[:-1]:
            error(line)
        return PluginError(lines[-1], e.errno)

    def create(self):
        p = self.params
        create_params = ffi.new("VixDiskLibCreateParams *", {
            "diskType": p.create_type, "adapterType": p.create_adapter_type,
            "hwVersion": p.create_hwversion,
            "capacity": p.create_size // SECTOR_SIZE})
        shown = printable(p.file)
        self.vddk.check(
            "Create", "h->connection, %s, &cparams, NULL, NULL" % shown,
            self.connection, self.vddk_connection.c_string(p.file),
            create_params, ffi.NULL,
            ffi.NULL, prefix="VixDiskLib_Create: %s" % p.file)

    # -- facts about the disk ---------------------------------------------

    def _read_info(self):
        self.vddk_connection.info(self._use_info)

    def _use_info(self, info):
        self.size = info.capacity * SECTOR_SIZE
        # Sector sizes exist only in VDDK >= 7's structure.
        if self.vddk.version >= 7:
            self.logical_sector = info.logicalSectorSize
            self.physical_sector = info.physicalSectorSize
        if debug_flags.diskinfo:
            self._debug_info(info)

    def _debug_info(self, info):
        bios, phys = info.biosGeo, info.physGeo
        for line in (
                "capacity: %d sectors" % info.capacity,
                "biosGeo: C:%d H:%d S:%d" % (bios.cylinders, bios.heads,
                                             bios.sectors),
                "physGeo: C:%d H:%d S:%d" % (phys.cylinders, phys.heads,
                                             phys.sectors),
                "adapter type: %d" % info.adapterType,
                "num links: %d" % info.numLinks,
                "parent filename hint: %s"
                % _or_null(c_string(info.parentFileNameHint)),
                "uuid: %s" % _or_null(c_string(info.uuid))):
            debug("disk info: " + line)
        if self.vddk.version >= 7:
            debug("disk info: sector size: logical %d physical %d"
                  % (info.logicalSectorSize, info.physicalSectorSize))

    def get_size(self):
        next(self.commands)
        return self.size

    def block_size(self):
        next(self.commands)
        preferred = max(self.logical_sector, self.physical_sector, 4096)
        if self.delta:
            from .cbt.areas import DELTA_ALIGNMENT
            preferred = max(preferred, DELTA_ALIGNMENT)
        return SECTOR_SIZE, preferred, MAX_REQUEST

    # -- data path ----------------------------------------------------------

    def pread(self, buf, offset):
        try:
            if (offset | len(buf)) % SECTOR_SIZE:
                raise PluginError("read is not aligned to sectors",
                                  errno.EINVAL)
            if self.delta:
                self._read_delta(memoryview(buf), offset)
            else:
                self._read(buf, offset)
        except BaseException:
            if self.changes is not None:
                self.changes.read_failed()
            raise

    def _read(self, buf, offset):
        self._transfer("Read", ffi.from_buffer("uint8_t[]", buf,
                                               require_writable=True),
                       offset, len(buf))

    def _read_delta(self, view, offset):
        """Changed areas from VDDK, the rest as zeros (see changed)."""
        for start, length, kind in self.changed_map.within(offset,
                                                         len(view)):
            part = view[start - offset:start - offset + length]
            if kind == extents.DATA:
                self._read(part, start)
            else:
                part[:] = bytes(length)

    def pwrite(self, buf, offset, fua):
        if (offset | len(buf)) % SECTOR_SIZE:
            raise PluginError("write is not aligned to sectors", errno.EINVAL)
        self._transfer("Write", ffi.from_buffer("uint8_t[]", buf), offset,
                       len(buf))
        if fua:
            self.flush()

    def _transfer(self, kind, buffer, offset, count):
        """Read or Write (``kind``) ``count`` bytes at ``offset``."""
        try:
            if self.synchronous:
                self._synchronous(kind, buffer, offset, count)
            else:
                self._asynchronous(kind + "Async", buffer, offset, count)
        except VddkError as e:
            raise self._hinted(e, "data") from None

    def _synchronous(self, name, buffer, offset, count):
        next(self.commands)
        start, sectors = offset // SECTOR_SIZE, count // SECTOR_SIZE
        with self.lock:
            self.vddk.check(name, lambda: "handle, %d sectors, %d sectors, "
                            "buffer" % (start, sectors),
                            self.handle, start, sectors, buffer, nbytes=count)

    def _asynchronous(self, name, buffer, offset, count):
        command = next(self.commands)
        request = _Request(self, name, command, count)
        token = ffi.new_handle(request)      # alive until we return
        start, sectors = offset // SECTOR_SIZE, count // SECTOR_SIZE
        if debug_flags.datapath:
            debug("VDDK call: VixDiskLib_%s (handle, %d sectors, %d sectors, "
                  "buffer, callback, %d)" % (name, start, sectors, command))
        with self.lock:
            code = self.vddk.functions[name](self.handle, start, sectors,
                                             buffer, _completion, token)
        if code != VIX_ASYNC:
            raise self.vddk.error("VixDiskLib_" + name, code)
        request.done.acquire()
        if request.result != VIX_OK:
            raise self.vddk.error("command %d: asynchronous %s failed"
                                  % (command, _KIND[name]), request.result)

    def flush(self):
        next(self.commands)
        if self.readonly:
            return          # nothing was written: leave VDDK alone
        with self.lock:
            code = self.vddk.call("Wait", "handle", self.handle)
            if code != VIX_OK:
                error(str(self.vddk.error("VixDiskLib_Wait", code)))
            self.vddk.check("Flush", "handle", self.handle)

    # -- extents ------------------------------------------------------------

    @property
    def hole_type(self):
        # In a single link a hole may be backed by a parent: not zero.
        if self.params.single_link:
            return extents.HOLE
        return extents.HOLE | extents.ZERO

    def extents_supported(self):
        next(self.commands)
        return self.can_extents

    def _probe_extents(self):
        if not self.vddk.has("QueryAllocatedBlocks"):
            return False
        with silenced_errors(), self.lock:
            code, _ = self._query_blocks(0, abi.MIN_CHUNK_SIZE, "0")
        if code != VIX_OK:
            debug("can_extents: VixDiskLib_QueryAllocatedBlocks test failed, "
                  "extents support will be disabled: original error: %s"
                  % _or_null(self.vddk.error_text_quietly(code)))
        return code == VIX_OK

    def _query_blocks(self, start, count, start_text=None):
        """(VixError, [(offset, length)]) for sectors [start, start+count).

        The caller holds the lock (it also guards ``self._block_list``).
        """
        code = self.vddk.call(
            "QueryAllocatedBlocks",
            lambda: "handle, %s, %d sectors, %d sectors"
            % (start_text or "%d sectors" % start, count, abi.MIN_CHUNK_SIZE),
            self.handle, start, count, abi.MIN_CHUNK_SIZE, self._block_list,
            nbytes=count * SECTOR_SIZE)
        if code != VIX_OK:
            return code, []
        blocks = self._block_list[0]
        # (offset, length) pairs of uint64 follow the header.
        numbers = iter(ffi.unpack(ffi.cast(_UINT64_P, blocks.blocks),
                                  2 * blocks.numBlocks))
        self.vddk.call("FreeBlockList", "block_list", blocks)
        return code, list(zip(numbers, numbers))

    def _query(self, start, count):
        with self.lock:
            code, found = self._query_blocks(start, count)
        if code != VIX_OK:
            raise self.vddk.error("VixDiskLib_QueryAllocatedBlocks", code)
        return found

    def extents(self, offset, count, req_one):
        next(self.commands)
        if self.changed_map is not None:
            return self.changed_map.within(offset, count)
        if self.caches_map:
            return self._whole_map().within(offset, count)
        return extents.for_request(self._query, self.size, offset, count,
                                   req_one, self.hole_type)

    @property
    def caches_map(self):
        """Whether requests are answered from one whole-disk map.

        Only read-only connections to a server do, as upstream does:
        QueryAllocatedBlocks costs about a second a call there.  The map
        is this connection's own, built on its own handle, so it has the
        connection's size and describes the disk the connection reads
        (with snapshot= a disk that cannot change while it is open).  A
        local file can be written in place by any process meanwhile, and
        nothing proves that a map read earlier still describes it: each
        request asks the handle about the requested range (README,
        "Troubleshooting performance").
        """
        return self.readonly and self.params.is_remote

    def _whole_map(self):
        with self._map_lock:
            if self.disk_map is None:
                self.disk_map = self._map_disk()
            return self.disk_map

    def _map_disk(self):
        debug("vddk: pre-caching extents")
        started = time.time()
        disk_map = extents.whole_disk(self._query, self.size, self.hole_type)
        debug("vddk: finished pre-caching extents in %d second(s)"
              % (time.time() - started))
        return disk_map
