"""The changed-block-tracking test bed itself (tests/bed/vcenter.py,
tests/bed/vcsim/): vcsim answers pyvmomi with the server's thumbprint
verified, the stand-in serves the VM's disk to nbdkit, and what is written
through it comes back from QueryChangedDiskAreas."""

import re
import time

import nbd
import pytest
from pyVmomi import vim, vmodl


def test_login_verifies_the_thumbprint_and_finds_vm_and_disk(vcsim):
    bed = vcsim(size=8 << 20)
    si = bed.connect()
    vm = vim.VirtualMachine(bed.vm, si._stub)
    assert vm.name == "vm"
    assert vm.runtime.powerState == "poweredOn"
    assert vm.config.changeTrackingEnabled is False
    disk = bed.disk_device(vm.config)
    assert disk.key == bed.disk_key == 2000
    assert disk.backing.fileName == "[datastore1] vm/vm.vmdk"
    assert disk.capacityInBytes == 8 << 20
    assert disk.backing.changeId is None
    assert bed.calls("Login") == 1


def test_thumbprint_is_the_served_certificates_and_new_each_run(vcsim):
    import hashlib
    import ssl
    first, second = vcsim(), vcsim()
    for bed in (first, second):
        der = ssl.PEM_cert_to_DER_cert(
            ssl.get_server_certificate((bed.host, bed.port)))
        digest = hashlib.sha1(der).hexdigest().upper()
        assert bed.thumbprint == ":".join(
            digest[i:i + 2] for i in range(0, 40, 2))
    assert first.thumbprint != second.thumbprint
    assert first.port != second.port


def test_wrong_thumbprint_refused_by_pyvmomi(vcsim):
    bed = vcsim()
    wrong = "00:" * 19 + "00"
    with pytest.raises(Exception) as e:
        bed.connect(thumbprint=wrong)
    message = str(e.value).lower()
    # pyvmomi 6.7 (Debian 12): "Server has wrong SHA1 thumbprint"; 8.x
    # (Debian 13): a HostConnectFault saying the thumbprints mismatch.
    assert "thumbprint" in message
    assert "wrong" in message or "mismatch" in message
    assert bed.thumbprint.replace(":", "").lower() in message
    assert bed.calls("Login") == 0


def test_wrong_password_refused(vcsim):
    bed = vcsim()
    with pytest.raises(vim.fault.InvalidLogin):
        bed.connect(password="wrong")


def test_nbdkit_reads_the_vms_disk_through_the_standin(vcsim, nbdkit):
    bed = vcsim(size=4 << 20, seed=7)
    server = nbdkit(*bed.plugin_args(), config=bed.standin_config(),
                    readonly=True)
    h = server.connect()
    assert h.get_size() == 4 << 20
    assert h.pread(1 << 20, 1 << 20) == \
        bed.data_path.read_bytes()[1 << 20:2 << 20]
    opened = server.calls("Open")
    assert [c["path"] for c in opened] == ["[datastore1] vm/vm.vmdk"]
    assert server.calls("ConnectEx")[0]["thumbPrint"] == bed.thumbprint


def test_standin_refuses_another_thumbprint(vcsim, nbdkit):
    bed = vcsim()
    args = [a for a in bed.plugin_args() if not a.startswith("thumbprint=")]
    wrong = "AA:" * 19 + "AA"
    server = nbdkit(*args, "thumbprint=" + wrong,
                    config=bed.standin_config(), readonly=True)
    with pytest.raises(nbd.Error):
        server.connect()
    assert "actual thumbprint=%s expected=%s" % (bed.thumbprint, wrong) \
        in server.stderr


# ---- change tracking ----

GRAIN = 64 << 10


def grain_areas(writes, capacity):
    """The 64 KiB-aligned areas covering ``writes`` [(offset, length)],
    merged, clipped to the disk: what vSphere reports for them."""
    grains = set()
    for offset, length in writes:
        grains.update(range(offset // GRAIN, (offset + length - 1) // GRAIN
                            + 1))
    areas = []
    for g in sorted(grains):
        start, end = g * GRAIN, min((g + 1) * GRAIN, capacity)
        if areas and areas[-1][0] + areas[-1][1] == start:
            areas[-1] = (areas[-1][0], end - areas[-1][0])
        else:
            areas.append((start, end - start))
    return areas


