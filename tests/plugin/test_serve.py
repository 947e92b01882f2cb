"""A disk served through VDDK end to end, checked by real clients."""

import os
import subprocess
import threading

import nbd
import pytest

from bed import (REMOTE_DISK_ARGS, assert_no_traceback, install_standin,
                      random_file, remote_disk, requires_client_option,
                      run_nbdkit, server_calls)

MiB = 1024 * 1024


def test_copy_in_and_out(tmp_path, nbdkit):
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(16 * MiB))
    source = random_file(tmp_path / "source.raw", 16 * MiB, seed=1)
    server = nbdkit("file=%s" % disk)

    info = subprocess.run(["nbdinfo", "--size", server.uri],
                          capture_output=True, text=True, check=True)
    assert int(info.stdout) == 16 * MiB

    subprocess.run(["nbdcopy", str(source), server.uri], check=True)
    back = tmp_path / "back.raw"
    subprocess.run(["nbdcopy", server.uri, str(back)], check=True)
    assert back.read_bytes() == source.read_bytes()

    converted = tmp_path / "converted.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2",
                    server.uri, str(converted)], check=True)
    subprocess.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw",
                    str(converted), str(source)], check=True)

    assert server.stop() == 0
    assert disk.read_bytes() == source.read_bytes()
    # A local disk is on VDDK's file transport, which does the I/O before
    # returning: the plugin calls Read and Write rather than the async ones.
    assert server.calls("ReadAsync") == [] and server.calls("WriteAsync") == []
    assert server.calls("Read") and server.calls("Write")
    assert_no_traceback(server.stderr)


def test_readonly(tmp_path, nbdkit):
    disk = random_file(tmp_path / "disk.raw", MiB)
    server = nbdkit("file=%s" % disk, readonly=True)
    h = server.connect()
    assert h.is_read_only()
    assert h.pread(4096, 0) == disk.read_bytes()[:4096]
    with pytest.raises(nbd.Error) as failure:
        h.pwrite(b"x" * 512, 0)
    assert failure.value.errno in ("EPERM", "EROFS")
    h.shutdown()
    (connect,) = server.calls("ConnectEx")
    assert connect["readOnly"] == 1
    (opened,) = server.calls("Open")
    assert opened["flags"] == 4
    assert server.calls("WriteAsync") == [] and server.calls("Flush") == []


@pytest.mark.parametrize("op", ["read", "write"])
@pytest.mark.parametrize("offset,count", [(1, 512), (0, 100)])
def test_unaligned_requests_fail_with_einval(tmp_path, nbdkit, op, offset,
                                             count):
    disk = random_file(tmp_path / "disk.raw", MiB)
    server = nbdkit("file=%s" % disk)
    h = server.connect(strict=False)
    with pytest.raises(nbd.Error) as failure:
        if op == "read":
            h.pread(count, offset)
        else:
            h.pwrite(b"y" * count, offset)
    assert failure.value.errno == "EINVAL"
    # The server is still up and serving this connection.
    assert h.pread(512, 512) == disk.read_bytes()[512:1024]
    h.shutdown()
    server.stop()
    message = "%s is not aligned to sectors" % op
    lines = [l for l in server.stderr.splitlines() if message in l]
    assert len(lines) == 1 and "error:" in lines[0], server.stderr
    assert_no_traceback(server.stderr)
    # Only the aligned read reached VDDK.
    assert [(c["fn"], c["start"], c["count"]) for c in server.calls()
            if c["fn"] in ("Read", "Write")] == [("Read", 1, 1)]


def sparse_disk(path, size, data_ranges):
    """A file of ``size`` bytes holding data only in ``data_ranges``."""
    with open(path, "wb") as f:
        f.truncate(size)
        for start, end in data_ranges:
            f.seek(start)
            f.write(b"\xab" * (end - start))
    return path


