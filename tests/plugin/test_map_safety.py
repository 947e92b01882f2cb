"""A read-only connection's allocation map
describes the bytes that connection reads, whatever happened to the served
path between the opens of several connections (a file renamed over it,
growth in place), and whichever connection asked first.

Each connection is a real nbdcopy whose destination is a FIFO: nbdcopy
connects to its source (the plugin opens that connection's disk), then
blocks opening the FIFO for writing until the test opens it for reading.
The test thus decides when each connection opens and when it asks for
extents.  Into a pipe nbdcopy writes a zero extent as zeros without
reading it: it trusts the map as it does when it skips zero extents with
--destination-is-zero.

A randomized history then mixes all of it (in-place writes and hole
punches, growth, renames, 2-4 connections opening and closing) and checks
every answer against the bytes the same connection reads.
"""

import os
import subprocess
import threading
import time

import pytest

from bed import TIMEOUT

MiB = 1024 * 1024


class GatedCopy:
    """An nbdcopy of ``uri`` into a FIFO, held back before its first
    request until ``release()``."""

    def __init__(self, server, fifo):
        os.mkfifo(fifo)
        self.fifo = fifo
        self.proc = subprocess.Popen(
            ["nbdcopy", "--connections=1", server.uri, str(fifo)],
            stderr=subprocess.PIPE)

    def release(self):
        """Let nbdcopy copy; (exit status, bytes copied, its stderr)."""
        copied = []
        reader = threading.Thread(target=self._read_all, args=(copied,),
                                  daemon=True)
        reader.start()
        try:
            _, err = self.proc.communicate(timeout=TIMEOUT)
        finally:
            self._end_reading(reader)
        return self.proc.returncode, b"".join(copied), err.decode()

    def _end_reading(self, reader):
        """Wait for the reader; if nbdcopy failed before opening the FIFO,
        open and close its writing end so that the reader sees EOF."""
        deadline = time.monotonic() + TIMEOUT
        while reader.is_alive() and time.monotonic() < deadline:
            try:
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:         # ENXIO: the reader is not there yet
                pass
            reader.join(0.1)

    def _read_all(self, copied):
        with open(self.fifo, "rb") as f:
            copied.append(f.read())


@pytest.fixture
def gated_copy(nbdkit):
    """Factory: gated_copy(server, fifo) -> a GatedCopy, killed at the end
    if the test left it waiting."""
    copies = []

    def start(server, fifo):
        copies.append(GatedCopy(server, fifo))
        return copies[-1]

    yield start
    for copy in copies:
        if copy.proc.poll() is None:
            copy.proc.kill()
        copy.proc.communicate()


def wait_for_opens(server, count):
    """Wait until the plugin has opened ``count`` disk handles."""
    deadline = time.monotonic() + TIMEOUT
    while len(server.calls("Open")) < count:
        assert time.monotonic() < deadline, server.stderr
        time.sleep(0.02)