def all_pages(bed, change_id, snapshot):
    """Every QueryChangedDiskAreas page from 0 to the disk's end, each as
    (startOffset, length, [(start, length)])."""
    pages, start = [], 0
    while start < bed.size:
        info = bed.query_changed_areas(change_id, start, snapshot)
        pages.append((info.startOffset, info.length,
                      [(a.start, a.length) for a in info.changedArea]))
        assert info.startOffset == start and info.length > 0
        start += info.length
    assert start == bed.size
    return pages


def areas_of(pages):
    return [a for _, _, areas in pages for a in areas]


def write_through_nbdkit(bed, nbdkit, writes, data=None):
    """Write ``writes`` [(offset, length)] through a read-write nbdkit
    (plugin + stand-in, the VM's disk over the emulated network), then
    stop it."""
    server = nbdkit(*bed.plugin_args(), config=bed.standin_config())
    h = server.connect()
    for i, (offset, length) in enumerate(writes):
        h.pwrite(data or bytes([i % 251 + 1]) * length, offset)
    h.flush()
    h.shutdown()
    server.stop()
    return server


def snapshot_areas(bed, change_id, snapshot):
    return areas_of(all_pages(bed, change_id, snapshot))


def test_enabling_cbt_creates_the_sidecar_and_a_change_id(vcsim):
    bed = vcsim()
    ctk = bed.disk_path.with_name("vm-ctk.vmdk")
    assert not ctk.exists()
    bed.enable_cbt()
    assert ctk.exists()
    assert bed.vm_object().config.changeTrackingEnabled is True
    tracking_id, seq = bed.change_id().rsplit("/", 1)
    assert len(tracking_id.replace("-", " ").split()) == 16 and seq == "1"
    bed.enable_cbt(False)
    assert not ctk.exists() and bed.change_id() is None


def test_written_areas_come_back_exactly(vcsim, nbdkit):
    bed = vcsim(size=16 << 20)
    bed.enable_cbt()
    base = bed.change_id()
    writes = [(0, 512), (3 * GRAIN + 512, 4096), (5 * GRAIN - 512, 1024),
              (1 << 20, 3 * GRAIN), (8 << 20, 70 * 1024),
              ((16 << 20) - 512, 512)]
    write_through_nbdkit(bed, nbdkit, writes)
    snap, snap_id = bed.create_snapshot()
    expected = grain_areas(writes, bed.size)
    assert expected[1] == (3 * GRAIN, 3 * GRAIN)    # merged across grains
    assert snapshot_areas(bed, base, snap) == expected
    # A disk that was empty when tracking began: "*" is the same areas.
    assert snapshot_areas(bed, "*", snap) == expected
    assert snapshot_areas(bed, snap_id, snap) == []


def test_data_present_when_cbt_is_enabled_counts_for_star_only(vcsim,
                                                               nbdkit):
    bed = vcsim(size=4 << 20)
    with open(bed.data_path, "r+b") as f:     # written before tracking
        f.seek(2 << 20)
        f.write(b"d" * 100)
    bed.enable_cbt()
    base = bed.change_id()
    write_through_nbdkit(bed, nbdkit, [(0, 4096)])
    snap, _ = bed.create_snapshot()
    assert snapshot_areas(bed, base, snap) == [(0, GRAIN)]
    assert snapshot_areas(bed, "*", snap) == grain_areas(
        [(0, 4096), (2 << 20, 100)], bed.size)