def nbdinfo_map(uri):
    out = subprocess.run(["nbdinfo", "--map", uri], capture_output=True,
                         text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        if not line:                # (libnbd 1.6's ends with one)
            continue
        start, length, kind = line.split()[:3]
        rows.append((int(start), int(length), int(kind)))
    return rows


def test_map_of_sparse_file(tmp_path, nbdkit):
    # 1027 sectors: data in sectors [0,256) and [512,640); the last 3
    # sectors do not fill a 64 KiB chunk and cannot be queried.
    disk = sparse_disk(tmp_path / "disk.raw", 1027 * 512,
                       [(0, 256 * 512), (512 * 512, 640 * 512)])
    server = nbdkit("file=%s" % disk)
    assert nbdinfo_map(server.uri) == [
        (0, 131072, 0), (131072, 131072, 3), (262144, 65536, 0),
        (327680, 196608, 3), (524288, 1536, 0)]
    server.stop()
    queries = server.calls("QueryAllocatedBlocks")
    assert queries, "no QueryAllocatedBlocks call"
    for q in queries:
        assert q["result"] == 0
        assert q["chunk"] == 128
        assert q["start"] % 128 == 0 and q["count"] % 128 == 0
        assert q["start"] + q["count"] <= 1027


def test_map_single_link_holes_are_not_zero(tmp_path, nbdkit):
    disk = sparse_disk(tmp_path / "disk.raw", 1027 * 512,
                       [(0, 256 * 512), (512 * 512, 640 * 512)])
    server = nbdkit("file=%s" % disk, "single-link=true")
    kinds = [kind for _, _, kind in nbdinfo_map(server.uri)]
    assert kinds == [0, 1, 0, 1, 0]


READONLY_MAP = [(0, 196608, 0), (196608, 65536, 3), (262144, 1536, 0)]


def probes_and_scans(server):
    """QueryAllocatedBlocks calls: can_extents probes, the others."""
    calls = server.calls("QueryAllocatedBlocks")
    probe = [(q["start"], q["count"]) == (0, 128) for q in calls]
    return ([q for q, p in zip(calls, probe) if p],
            [q for q, p in zip(calls, probe) if not p])


def test_map_readonly_local_file_asks_every_time(tmp_path, nbdkit):
    disk = sparse_disk(tmp_path / "disk.raw", 515 * 512, [(0, 384 * 512)])
    server = nbdkit("file=%s" % disk, readonly=True)
    assert nbdinfo_map(server.uri) == READONLY_MAP
    assert nbdinfo_map(server.uri) == READONLY_MAP
    server.stop()
    probes, scans = probes_and_scans(server)
    # A local file may be written in place by another process: no map
    # outlives its request (doc/design.md, "Allocation maps").
    assert [s["count"] for s in scans] == [512, 512]
    assert "pre-caching" not in server.stderr
    # One extents probe per open (nbdinfo from libnbd 1.22 opens the plugin
    # twice per connection: NBD_OPT_INFO, then NBD_OPT_GO).
    assert len(probes) == len(server.calls("Open")) >= 2


def test_map_readonly_remote_disk_is_read_once_per_connection(tmp_path,
                                                             nbdkit):
    config, _ = remote_disk(tmp_path, MiB)
    raw = sparse_disk(tmp_path / "sparse.raw", 515 * 512, [(0, 384 * 512)])
    subprocess.run(["qemu-img", "convert", "-O", "vmdk", str(raw),
                    str(tmp_path / "datastore1/Fedora/Fedora.vmdk")],
                   check=True)
    server = nbdkit(*REMOTE_DISK_ARGS, config=config, readonly=True)
    handles = [server.connect() for _ in range(2)]
    for h in handles + handles:
        entries = []
        h.block_status(515 * 512, 0,
                       lambda _, start, found, err: entries.extend(found))
        assert list(zip(entries[0::2], entries[1::2])) == \
            [(length, kind) for _, length, kind in READONLY_MAP]
    for h in handles:
        h.shutdown()
    server.stop()
    probes, scans = probes_and_scans(server)
    # Upstream's pre-cache: one whole-disk scan on each connection's own
    # handle, at its first extents request; none shared.
    assert [s["count"] for s in scans] == [512, 512]
    assert sorted(s["handle"] for s in scans) == \
        sorted(o["handle"] for o in server.calls("Open"))
    lines = server.stderr.splitlines()
    for text in ("vddk: pre-caching extents",
                 "vddk: finished pre-caching extents in 0 second(s)"):
        assert len([line for line in lines if line.endswith(text)]) == 2


def test_flush_and_fua_reach_vddk(tmp_path, nbdkit):
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(MiB))
    server = nbdkit("file=%s" % disk)
    h = server.connect()
    h.pwrite(b"a" * 4096, 0)
    assert server.calls("Flush") == []
    h.flush()
    assert len(server.calls("Flush")) == 1
    h.pwrite(b"b" * 4096, 4096, nbd.CMD_FLAG_FUA)
    assert len(server.calls("Flush")) == 2
    h.shutdown()
    server.stop()
    names = [c["fn"] for c in server.calls()
             if c["fn"] in ("Write", "Wait", "Flush")]
    # A flush waits for outstanding requests first.
    assert names == ["Write", "Wait", "Flush", "Write", "Wait", "Flush",
                     "Wait"]