def sparse_file(path, size, data_at):
    """A sparse file of ``size`` bytes holding ``data`` at the offsets of
    ``data_at`` (offset -> bytes); returns its bytes."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in data_at.items():
            f.seek(offset)
            f.write(data)
    return path.read_bytes()


def test_file_renamed_over_the_path_between_opens(tmp_path, nbdkit,
                                                   gated_copy):
    disk = tmp_path / "disk.img"
    old = sparse_file(disk, 4 * MiB, {MiB: b"old" * 1000})
    server = nbdkit("file=%s" % disk, readonly=True, verbose=False)
    first = gated_copy(server, tmp_path / "a.fifo")
    wait_for_opens(server, 1)
    fresh = tmp_path / "fresh.img"
    new = os.urandom(4 * MiB)
    fresh.write_bytes(new)
    os.rename(fresh, disk)
    second = gated_copy(server, tmp_path / "b.fifo")
    wait_for_opens(server, 2)
    # The older connection asks for extents first, then the newer one.
    rc, copied, err = first.release()
    assert (rc, err) == (0, "")
    assert copied == old
    rc, copied, err = second.release()
    assert (rc, err) == (0, "")
    assert copied == new


def test_file_grown_in_place_between_opens(tmp_path, nbdkit, gated_copy):
    disk = tmp_path / "disk.img"
    sparse_file(disk, 4 * MiB, {0: b"start"})
    server = nbdkit("file=%s" % disk, readonly=True, verbose=False)
    first = gated_copy(server, tmp_path / "a.fifo")
    wait_for_opens(server, 1)
    with open(disk, "r+b") as f:
        f.seek(7 * MiB)
        f.write(b"grown" * 1000)
        f.truncate(8 * MiB)
    grown = disk.read_bytes()
    assert len(grown) == 8 * MiB
    second = gated_copy(server, tmp_path / "b.fifo")
    wait_for_opens(server, 2)
    rc, copied, err = first.release()
    assert (rc, err) == (0, "")
    assert copied == grown[:4 * MiB]
    rc, copied, err = second.release()
    assert (rc, err) == (0, "")
    assert copied == grown


# -- a randomized history ----------------------------------------------------

SEED = 17
ROUNDS = 200
SECTOR = 512
MAX_SIZE = 6 * MiB
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2


def punch_hole(path, offset, length):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                               ctypes.c_int64]
    fd = os.open(path, os.O_WRONLY)
    try:
        if libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                          offset, length):
            raise OSError(ctypes.get_errno(), "fallocate")
    finally:
        os.close(fd)


class History:
    """The served path and the connections open on it, with what each
    connection's bytes must be: ``bytes_of`` is the model of the file a
    connection opened (renames replace the file at the path, in-place
    writes and growth change it)."""

    def __init__(self, path, server, rng):
        self.path, self.server, self.rng = path, server, rng
        self.current = bytearray()
        self.connections = []           # [handle, model, size]
        self.mismatches = []
        self.answers = 0
        self.rename_fresh_file()

    # -- what other processes do to the served path ----------------------

    def _span(self, size, longest):
        offset = self.rng.randrange(size // SECTOR) * SECTOR
        length = self.rng.randrange(1, longest // SECTOR + 1) * SECTOR
        return offset, min(length, size - offset)

    def rename_fresh_file(self):
        size = self.rng.randrange(1, MAX_SIZE // SECTOR // 2) * SECTOR
        fresh = self.path.with_name("fresh.img")
        model = bytearray(size)
        with open(fresh, "wb") as f:
            f.truncate(size)
            for _ in range(self.rng.randrange(4)):
                offset, length = self._span(size, 256 * 1024)
                data = self.rng.randbytes(length)
                f.seek(offset)
                f.write(data)
                model[offset:offset + length] = data
        os.rename(fresh, self.path)
        self.current = model

    def write_data(self):
        offset, length = self._span(len(self.current), 128 * 1024)
        data = self.rng.randbytes(length)
        with open(self.path, "r+b") as f:
            f.seek(offset)
            f.write(data)
        self.current[offset:offset + length] = data

    def zero_data(self):
        offset, length = self._span(len(self.current), 256 * 1024)
        if self.rng.randrange(2):
            punch_hole(self.path, offset, length)
        else:
            with open(self.path, "r+b") as f:
                f.seek(offset)
                f.write(bytes(length))
        self.current[offset:offset + length] = bytes(length)

    def grow(self):
        size = len(self.current)
        grown = min(size + self.rng.randrange(1, 2 * MiB // SECTOR) * SECTOR,
                    MAX_SIZE)
        with open(self.path, "r+b") as f:
            f.truncate(grown)
        self.current.extend(bytes(grown - size))

    # -- the clients ---------------------------------------------------------

    def open_connection(self):
        if len(self.connections) == 4:
            self.close_connection()
        h = self.server.connect()
        self.connections.append([h, self.current, h.get_size()])
        assert self.connections[-1][2] == len(self.current)

    def close_connection(self):
        if len(self.connections) > 2:
            h = self.connections.pop(self.rng.randrange(
                len(self.connections)))[0]
            h.shutdown()

    def ask_extents(self):
        import nbd
        h, model, size = self.rng.choice(self.connections)
        offset, count = self._span(size, size)
        flags = nbd.CMD_FLAG_REQ_ONE if self.rng.randrange(4) == 0 else 0
        entries = []

        def extent(context, start, found, error):
            if context == nbd.CONTEXT_BASE_ALLOCATION:
                entries.extend(zip(found[0::2], found[1::2]))
            return 0

        self.answers += 1
        where = "%d+%d of %d" % (offset, count, size)
        try:
            h.block_status(count, offset, extent, flags)
        except nbd.Error as e:
            return self.mismatches.append((where, str(e)))
        self._check(h, model, size, offset, entries, where)

    def _check(self, h, model, size, offset, entries, where):
        end = offset + sum(length for length, _ in entries)
        if not entries or end <= offset or end > size:
            return self.mismatches.append((where, "extents", entries))
        data = h.pread(end - offset, offset)
        if data != model[offset:end]:
            return self.mismatches.append((where, "bytes differ"))
        position = offset
        for length, kind in entries:
            if kind & 2 and any(data[position - offset:
                                     position - offset + length]):
                self.mismatches.append((where, "not zero", position, length))
            position += length

    def step(self):
        self.rng.choices(
            (self.open_connection, self.close_connection, self.write_data,
             self.zero_data, self.grow, self.rename_fresh_file,
             self.ask_extents),
            weights=(10, 6, 12, 8, 4, 6, 54))[0]()


def test_random_history_of_writes_renames_and_opens(tmp_path, nbdkit):
    import random
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"")
    history = History(disk, None, random.Random(SEED))
    history.server = nbdkit("file=%s" % disk, readonly=True, verbose=False)
    history.open_connection()
    history.open_connection()
    for _ in range(ROUNDS):
        history.step()
    for h, _, _ in history.connections:
        h.shutdown()
    assert history.answers > 80
    assert history.mismatches == []