def test_change_id_advances_with_each_write_and_survives_reopen(vcsim,
                                                                nbdkit):
    bed = vcsim(size=4 << 20)
    bed.enable_cbt()
    first = bed.change_id()
    write_through_nbdkit(bed, nbdkit, [(0, 512), (GRAIN, 512)])
    middle = bed.change_id()
    assert middle.rsplit("/", 1) == [first.rsplit("/", 1)[0], "3"]
    write_through_nbdkit(bed, nbdkit, [(2 * GRAIN, 512)])   # new nbdkit
    assert bed.change_id().endswith("/4")
    snap, snap_id = bed.create_snapshot()
    assert snap_id == bed.change_id()
    assert snapshot_areas(bed, first, snap) == [(0, 3 * GRAIN)]
    assert snapshot_areas(bed, middle, snap) == [(2 * GRAIN, GRAIN)]


def test_local_file_writes_are_tracked_too(vcsim, nbdkit):
    bed = vcsim(size=4 << 20)
    bed.enable_cbt()
    server = nbdkit("file=%s" % bed.disk_path)
    h = server.connect()
    h.pwrite(b"L" * 512, 3 * GRAIN)
    h.shutdown()
    server.stop()
    assert bed.change_id().endswith("/2")


def test_snapshot_freezes_the_disk_while_writes_continue(vcsim, nbdkit):
    bed = vcsim(size=4 << 20, seed=3)
    bed.enable_cbt()
    base = bed.change_id()
    write_through_nbdkit(bed, nbdkit, [(GRAIN, GRAIN)], data=b"A" * GRAIN)
    snap1, id1 = bed.create_snapshot("one")
    frozen = bed.data_path.read_bytes()
    write_through_nbdkit(bed, nbdkit, [(GRAIN, 512), (3 << 20, 512)],
                         data=b"B" * 512)
    snap2, id2 = bed.create_snapshot("two")
    assert id1 != id2 and bed.disk_device(
        bed.vm_object().snapshot.currentSnapshot.config).backing.changeId \
        == id2
    # The snapshot reads as it was, through the stand-in.
    server = nbdkit(*bed.plugin_args(), "snapshot=%s" % snap1,
                    config=bed.standin_config(), readonly=True)
    h = server.connect()
    assert h.pread(bed.size, 0) == frozen == \
        bed.snapshot_data_path(snap1).read_bytes()
    assert h.pread(512, GRAIN) == b"A" * 512
    assert bed.data_path.read_bytes()[GRAIN:GRAIN + 512] == b"B" * 512
    assert snapshot_areas(bed, base, snap1) == [(GRAIN, GRAIN)]
    assert snapshot_areas(bed, id1, snap2) == [(GRAIN, GRAIN),
                                               (3 << 20, GRAIN)]


def test_pages_of_2000_areas(vcsim, nbdkit):
    n = 2500
    bed = vcsim(size=2 * n * GRAIN)
    bed.enable_cbt()
    base = bed.change_id()
    writes = [(2 * i * GRAIN + 512, 512) for i in range(n)]
    write_through_nbdkit(bed, nbdkit, writes)
    snap, _ = bed.create_snapshot()
    bed.reset()
    pages = all_pages(bed, base, snap)
    assert [len(areas) for _, _, areas in pages] == [2000, 500]
    # The first page ends where its last area ends.
    assert pages[0][1] == 2 * 1999 * GRAIN + GRAIN
    assert areas_of(pages) == grain_areas(writes, bed.size)
    assert bed.calls("QueryChangedDiskAreas") == 2
    bed.set_page_size(700)
    assert [len(a) for _, _, a in all_pages(bed, base, snap)] == \
        [700, 700, 700, 400]


def test_empty_pages_in_the_middle(vcsim, nbdkit):
    bed = vcsim(size=8 << 20)
    bed.enable_cbt()
    base = bed.change_id()
    writes = [(0, 512), (5 << 20, 512)]
    write_through_nbdkit(bed, nbdkit, writes)
    snap, _ = bed.create_snapshot()
    bed.set_page_bytes(1 << 20)
    pages = all_pages(bed, base, snap)
    assert [(start, length, len(areas)) for start, length, areas in pages] \
        == [(i << 20, 1 << 20, 1 if i in (0, 5) else 0) for i in range(8)]
    assert areas_of(pages) == grain_areas(writes, bed.size)


