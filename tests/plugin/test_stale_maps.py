"""Issues 14.1 and 17: a read-only connection never gets an allocation map
that does not describe what it reads.  No map is shared between
connections; on a local file every extents request asks the connection's
own handle (tests/plugin/test_map_safety.py covers files renamed over the path
and growth)."""

import subprocess

from bed import Nbdkit

MiB = 1024 * 1024
SIZE = 64 * MiB
WHERE = 8 * MiB
PAYLOAD = b"IMPORTANT"
CHUNK = 128             # sectors: a QueryAllocatedBlocks probe's count


def nbdinfo_map(uri):
    out = subprocess.run(["nbdinfo", "--map", uri], capture_output=True,
                         text=True, check=True, timeout=60).stdout
    return [tuple(int(n) for n in line.split()[:3])
            for line in out.splitlines() if line]   # (1.6 ends with one)


def data_at(rows, offset):
    return any(start <= offset < start + length and kind & 1 == 0
               for start, length, kind in rows)


def copied_bytes(tmp_path, uri):
    out = tmp_path / "copy.raw"
    out.unlink(missing_ok=True)
    subprocess.run(["nbdcopy", uri, str(out)], check=True, timeout=60)
    with open(out, "rb") as f:
        f.seek(WHERE)
        return f.read(len(PAYLOAD))


def scans(server):
    """QueryAllocatedBlocks calls other than the can_extents probes."""
    return [q for q in server.calls("QueryAllocatedBlocks")
            if (q["start"], q["count"]) != (0, CHUNK)]


def check_new_data_is_seen(tmp_path, server, write):
    assert nbdinfo_map(server.uri) == [(0, SIZE, 3)]
    write()
    rows = nbdinfo_map(server.uri)
    assert data_at(rows, WHERE), rows
    assert copied_bytes(tmp_path, server.uri) == PAYLOAD


def test_raw_file_written_while_served(tmp_path, nbdkit):
    disk = tmp_path / "live.raw"
    subprocess.run(["truncate", "-s", str(SIZE), str(disk)], check=True)
    server = nbdkit("file=%s" % disk, readonly=True, verbose=False)

    def write():
        subprocess.run(["dd", "of=%s" % disk, "bs=1M", "seek=8",
                        "conv=notrunc", "status=none"], input=PAYLOAD,
                       check=True)

    check_new_data_is_seen(tmp_path, server, write)


def test_sparse_vmdk_written_by_another_nbdkit(tmp_path, libdir, nbdkit):
    disk = tmp_path / "live.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(disk),
                    str(SIZE)], check=True)
    server = nbdkit("file=%s" % disk, readonly=True, verbose=False)

    def write():
        writer_dir = tmp_path / "writer"
        writer_dir.mkdir()
        with Nbdkit(writer_dir, libdir, ["file=%s" % disk],
                    verbose=False) as writer:
            h = writer.connect()
            h.pwrite(PAYLOAD.ljust(512, b"\0"), WHERE)
            h.flush()
            h.shutdown()

    check_new_data_is_seen(tmp_path, server, write)
    subprocess.run(["qemu-img", "check", "-q", str(disk)], check=True)


def test_burst_of_connections_each_asks_its_own_handle(tmp_path, nbdkit):
    disk = tmp_path / "disk.raw"
    subprocess.run(["truncate", "-s", str(SIZE), str(disk)], check=True)
    server = nbdkit("file=%s" % disk, readonly=True, verbose=False)
    seen = []

    def hole_at(h):
        h.block_status(MiB, WHERE, lambda *args: seen.append(args[2]))
        return seen.pop()[1] & 1

    burst = [server.connect() for _ in range(4)]
    assert [hole_at(h) for h in burst] == [1, 1, 1, 1]
    # One query of the requested range each, on its own handle.
    assert len(scans(server)) == 4
    assert {h["handle"] for h in scans(server)} == \
        {o["handle"] for o in server.calls("Open")}
    with open(disk, "r+b") as f:
        f.seek(WHERE)
        f.write(PAYLOAD)
    # Every connection, old or new, asks again and sees the data.
    later = server.connect()
    assert hole_at(later) == 0
    assert [hole_at(h) for h in burst] == [0, 0, 0, 0]
    for h in burst + [later]:
        h.shutdown()
    assert len(scans(server)) == 9
