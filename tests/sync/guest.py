"""The guest of the bed's VM: its writes reach the running disks through
the stand-in (nbdkit + plugin, read-write, no snapshot), which records each
in the disk's change tracking, as ESXi does for a guest's writes."""

import contextlib
import random

from bed import Nbdkit

SECTOR = 512


@contextlib.contextmanager
def opened(bed, libdir, directory, config, disk=0, extra=(), **kw):
    """An NBD handle on disk number ``disk`` of the bed's VM, served by
    nbdkit + the plugin (``extra`` parameters; ``kw`` for Nbdkit) + the
    stand-in (``config``); the server stopped, and found alive, after."""
    directory.mkdir(parents=True, exist_ok=True)
    args = bed.vm_args() + ["file=%s" % bed.disks[disk].file] + list(extra)
    server = Nbdkit(directory, libdir, args, config=config, verbose=False,
                    **kw)
    server.start()
    try:
        h = server.connect()
        try:
            yield h
        finally:
            h.shutdown()
    finally:
        server.stop()
    server.assert_survived()


def write(bed, libdir, directory, writes, disk=0):
    """``writes`` [(offset, bytes)] onto disk number ``disk``."""
    with opened(bed, libdir, directory, bed.guest_config(), disk) as h:
        for offset, data in writes:
            write_unaligned(h, offset, data)
        h.flush()


def write_unaligned(h, offset, data):
    """Write ``data`` at any offset, as a guest's storage stack does on a
    disk of 512-byte sectors: whole sectors read, patched, written."""
    start = offset // SECTOR * SECTOR
    end = -(-(offset + len(data)) // SECTOR) * SECTOR
    sectors = bytearray(h.pread(end - start, start))
    sectors[offset - start:offset - start + len(data)] = data
    h.pwrite(bytes(sectors), start)


def scattered_writes(size, count, seed):
    """``count`` writes over a disk of ``size`` bytes: random data at
    unaligned offsets and lengths, zeros over data, and one ending at the
    disk's last byte."""
    rng = random.Random(seed)
    writes = []
    for n in range(count):
        length = rng.choice((1, 7, 511, 513, 4096, 65536 + 3, 200000))
        offset = rng.randrange(0, size - length)
        data = bytes(length) if n % 5 == 0 else rng.randbytes(length)
        writes.append((offset, data))
    writes.append((size - 1000, rng.randbytes(1000)))
    return writes