def test_invalid_change_ids_are_the_servers_invalid_argument(vcsim, nbdkit):
    bed = vcsim(size=4 << 20)
    bed.enable_cbt()
    current = bed.change_id()
    snap, _ = bed.create_snapshot()
    tracking_id, seq = current.rsplit("/", 1)
    for bad in ["nonsense", "52 00 00 00 00 00 00 00-00 00 00 00 00 00 00 "
                "00/1", "%s/%d" % (tracking_id, int(seq) + 1),
                tracking_id + "/x"]:
        with pytest.raises(vmodl.fault.InvalidArgument) as e:
            bed.query_changed_areas(bad, snapshot=snap)
        assert e.value.invalidProperty == "changeId"
        assert e.value.msg == "A specified parameter was not correct: " \
            "changeId"
    # Turning tracking off and on again invalidates every changeId.
    bed.enable_cbt(False)
    bed.enable_cbt()
    snap2, _ = bed.create_snapshot()
    with pytest.raises(vmodl.fault.InvalidArgument):
        bed.query_changed_areas(current, snapshot=snap2)


def test_start_offset_at_the_end_is_invalid(vcsim):
    bed = vcsim(size=4 << 20)
    bed.enable_cbt()
    snap, _ = bed.create_snapshot()
    with pytest.raises(vmodl.fault.InvalidArgument) as e:
        bed.query_changed_areas("*", bed.size, snap)
    assert e.value.invalidProperty == "startOffset"


def test_cbt_disabled_is_a_file_fault(vcsim):
    bed = vcsim(size=4 << 20)
    snap, snap_id = bed.create_snapshot()
    assert snap_id is None
    with pytest.raises(vim.fault.FileFault) as e:
        bed.query_changed_areas("*", snapshot=snap)
    assert e.value.file == "[datastore1] vm/vm.vmdk"
    assert e.value.msg == "Error caused by file [datastore1] vm/vm.vmdk"
    assert [m.key for m in e.value.faultMessage] == \
        ["vim.hostd.vmsvc.cbt.noTrack"]
    # Enabled on the VM now, but the snapshot was taken without it.
    bed.enable_cbt()
    with pytest.raises(vim.fault.FileFault) as e:
        bed.query_changed_areas("*", snapshot=snap)
    assert [m.key for m in e.value.faultMessage] == \
        ["vim.hostd.vmsvc.cbt.noTrack"]


def test_current_state_only_for_a_powered_off_vm(vcsim, nbdkit):
    running = vcsim(size=4 << 20)
    running.enable_cbt()
    with pytest.raises(vim.fault.FileFault):
        running.query_changed_areas("*")
    off = vcsim(size=4 << 20, power_on=False)
    off.enable_cbt()
    base = off.change_id()
    write_through_nbdkit(off, nbdkit, [(GRAIN, 512)])
    assert areas_of(all_pages(off, base, None)) == [(GRAIN, GRAIN)]


def test_unknown_snapshot_and_disk(vcsim):
    bed = vcsim(size=4 << 20)
    bed.enable_cbt()
    snap, _ = bed.create_snapshot()
    with pytest.raises(vmodl.fault.ManagedObjectNotFound):
        bed.query_changed_areas("*", snapshot="snapshot-999")
    with pytest.raises(vmodl.fault.InvalidArgument) as e:
        bed.vm_object().QueryChangedDiskAreas(
            snapshot=vim.vm.Snapshot(snap, bed.si._stub), deviceKey=2001,
            startOffset=0, changeId="*")
    assert e.value.invalidProperty == "deviceKey"


def test_latency_and_call_counts(vcsim):
    bed = vcsim(size=4 << 20)
    bed.enable_cbt()
    snap, _ = bed.create_snapshot()
    bed.reset()
    bed.set_latency("QueryChangedDiskAreas", 0.3)
    t0 = time.monotonic()
    bed.query_changed_areas("*", snapshot=snap)
    assert time.monotonic() - t0 >= 0.3
    assert bed.calls("QueryChangedDiskAreas") == 1
    assert bed.calls("CreateSnapshot_Task") == 0


