"""VDDK failures reach the NBD client as the closest errno with one
error line each, fail only their own request, and a server that goes away
for a while is survived with nbdkit's retry filter."""

import errno
import random
import re
import subprocess
import threading

import nbd
import pytest

from bed import tally
from bed import (REMOTE_DISK, REMOTE_DISK_ARGS, assert_no_traceback,
                      client_takes, random_file,
                      remote_disk as make_remote_disk,
                      requires_client_option, server_config, some_disk)

KiB = 1024
MiB = 1024 * KiB

# Whichever call the plugin uses for data (async or not), failing both
# covers it; the error line names the call or, for a failure delivered to
# the completion callback, the request (upstream's wording).
READ_PREFIX = (r"(?:VixDiskLib_ReadAsync|VixDiskLib_Read"
               r"|command \d+: asynchronous read failed)")
WRITE_PREFIX = (r"(?:VixDiskLib_WriteAsync|VixDiskLib_Write"
                r"|command \d+: asynchronous write failed)")


def failure_prefix(kind, where, delivery):
    """What the error line of a failed Read/Write says failed."""
    if delivery == "callback":
        return r"command \d+: asynchronous %s failed" % kind.lower()
    return "VixDiskLib_%s%s" % (kind, "Async" if where == "remote" else "")

TEXT = {
    1: "Unknown error",
    2: "Memory allocation failed: out of memory",
    3: "One of the parameters was invalid",
    8: "An error occurred while writing a file; the disk is full. Data has "
       "not been saved. Free some disk space and try again",
    11: "The file is write-protected",
    13: "You do not have access rights to this file",
    14009: "The server refused connection",
    14011: "The connection with the host was lost",
    14014: "The host is shutting down",
    16000: "One of the parameters supplied is invalid",
}

# (VixError, errno the NBD client sees).  nbdkit sends EROFS as EPERM; only
# the low 16 bits of a VixError are the code.
READ_FAULTS = [(1, errno.EIO), (2, errno.ENOMEM), (3, errno.EINVAL),
               (13, errno.EPERM), (14009, errno.EIO), (14011, errno.EIO),
               (14014, errno.ESHUTDOWN), (16000, errno.EINVAL),
               ((7 << 32) | 1, errno.EIO)]
WRITE_FAULTS = [(1, errno.EIO), (8, errno.ENOSPC), (11, errno.EPERM),
                (13, errno.EPERM), (14014, errno.ESHUTDOWN),
                ((1 << 40) | 8, errno.ENOSPC)]


def plugin_errors(stderr):
    """The message of every nbdkit error line (nbdkit's Python plugin puts
    "SCRIPT: CALLBACK: error: " before a callback's exception), without
    the hint lines that follow some (tests/preflight/test_check.py checks those)."""
    messages = [line.rsplit(": error: ", 1)[1]
                for line in stderr.splitlines() if ": error: " in line]
    return [m for m in messages if not m.startswith("hint: ")]


def data_faults(kind, codes, period, delivery):
    """Config failing every ``period``-th data call with the next code."""
    lines = []
    for i, code in enumerate(codes):
        nth = i * period + 1
        suffix = " async" if delivery == "callback" else ""
        lines.append("fail %sAsync %d nth=%d%s" % (kind, code, nth, suffix))
        lines.append("fail %s %d nth=%d" % (kind, code, nth))
    return "\n".join(lines) + "\n"


def survived(count):
    tally.add("faults injected", count)
    tally.add("faults survived", count)


def expect_failure(errnum, request, *args):
    with pytest.raises(nbd.Error) as failure:
        request(*args)
    assert failure.value.errnum == errnum, failure.value


# A local disk is on the file transport (synchronous Read/Write); a disk on
# the ESXi host uses ReadAsync/WriteAsync, which can fail at submission or
# in the completion callback.
DELIVERIES = [("local", "submit"), ("remote", "submit"),
              ("remote", "callback")]


