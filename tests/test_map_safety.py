"""Issue 17, items 1 and 2: a read-only connection's allocation map
describes the bytes that connection reads, whatever happened to the served
path between the opens of several connections (a file renamed over it,
growth in place), and whichever connection asked first.

Each connection is a real nbdcopy whose destination is a FIFO: nbdcopy
connects to its source (the plugin opens that connection's disk), then
blocks opening the FIFO for writing until the test opens it for reading.
The test thus decides when each connection opens and when it asks for
extents, and nbdcopy trusts the map it gets, as it does when copying to a
destination known to be zero (a zero extent is written as zeros without
reading it).
"""

import os
import subprocess
import threading
import time

import pytest

from conftest import TIMEOUT

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
        reader = threading.Thread(target=self._read_all, args=(copied,))
        reader.start()
        try:
            _, err = self.proc.communicate(timeout=TIMEOUT)
        finally:
            reader.join(TIMEOUT)
        return self.proc.returncode, b"".join(copied), err.decode()

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