def test_not_logged_in_is_refused(vcsim):
    bed = vcsim(size=4 << 20)
    bed.enable_cbt()
    snap, _ = bed.create_snapshot()
    si = bed.connect()
    vm = vim.VirtualMachine(bed.vm, si._stub)
    si.content.sessionManager.Logout()
    with pytest.raises(vim.fault.NotAuthenticated):
        vm.QueryChangedDiskAreas(snapshot=vim.vm.Snapshot(snap, si._stub),
                                 deviceKey=2000, startOffset=0, changeId="*")


def test_expired_sessions_are_not_authenticated_until_login(vcsim):
    bed = vcsim(size=4 << 20)
    si = bed.connect()
    vm = vim.VirtualMachine(bed.vm, si._stub)
    assert vm.name == "vm"
    bed.expire_sessions()
    with pytest.raises(vim.fault.NotAuthenticated):
        vm.name
    assert bed.vm_object().name == "vm"     # a new login works


def test_a_sidecar_in_another_format_fails_writable_opens(vcsim, nbdkit):
    bed = vcsim(size=4 << 20)
    bed.disk_path.with_name("vm-ctk.vmdk").write_bytes(b"x" * 8192)
    server = nbdkit(*bed.plugin_args(), config=bed.standin_config())
    with pytest.raises(nbd.Error):
        server.connect()
    assert "fakevddk: %s: not a change-tracking file" % \
        bed.disk_path.with_name("vm-ctk.vmdk") in server.stderr
    server.stop()
    # Read-only handles never touch it.
    reader = nbdkit(*bed.plugin_args(), config=bed.standin_config(),
                    readonly=True)
    assert reader.connect().get_size() == 4 << 20


def session_cookie(si):
    """The vmware_soap_session value of a pyvmomi session."""
    return re.search(r'vmware_soap_session="?([^";]+)', si._stub.cookie)[1]


def test_a_pyvmomi_session_cookie_opens_the_disk(vcsim, nbdkit):
    bed = vcsim(size=4 << 20, seed=5)
    cookie = session_cookie(bed.connect())
    server = nbdkit(*bed.plugin_args(), "cookie=" + cookie,
                    config=bed.standin_config(cookies=[cookie]),
                    readonly=True)
    assert server.connect().pread(4096, 0) == \
        bed.data_path.read_bytes()[:4096]
    assert server.calls("ConnectEx")[0]["cookie"] == cookie


def test_removed_snapshot_is_gone_for_the_standin_too(vcsim, nbdkit):
    bed = vcsim(size=4 << 20)
    bed.enable_cbt()
    keep, _ = bed.create_snapshot("keep")
    gone, _ = bed.create_snapshot("gone")
    frozen = bed.dir / "snapshots" / gone
    assert frozen.is_dir()
    bed.remove_snapshot(gone)
    assert not frozen.exists()
    assert [(s["moref"], s["name"]) for s in bed.state["snapshots"]] == \
        [(keep, "keep")]
    assert "snapshot %s " % gone not in bed.standin_config()
    server = nbdkit(*bed.plugin_args(), "snapshot=%s" % gone,
                    config=bed.standin_config(), readonly=True)
    with pytest.raises(nbd.Error):
        server.connect()
    assert server.calls("ConnectEx")[-1]["result"] == 13003