def serve_faulty_disk(tmp_path, nbdkit, where, config):
    """(server, file holding the disk's bytes) of a 1 MiB disk."""
    args, standin, disk = some_disk(tmp_path, where, MiB)
    return nbdkit(*args, config=config + standin), disk


@pytest.mark.parametrize("where,delivery", DELIVERIES)
def test_read_failures_map_to_errno(tmp_path, nbdkit, where, delivery):
    codes = [code for code, _ in READ_FAULTS]
    server, disk = serve_faulty_disk(
        tmp_path, nbdkit, where, data_faults("Read", codes, 3, delivery))
    data = disk.read_bytes()
    failing, other = server.connect(), server.connect()
    for i, (code, errnum) in enumerate(READ_FAULTS):
        offset = i * 8 * KiB
        expect_failure(errnum, failing.pread, 8 * KiB, offset)
        # The request failed alone: both connections still serve.
        assert failing.pread(8 * KiB, offset) == data[offset:offset + 8 * KiB]
        assert other.pread(4 * KiB, offset) == data[offset:offset + 4 * KiB]
    failing.shutdown()
    other.shutdown()
    assert server.stop() == 0
    lines = plugin_errors(server.stderr)
    assert len(lines) == len(READ_FAULTS), server.stderr
    for line, (code, _) in zip(lines, READ_FAULTS):
        expected = failure_prefix("Read", where, delivery)
        assert re.fullmatch(expected + ": " + re.escape(TEXT[code & 0xFFFF]),
                            line), line
    assert_no_traceback(server.stderr)
    survived(len(READ_FAULTS))


@pytest.mark.parametrize("where,delivery", DELIVERIES)
def test_write_failures_map_to_errno(tmp_path, nbdkit, where, delivery):
    codes = [code for code, _ in WRITE_FAULTS]
    server, disk = serve_faulty_disk(
        tmp_path, nbdkit, where, data_faults("Write", codes, 2, delivery))
    original = disk.read_bytes()
    failing, other = server.connect(), server.connect()
    for i, (code, errnum) in enumerate(WRITE_FAULTS):
        offset, block = i * 8 * KiB, bytes([i + 1]) * 8 * KiB
        expect_failure(errnum, failing.pwrite, block, offset)
        # Nothing was written, and the next write works.
        assert other.pread(8 * KiB, offset) == original[offset:offset + 8 * KiB]
        failing.pwrite(block, offset)
        assert other.pread(8 * KiB, offset) == block
    failing.shutdown()
    other.shutdown()
    assert server.stop() == 0
    lines = plugin_errors(server.stderr)
    assert len(lines) == len(WRITE_FAULTS), server.stderr
    for line, (code, _) in zip(lines, WRITE_FAULTS):
        expected = failure_prefix("Write", where, delivery)
        assert re.fullmatch(expected + ": " + re.escape(TEXT[code & 0xFFFF]),
                            line), line
    assert_no_traceback(server.stderr)
    survived(len(WRITE_FAULTS))


def test_flush_failures(tmp_path, nbdkit):
    disk = random_file(tmp_path / "disk.raw", MiB)
    server = nbdkit("file=%s" % disk,
                    config="fail Flush 8 nth=1\nfail Flush 14014 nth=2\n")
    h = server.connect()
    h.pwrite(b"a" * 4096, 0)
    expect_failure(errno.ENOSPC, h.flush)
    # A FUA write whose flush fails is not acknowledged.
    expect_failure(errno.ESHUTDOWN, h.pwrite, b"b" * 4096, 4096,
                   nbd.CMD_FLAG_FUA)
    h.pwrite(b"c" * 4096, 8192, nbd.CMD_FLAG_FUA)
    h.flush()
    assert h.pread(12288, 0) == b"a" * 4096 + b"b" * 4096 + b"c" * 4096
    h.shutdown()
    assert server.stop() == 0
    assert plugin_errors(server.stderr) == [
        "VixDiskLib_Flush: " + TEXT[8], "VixDiskLib_Flush: " + TEXT[14014]]
    survived(2)


