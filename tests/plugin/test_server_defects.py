"""Does the nbdkit under test survive a client that resets its connection
while reads are queued?  nbdkit 1.32.4 to 1.33.9 (Debian 12's 1.32.5 among
them) abort there (`raw_send_socket: Assertion 'sock >= 0' failed`, fixed
upstream in 1.33.10), whatever the plugin: the test is skipped on such a
server, saying so, and must pass on any other.

The abort comes from a worker thread sending a queued reply, some time
after the reset.  So after each reset the test waits until the server has
either exited or closed the connection (the plugin's close, VixDiskLib_Close
in the stand-in's log, comes only once every worker thread of the
connection has ended, so no reply of it can be sent any more); only then
does another client connect.  Otherwise, on a busy machine, that client
could meet the abort (its connection reset) before the server's exit
shows."""

import socket
import struct
import subprocess
import time

import pytest

from bed import TIMEOUT, Nbdkit, random_file
from bed.handshake import NBD_OPT_GO, NBD_REP_ACK, NBD_REP_INFO, \
    OPTION_REPLY_MAGIC, _recv

MiB = 1024 * 1024
REQUEST_MAGIC = 0x25609513
NBD_CMD_READ = 0
QUEUED_READS = 64
ASSERTION = "raw_send_socket: Assertion"


def open_export(sock):
    """Fixed-newstyle handshake to the default export (NBD_OPT_GO)."""
    magic, opt_magic, _flags = struct.unpack(">8s8sH", _recv(sock, 18))
    assert (magic, opt_magic) == (b"NBDMAGIC", b"IHAVEOPT")
    sock.sendall(struct.pack(">I", 3))
    data = struct.pack(">I", 0) + struct.pack(">H", 0)
    sock.sendall(b"IHAVEOPT" + struct.pack(">II", NBD_OPT_GO, len(data))
                 + data)
    while True:
        magic, _option, reply, length = struct.unpack(">QIII",
                                                      _recv(sock, 20))
        assert magic == OPTION_REPLY_MAGIC
        _recv(sock, length)
        if reply != NBD_REP_INFO:
            assert reply == NBD_REP_ACK, hex(reply)
            return


def queue_reads_then_reset(server, count, ready):
    """Queue reads of ``count`` bytes (more than the socket holds, so the
    first reply blocks the others), wait until ``ready`` of them have been
    read from the disk (their replies wait to be sent), then reset."""
    done = len(server.calls("Read"))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(60)
        sock.connect(server.socket)
        open_export(sock)
        for i in range(QUEUED_READS):
            sock.sendall(struct.pack(">IHHQQI", REQUEST_MAGIC, 0,
                                     NBD_CMD_READ, i, 0, count))
        deadline = time.monotonic() + 60
        while len(server.calls("Read")) < done + ready:
            assert time.monotonic() < deadline, server.stderr
            time.sleep(0.01)
        # Close without reading a reply: a reset, not an orderly goodbye.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                        struct.pack("ii", 1, 0))


@pytest.mark.parametrize("options", [[], ["-t", "1"]], ids=["default",
                                                            "threads-1"])
def test_client_reset_with_queued_reads(tmp_path, libdir, options):
    disk = random_file(tmp_path / "disk.raw", 4 * MiB)
    # Not the nbdkit fixture, which fails any test whose server crashed:
    # here a crash is the finding.
    with Nbdkit(tmp_path, libdir, ["file=%s" % disk], verbose=False,
                options=options) as server:
        check_survival(server, options)


def closed_or_exited(server):
    """Wait until every connection the server opened is closed (as many
    VixDiskLib_Close calls as Open calls), or the server has exited;
    whether it is still running."""
    deadline = time.monotonic() + TIMEOUT
    while server.proc.poll() is None:
        if len(server.calls("Close")) >= len(server.calls("Open")):
            return True
        assert time.monotonic() < deadline, server.stderr
        time.sleep(0.01)
    return False


def check_survival(server, options):
    # Replies ready to send when the client goes: one per thread but one.
    ready = 1 if options else 4
    for _ in range(3):
        queue_reads_then_reset(server, 4 * MiB, ready)
        if not closed_or_exited(server):
            break
        # Still serving others?
        size = subprocess.run(["nbdinfo", "--size", server.uri],
                              capture_output=True, text=True, timeout=60)
        assert size.stdout.strip() == str(4 * MiB), size.stderr
    # With one thread per connection (-t 1) no server has the defect.
    if (server.proc.poll() is not None and ASSERTION in server.stderr
            and not options):
        version = subprocess.run([server.command[0], "--version"],
                                 capture_output=True, text=True).stdout
        pytest.skip("this nbdkit (%s) aborts when a client with queued "
                    "reads resets its connection (fixed in 1.33.10; see "
                    "the manual's TROUBLESHOOTING)"
                    % version.split("\n")[0])
    assert server.proc.poll() is None, server.stderr
    assert server.stop() == 0
    server.assert_survived()