@requires_client_option("nbdinfo", "--can=flush")
def test_readonly_flush_is_advertised_to_nbdinfo(tmp_path, nbdkit):
    disk = random_file(tmp_path / "disk.raw", MiB)
    server = nbdkit("file=%s" % disk, readonly=True)
    can = subprocess.run(["nbdinfo", "--can", "flush", server.uri],
                         timeout=60)
    assert can.returncode == 0


def test_readonly_flush_is_advertised_and_leaves_vddk_alone(tmp_path,
                                                           nbdkit):
    disk = random_file(tmp_path / "disk.raw", MiB)
    server = nbdkit("file=%s" % disk, readonly=True)
    h = server.connect()
    assert h.can_flush()
    h.flush()
    assert h.pread(512, 0) == disk.read_bytes()[:512]
    h.shutdown()
    server.stop()
    assert server.calls("Flush") == []
    # nbdkit's own -r refuses writes before they reach the plugin.
    assert server.calls("Write") == []


def test_close_waits_for_outstanding_writes(tmp_path, nbdkit):
    # Over a network transport requests of a connection overlap in VDDK.
    config, disk = remote_disk(tmp_path, MiB)
    server = nbdkit(*REMOTE_DISK_ARGS,
                    config="async_delay_us 200000\n" + config)
    h = server.connect()
    payload = os.urandom(64 * 1024)
    # (An nbd.Buffer: libnbd 1.6's aio_pwrite takes nothing else.)
    buffer = nbd.Buffer.from_bytearray(bytearray(payload))
    for i in range(8):
        h.aio_pwrite(buffer, i * len(payload))
    # Disconnect once all eight writes are inside VDDK, still running.
    while len(server.calls("WriteAsync")) < 8:
        h.poll(10)
    assert server.calls("AsyncDone") == []
    h.shutdown()                # does not wait for the replies
    server.wait_for_call("Close")
    server.stop()
    assert disk.read_bytes()[:8 * len(payload)] == payload * 8
    calls = server.calls()
    names = [c["fn"] for c in calls]
    close = names.index("Close")
    done = [i for i, c in enumerate(calls) if c["fn"] == "AsyncDone"]
    assert len(done) == 8 and max(done) < close


@pytest.mark.parametrize("version", [6, 7, 8, 9, 10])
@pytest.mark.parametrize("layout", ["flat", "lib64"])
def test_library_versions_and_block_size(tmp_path, nbdkit, version, layout):
    libdir = install_standin(tmp_path / "versioned", version=version,
                             layout=layout)
    disk = random_file(tmp_path / "disk.raw", MiB)
    server = nbdkit("file=%s" % disk, libdir=libdir,
                    config="logical_sector_size 512\n"
                           "physical_sector_size 8192\n")
    h = server.connect()
    preferred = 8192 if version >= 7 else 4096
    sizes = [h.get_block_size(nbd.SIZE_MINIMUM),
             h.get_block_size(nbd.SIZE_PREFERRED),
             h.get_block_size(nbd.SIZE_MAXIMUM)]
    assert h.pread(512, 0) == disk.read_bytes()[:512]
    h.shutdown()
    if server_calls("block_size"):
        assert sizes == [512, preferred, 0xffffffff]
    else:                       # nothing to tell clients with (1.24)
        assert sizes == [0, 0, 0]


def test_lib64_preferred_over_flat(tmp_path):
    libdir = install_standin(tmp_path / "vddk", version=7, layout="lib64")
    install_standin(libdir, version=9, layout="flat")
    install_standin(libdir, version=7, layout="flat")
    result = run_nbdkit(tmp_path, libdir, ["noreexec=true"],
                        options=["--dump-plugin"])
    assert "vddk_library_version=9\n" in result.stdout
    assert "vddk_dll=%s/libvixDiskLib.so.9\n" % libdir in result.stdout


