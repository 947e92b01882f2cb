"""Acknowledged writes are on disk even if nbdkit is killed, and
SIGTERM in the middle of a copy ends cleanly and promptly."""

import signal
import subprocess
import time

import nbd
import pytest

from bed import tally
from bed import (TIMEOUT, assert_no_traceback, hangup_safe_options,
                 random_file, some_disk)

MiB = 1024 * 1024
# Slow writes: a write acknowledged before VDDK finished it would be lost.
SLOW_WRITES = "latency WriteAsync 200000\nlatency Write 200000\n"


def wait_for_any_call(server, names):
    deadline = time.monotonic() + TIMEOUT
    while not any(c["fn"] in names for c in server.calls()):
        assert time.monotonic() < deadline and server.proc.poll() is None, \
            server.stderr
        time.sleep(0.01)


@pytest.mark.parametrize("where", ["local", "remote"])
def test_acknowledged_writes_survive_sigkill(tmp_path, nbdkit, where):
    args, standin, disk = some_disk(tmp_path, where, MiB)
    server = nbdkit(*args, config=SLOW_WRITES + standin)
    h = server.connect()
    h.pwrite(b"F" * 4096, 0, nbd.CMD_FLAG_FUA)
    for i in range(1, 9):
        h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray([i]) * 65536),
                     i * 65536)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    h.flush()
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    written = disk.read_bytes()
    assert written[:4096] == b"F" * 4096
    for i in range(1, 9):
        assert written[i * 65536:(i + 1) * 65536] == bytes([i]) * 65536
    tally.add("faults injected")
    tally.add("faults survived")


def completed_writes(calls):
    """(start, count) of every write VDDK finished successfully."""
    done = [c for c in calls if c["fn"] == "AsyncDone"
            and c["op"] == "WriteAsync" and c["result"] == 0]
    done += [c for c in calls if c["fn"] == "Write" and c["result"] == 0]
    return [(c["start"], c["count"]) for c in done]


@pytest.mark.parametrize("where", ["local", "remote"])
def test_sigterm_in_the_middle_of_a_copy(tmp_path, nbdkit, where):
    args, standin, disk = some_disk(tmp_path, where, 32 * MiB)
    source = random_file(tmp_path / "source.raw", 32 * MiB, seed=12)
    # nbdcopy hangs up at the first ESHUTDOWN reply, with others queued.
    server = nbdkit(*args, config=SLOW_WRITES + standin,
                    options=["-D", "vddk.stats=1"] + hangup_safe_options())
    copy = subprocess.Popen(["nbdcopy", str(source), server.uri],
                            stderr=subprocess.DEVNULL)
    try:
        wait_for_any_call(server, ("WriteAsync", "Write"))
        server.proc.send_signal(signal.SIGTERM)
        # Outstanding requests take 0.2 s each; a few seconds is plenty.
        assert server.proc.wait(10) == 0
    finally:
        copy.kill()
        copy.wait()
    calls = server.calls()
    names = [c["fn"] for c in calls]
    assert names[-1] == "Exit"
    accepted = [c for c in calls if c["fn"] == "WriteAsync"
                and c["result"] == 25000]
    finished = [c for c in calls if c["fn"] == "AsyncDone"]
    assert len(finished) == len(accepted)
    assert accepted if where == "remote" else not accepted
    # The connection nbdkit left open was closed before Exit.
    assert names.count("Close") == names.count("Open") == 1
    assert names.count("Disconnect") == 1
    (close,) = server.calls("Close")
    assert close["outstanding"] == 0
    # Everything VDDK wrote is in the file.
    written, expected = disk.read_bytes(), source.read_bytes()
    pieces = completed_writes(calls)
    assert pieces
    for start, count in pieces:
        assert written[start * 512:(start + count) * 512] == \
            expected[start * 512:(start + count) * 512]
    assert "VDDK function stats (-D vddk.stats=1):" in server.stderr
    assert_no_traceback(server.stderr)