def test_concurrent_async_writes_are_all_recorded(vcsim, nbdkit):
    """Many requests in flight, completed by several stand-in threads:
    every write is in the sidecar, each with its own sequence number."""
    import random
    bed = vcsim(size=64 << 20)
    bed.enable_cbt()
    base = bed.change_id()
    rng = random.Random(1)
    writes = [(rng.randrange(0, (64 << 20) // 4096) * 4096, 4096)
              for _ in range(300)]
    server = nbdkit(*bed.plugin_args(),
                    config=bed.standin_config("async_threads 4\n"))
    h = server.connect()
    for i, (offset, length) in enumerate(writes):
        h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray([i % 255 + 1])
                                               * length), offset)
    while h.aio_in_flight() > 0:
        h.poll(-1)
    h.flush()
    h.shutdown()
    server.stop()
    submitted = server.calls("WriteAsync")
    assert len(submitted) == len(writes)
    assert max(c["inflight"] for c in submitted) > 1
    assert bed.change_id() == "%s/%d" % (base.rsplit("/", 1)[0],
                                         1 + len(writes))
    snap, _ = bed.create_snapshot()
    assert snapshot_areas(bed, base, snap) == grain_areas(writes, bed.size)


def test_last_partial_grain_is_clipped_to_the_disk(vcsim, nbdkit):
    size = (1 << 20) + 3 * 512
    bed = vcsim(size=size)
    bed.enable_cbt()
    base = bed.change_id()
    write_through_nbdkit(bed, nbdkit, [(size - 512, 512)])
    snap, _ = bed.create_snapshot()
    assert snapshot_areas(bed, base, snap) == [(1 << 20, 3 * 512)]


def test_sidecar_format_as_documented(nbdkit, tmp_path):
    """tests/bed/standin/README.md's layout, written and read here without
    vcsim, on a raw disk (sidecar NAME-ctk)."""
    import struct
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(1 << 20))
    sidecar = tmp_path / "disk.raw-ctk"
    tracking_id = b"52 01 02 03 04 05 06 07-08 09 0a 0b 0c 0d 0e 0f"
    header = b"FVCTK001" + struct.pack("<II", GRAIN, 0) + \
        struct.pack("<Q", 5) + tracking_id.ljust(48, b"\0")
    sidecar.write_bytes(header.ljust(4096, b"\0"))
    server = nbdkit("file=%s" % disk)
    h = server.connect()
    h.pwrite(b"w" * 1024, 3 * GRAIN - 512)      # grains 2 and 3
    h.pwrite(b"w" * 512, 0)
    h.shutdown()
    server.stop()
    data = sidecar.read_bytes()
    assert data[:8] == b"FVCTK001" and data[24:24 + 48].rstrip(b"\0") == \
        tracking_id
    assert struct.unpack_from("<Q", data, 16)[0] == 7
    grains = struct.unpack_from("<4Q", data, 4096)
    assert grains == (7, 0, 6, 6)
    assert len(data) == 4096 + 4 * 8        # nothing past the last grain


def fetch(bed, moref, prop):
    """A raw SOAP Fetch (what pyvmomi 8 reads every property with) in the
    fixture's session: the HTTP status and the body."""
    import urllib.error
    import urllib.request
    from bed.vcenter import _unverified_tls
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
        '<soapenv:Body><Fetch xmlns="urn:vim25">'
        '<_this type="VirtualMachine">%s</_this><prop>%s</prop></Fetch>'
        '</soapenv:Body></soapenv:Envelope>' % (moref, prop))
    request = urllib.request.Request(
        "https://%s:%d/sdk" % (bed.host, bed.port), data=body.encode(),
        headers={"Content-Type": "text/xml; charset=utf-8",
                 "SOAPAction": "urn:vim25/8.0.0.0",
                 "Cookie": bed.si._stub.cookie})
    try:
        with urllib.request.urlopen(request, context=_unverified_tls(),
                                    timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_fetch_of_an_unset_property_answers_with_no_value(vcsim):
    """Fetch of a VM's snapshot before it has one is answered, with no
    value (the simulator alone closes the connection); a set property
    still comes back."""
    bed = vcsim()
    status, answer = fetch(bed, bed.vm, "snapshot")
    assert status == 200, answer
    assert re.search(r"<FetchResponse[^>]*>\s*</FetchResponse>", answer), \
        answer
    status, answer = fetch(bed, bed.vm, "name")
    assert status == 200, answer
    assert re.search(r"<returnval[^>]*>vm</returnval>", answer), answer