def test_missing_library(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_nbdkit(tmp_path, empty, ["file=/dev/null"], verbose=False)
    assert result.returncode != 0
    assert_no_traceback(result.stderr)
    assert ("nbdkit: error: %s/lib64/libvixDiskLib.so.9: cannot open shared "
            "object file: No such file or directory\n\n"
            "If 'lib64/libvixDiskLib.so.9' is located on a non-standard path "
            "you may need to\nset libdir=/path/to/vmware-vix-disklib-distrib."
            "\n\nSee nbdkit-vddk-plugin(1) man page section \"LIBRARY "
            "LOCATION\" for details.\n" % empty) in result.stderr


@pytest.mark.parametrize("layout", ["flat", "lib64"])
def test_vddk_5_is_refused(tmp_path, layout):
    libdir = install_standin(tmp_path / "vddk", version=5, layout=layout)
    result = run_nbdkit(tmp_path, libdir, ["file=/dev/null"], verbose=False)
    assert result.returncode == 1
    assert_no_traceback(result.stderr)
    found = libdir / ("lib64" if layout == "lib64" else "") / \
        "libvixDiskLib.so.5"
    assert result.stderr.splitlines() == [
        'nbdkit: error: %s is VDDK 5, which is too old: VDDK version must '
        'be >= 6.7. See nbdkit-vddk-plugin(1) man page section "SUPPORTED '
        'VERSIONS OF VDDK".' % found]
    # A supported version next to it is used.
    install_standin(libdir, version=6, layout=layout)
    dump = run_nbdkit(tmp_path, libdir, ["noreexec=true"],
                      options=["--dump-plugin"])
    assert "vddk_library_version=6\n" in dump.stdout, dump.stderr


def test_missing_required_symbol(tmp_path):
    libdir = install_standin(tmp_path / "vddk", version=7,
                             variant="-nowait")
    result = run_nbdkit(tmp_path, libdir, ["file=/dev/null"], verbose=False)
    assert result.returncode != 0
    assert_no_traceback(result.stderr)
    expected = (
        'nbdkit: error: required VDDK symbol "VixDiskLib_Wait" is missing. '
        'VDDK version must be >= 6.7. See nbdkit-vddk-plugin(1) man page '
        'section "SUPPORTED VERSIONS OF VDDK". Original dlopen error: '
        '%s/libvixDiskLib.so.7: undefined symbol: VixDiskLib_Wait\n'
        % libdir)
    assert expected in result.stderr
    assert len([l for l in result.stderr.splitlines() if "error" in l]) == 1


def test_eight_clients_at_once(tmp_path, nbdkit):
    region = 2 * MiB
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(8 * region))
    server = nbdkit("file=%s" % disk, config="async_delay_us 500\n")
    payloads = [os.urandom(region) for _ in range(8)]
    failures = []

    def client(i):
        try:
            h = server.connect()
            chunk = 64 * 1024
            for off in range(0, region, chunk):
                h.pwrite(payloads[i][off:off + chunk], i * region + off)
            for off in range(0, region, 4 * chunk):
                got = h.pread(4 * chunk, i * region + off)
                if got != payloads[i][off:off + 4 * chunk]:
                    failures.append("client %d mismatch at %d" % (i, off))
            h.flush()
            h.shutdown()
        except Exception as e:          # reported below
            failures.append("client %d: %r" % (i, e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert server.stop() == 0
    assert disk.read_bytes() == b"".join(payloads)
    assert "threading violation" not in server.stderr
    assert len(server.calls("Open")) == 8


@pytest.mark.parametrize("verbose", [False, True])
@pytest.mark.parametrize("threads", [[], ["-t", "1"]])
def test_connections_come_and_go(tmp_path, nbdkit, threads, verbose):
    """Each connection's worker threads keep their Python thread states
    while it lasts (vddkpy.nbdkit.threadstate); closing it frees them: many short
    connections, each with requests on many threads, leave nbdkit's memory
    where it was and every answer right.  With -t 1 the connection's own
    thread serves the requests and closes the disk."""
    from bed.tally import rss_kib
    disk = random_file(tmp_path / "disk.raw", MiB)
    data = disk.read_bytes()
    server = nbdkit("file=%s" % disk, verbose=verbose, options=threads)

    def one_connection():
        h = server.connect()
        buffers = [nbd.Buffer(4096) for _ in range(64)]
        for i, b in enumerate(buffers):
            h.aio_pread(b, i * 4096)
        while h.aio_in_flight():
            h.poll(-1)
        h.shutdown()
        assert b"".join(b.to_bytearray() for b in buffers) == data[:64 * 4096]

    for _ in range(20):
        one_connection()
    settled = rss_kib(server.proc.pid)
    for _ in range(200):
        one_connection()
    h = server.connect()
    assert h.pread(MiB, 0) == data
    h.shutdown()
    grown = rss_kib(server.proc.pid) - settled
    # Kept states never freed would add ~16 KiB per worker thread: >20 MiB.
    assert grown < 4096, "RSS grew by %d KiB" % grown


def test_many_short_servers(tmp_path, libdir):
    """A server per copy, as virt-v2v runs one per disk: each closes its
    connection and exits cleanly (Python 3.12+ aborted at close when a
    thread freed another thread's state; --run may hide such an abort,
    which run_nbdkit looks for)."""
    disk = random_file(tmp_path / "disk.raw", 4 * MiB)
    for _ in range(200):
        result = run_nbdkit(tmp_path, libdir, ["file=%s" % disk],
                            verbose=False, run='nbdcopy "$uri" null:')
        assert result.returncode == 0, result.stderr