# -- remote servers: NFC memory and outages --------------------------------

@pytest.fixture
def remote_disk(tmp_path):
    """The file holding a 4 MiB disk's bytes on the stand-in's ESXi host."""
    return make_remote_disk(tmp_path, 4 * MiB, seed=9)[1]


def remote(nbdkit, remote_disk, server_lines="", filters=(), args=()):
    config = server_config(remote_disk.parent.parent) + server_lines
    return nbdkit(*REMOTE_DISK_ARGS, *args, options=list(filters), config=config)


def test_nfc_out_of_memory(tmp_path, nbdkit, remote_disk):
    data = remote_disk.read_bytes()
    server = remote(nbdkit, remote_disk, "  nfc_max_request 65536\n")
    h = server.connect()
    expect_failure(errno.ENOMEM, h.pread, 128 * KiB, 0)
    expect_failure(errno.ENOMEM, h.pwrite, b"x" * 128 * KiB, 0)
    assert h.pread(64 * KiB, 0) == data[:64 * KiB]
    h.shutdown()
    assert server.stop() == 0
    nfc = ("[NFC ERROR] NfcFssrvrProcessErrorMsg: received NFC error 5 from "
           "server: Failed to allocate the requested 131096 bytes")
    lines = plugin_errors(server.stderr)
    assert len(lines) == 4, server.stderr
    assert lines[0] == lines[2] == nfc
    assert re.fullmatch(READ_PREFIX + ": " + TEXT[2], lines[1])
    assert re.fullmatch(WRITE_PREFIX + ": " + TEXT[2], lines[3])
    assert remote_disk.read_bytes() == data
    survived(2)

    # The manual's remedy: limit the request size with the blocksize filter.
    server = remote(nbdkit, remote_disk, "  nfc_max_request 65536\n",
                    filters=["--filter=blocksize"], args=["maxdata=64k"])
    copy = tmp_path / "copy.raw"
    # (libnbd 1.6's nbdcopy has no --request-size: it asks for the whole
    # 4 MiB at once, also more than the host's limit.)
    request_size = [option for option in ["--request-size=262144"]
                    if client_takes("nbdcopy", option)]
    subprocess.run(["nbdcopy"] + request_size + [server.uri, str(copy)],
                   check=True)
    assert copy.read_bytes() == data


def test_outage_at_connect_and_open(tmp_path, nbdkit, remote_disk):
    server = remote(nbdkit, remote_disk, "  down_for calls=2 after=1\n")
    for _ in range(2):
        with pytest.raises(nbd.Error):
            server.connect()
    h = server.connect()
    assert h.pread(4096, 0) == remote_disk.read_bytes()[:4096]
    h.shutdown()
    assert server.stop() == 0
    assert plugin_errors(server.stderr) == [
        "VixDiskLib_Open: %s: %s" % (REMOTE_DISK, TEXT[14014]),
        "VixDiskLib_ConnectEx: " + TEXT[14014]]
    assert_no_traceback(server.stderr)
    survived(2)


def test_outage_breaks_open_handles_until_reopened(tmp_path, nbdkit,
                                                   remote_disk):
    data = remote_disk.read_bytes()
    server = remote(nbdkit, remote_disk,
                    "  down_for calls=3 after=12 code=14011\n")
    old = server.connect()
    for offset in range(0, 20 * 4096, 4096):
        try:
            assert old.pread(4096, offset) == data[offset:offset + 4096]
        except nbd.Error as e:
            assert e.errnum == errno.EIO
            break
    else:
        pytest.fail("the outage never began")
    expect_failure(errno.EIO, old.pread, 4096, 0)         # second failure
    with pytest.raises(nbd.Error):                         # third: ConnectEx
        server.connect()
    new = server.connect()
    assert new.pread(4096, 0) == data[:4096]
    # The server is back, but the old handle's NFC connection is gone.
    expect_failure(errno.EIO, old.pread, 4096, 0)
    old.shutdown()
    new.shutdown()
    assert server.stop() == 0
    closes = server.calls("Close")
    assert len(closes) == 2
    assert all(c["result"] == 0 and c["outstanding"] == 0 for c in closes)
    assert all(c["result"] == 0 for c in server.calls("Disconnect"))
    assert server.calls("Exit")
    assert_no_traceback(server.stderr)
    survived(4)


@pytest.mark.parametrize("direction,outage", [
    ("read", "calls=3"), ("write", "seconds=2")])
# (Its default 256 KiB requests: libnbd 1.6's nbdcopy, without the option,
# copies the 4 MiB in one request, over before the outage begins.)
@requires_client_option("nbdcopy", "--request-size=262144")
def test_retry_filter_survives_outage_mid_copy(tmp_path, nbdkit, remote_disk,
                                               direction, outage):
    server = remote(nbdkit, remote_disk,
                    "  down_for %s after=10 code=14009\n" % outage,
                    filters=["--filter=retry"],
                    args=["retries=10", "retry-delay=1",
                          "retry-exponential=no"])
    source = random_file(tmp_path / "source.raw", 4 * MiB, seed=10)
    if direction == "read":
        source = remote_disk
        copy = tmp_path / "copy.raw"
        subprocess.run(["nbdcopy", server.uri, str(copy)], check=True,
                       timeout=120)
    else:
        copy = remote_disk
        subprocess.run(["nbdcopy", str(source), server.uri], check=True,
                       timeout=120)
    assert server.stop() == 0
    assert copy.read_bytes() == source.read_bytes()
    calls = server.calls()
    failed = [c for c in calls if c.get("result") == 14009]
    assert failed, "the outage did not happen during the copy"
    # The dead connection was closed and a new one opened.
    assert len(server.calls("Open")) >= 2
    assert all(c["result"] == 0 and c["outstanding"] == 0
               for c in server.calls("Close"))
    assert_no_traceback(server.stderr)
    survived(len(failed))


def test_random_faults_under_parallel_load(tmp_path, nbdkit):
    disk = random_file(tmp_path / "disk.raw", 4 * MiB, seed=11)
    model = bytearray(disk.read_bytes())
    config = ("fail ReadAsync 14011 prob=0.1 seed=5 async\n"
              "fail Read 14011 prob=0.1 seed=5\n"
              "fail WriteAsync 1 every=5\n"
              "fail Write 1 every=5\n"
              "async_threads 4\nlatency ReadAsync 200\n")
    server = nbdkit("file=%s" % disk, config=config)
    failures = []

    def client(index):
        h = server.connect()
        rng = random.Random(index)
        base = index * MiB
        for _ in range(60):
            offset = base + rng.randrange(0, MiB - 16 * KiB, 512)
            length = rng.choice([512, 4 * KiB, 16 * KiB])
            if rng.random() < 0.5:
                block = rng.randbytes(length)
                while True:         # a failed write is retried by the client
                    try:
                        h.pwrite(block, offset)
                        break
                    except nbd.Error as e:
                        failures.append(e.errnum)
                model[offset:offset + length] = block
            else:
                try:
                    got = h.pread(length, offset)
                except nbd.Error as e:
                    failures.append(e.errnum)
                    continue
                assert got == bytes(model[offset:offset + length])
        h.shutdown()

    errors = []

    def run(index):
        try:
            client(index)
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert server.stop() == 0
    assert disk.read_bytes() == bytes(model)
    assert failures and set(failures) == {errno.EIO}
    assert len(plugin_errors(server.stderr)) == len(failures)
    assert_no_traceback(server.stderr)
    survived(len(failures))
