"""changed-since= against the test bed (tests/bed/vcenter.py: govmomi's vcsim
as the ESXi host, the VDDK stand-in serving the VM's disk, the stand-in
recording what is written so vcsim reports it as changed)."""

import json
import os
import subprocess
import sys

import pytest

from bed import ROOT, assert_no_traceback, error_lines


def served(nbdkit, bed, *args, extra="", **kw):
    """A read-only nbdkit serving the bed's disk with ``args``."""
    kw.setdefault("readonly", True)
    return nbdkit(*bed.plugin_args(), *args,
                  config=bed.standin_config(extra), **kw)


def open_error(nbdkit, bed, *args):
    """The nbdkit error line of a connection the plugin refused."""
    import nbd
    server = served(nbdkit, bed, *args)
    with pytest.raises(nbd.Error):
        server.connect()
    assert_no_traceback(server.stderr)
    lines = error_lines(server.stderr)
    assert lines, server.stderr
    return lines[0].split(": open: error: ", 1)[1]


def changed_areas(bed, *args, password=None, pass_fds=()):
    return subprocess.run(
        [sys.executable, "-m", "vddkpy", "changed-areas",
         *bed.plugin_args(password), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
        pass_fds=pass_fds)


# -- refusals -----------------------------------------------------------------

def test_cbt_not_enabled(vcsim, nbdkit):
    bed = vcsim(size=4 << 20)
    assert open_error(nbdkit, bed, "changed-since=*") == (
        "changed-since: changed block tracking is not enabled on "
        "[datastore1] vm/vm.vmdk of VM moref=%s: enable it (ReconfigVM_Task "
        "with changeTrackingEnabled=true, or the VM option ctkEnabled=TRUE), "
        "take a snapshot, and make a full copy with changed-since=*" % bed.vm)


def test_snapshot_from_before_tracking(vcsim, nbdkit):
    bed = vcsim(size=4 << 20)
    snapshot, change_id = bed.create_snapshot("untracked")
    assert change_id is None
    bed.enable_cbt()
    assert open_error(nbdkit, bed, "changed-since=*",
                      "snapshot=" + snapshot) == (
        "changed-since: changed block tracking is not enabled on "
        "[datastore1] vm/vm.vmdk of VM moref=%s snapshot %s: enable it "
        "(ReconfigVM_Task with changeTrackingEnabled=true, or the VM option "
        "ctkEnabled=TRUE), take a snapshot, and make a full copy with "
        "changed-since=*" % (bed.vm, snapshot))


def test_no_disk_with_that_backing_file(vcsim, nbdkit):
    bed = vcsim(size=4 << 20)
    bed.enable_cbt()
    other = bed.datastore / "vm" / "other.vmdk"
    other.write_bytes(bed.disk_path.read_bytes())
    message = open_error(nbdkit, bed, "changed-since=*",
                         "file=[datastore1] vm/other.vmdk")
    assert message == (
        "changed-since: VM moref=%s has no disk whose backing file is "
        "[datastore1] vm/other.vmdk (its disks: [datastore1] vm/vm.vmdk)"
        % bed.vm)


def test_changed_areas_command_errors_name_no_secret(vcsim):
    bed = vcsim(size=4 << 20)
    result = changed_areas(bed, "changed-since=*", password="sekret")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == (
        "vddkpy: error: changed-since: changed block tracking is not enabled "
        "on [datastore1] vm/vm.vmdk of VM moref=%s: enable it "
        "(ReconfigVM_Task with changeTrackingEnabled=true, or the VM option "
        "ctkEnabled=TRUE), take a snapshot, and make a full copy with "
        "changed-since=*\n" % bed.vm)
    wrong = changed_areas(bed, "changed-since=*", password="hunter2")
    assert wrong.returncode == 1
    assert "hunter2" not in wrong.stderr + wrong.stdout
    assert wrong.stderr.startswith(
        "vddkpy: error: vSphere %s:%d refused the login of user root: "
        % (bed.host, bed.port))


# -- helpers for the change-tracking tests -----------------------------------

GRAIN = 64 * 1024          # the bed's change-tracking granularity


def write_through_nbdkit(nbdkit, bed, writes, tmp_path):
    """``writes`` [(offset, bytes)] through a read-write nbdkit vddk (the
    stand-in records them in the disk's change-tracking sidecar)."""
    server = nbdkit(*bed.plugin_args(), config=bed.standin_config(),
                    verbose=False)
    h = server.connect()
    for offset, data in writes:
        h.pwrite(data, offset)
    h.flush()
    h.shutdown()
    server.stop()


def grains_of(writes):
    """The merged 64 KiB-grain areas [(start, length)] the writes touch."""
    touched = sorted({g for offset, data in writes
                      for g in range(offset // GRAIN,
                                     -(-(offset + len(data)) // GRAIN))})
    areas = []
    for g in touched:
        if areas and areas[-1][0] + areas[-1][1] == g * GRAIN:
            areas[-1][1] += GRAIN
        else:
            areas.append([g * GRAIN, GRAIN])
    return [tuple(a) for a in areas]


def data_extents(server):
    """The data extents of base:allocation, merged, over the whole disk."""
    import nbd
    h = server.connect()
    size = h.get_size()
    found = []

    def collect(metacontext, offset, entries, err):
        position = offset
        for length, flags in zip(entries[0::2], entries[1::2]):
            if not flags & nbd.STATE_HOLE:
                if found and found[-1][0] + found[-1][1] == position:
                    found[-1][1] += length
                else:
                    found.append([position, length])
            position += length
        collected[0] = position
        return 0

    collected = [0]
    while collected[0] < size:
        h.block_status(min(size - collected[0], 1 << 30), collected[0],
                       collect)
    h.shutdown()
    return [tuple(a) for a in found]


def frozen_copy(bed, path):
    """A sparse copy of the disk's bytes now (just after a snapshot)."""
    subprocess.run(["cp", "--sparse=always", str(bed.data_path), str(path)],
                   check=True)
    return path


def cmp(a, b):
    return subprocess.run(["cmp", str(a), str(b)], capture_output=True,
                          text=True)


# -- changed-since=* ----------------------------------------------------------

def test_star_map_is_the_written_areas_from_cbt_alone(vcsim, nbdkit,
                                                      tmp_path):
    import random
    rng = random.Random(5)
    bed = vcsim(size=64 << 20)
    bed.enable_cbt()
    writes = [(rng.randrange(0, (64 << 20) - 8192, 512),
               rng.randbytes(rng.choice((512, 4096, 8192))))
              for _ in range(60)]
    writes.append(((64 << 20) - 512, b"\1" * 512))      # the last sector
    write_through_nbdkit(nbdkit, bed, writes, tmp_path)
    snapshot, change_id = bed.create_snapshot("s1")
    expected = grains_of(writes)
    bed.reset()
    bed.set_page_size(7)
    server = served(nbdkit, bed, "changed-since=*", "snapshot=" + snapshot)
    assert data_extents(server) == expected
    pages = bed.calls("QueryChangedDiskAreas")
    assert pages == -(-len(expected) // 7)
    assert server.calls("QueryAllocatedBlocks") == []
    # Reads are the disk's, holes included.
    h = server.connect()
    assert h.pread(1 << 20, 0) == bed.data_path.read_bytes()[:1 << 20]
    h.shutdown()
    server.stop()
    assert "changed-since: changeId to give next time for [datastore1] " \
        "vm/vm.vmdk: %s" % change_id in server.stderr


def test_nbdinfo_map_calls_cbt_not_query_allocated_blocks(vcsim, nbdkit):
    bed = vcsim(size=16 << 20)
    bed.enable_cbt()
    writes = [(i * (1 << 20), b"\7" * 4096) for i in range(16)]
    write_through_nbdkit(nbdkit, bed, writes, None)
    snapshot, _ = bed.create_snapshot("s1")
    bed.reset()
    bed.set_page_size(5)
    server = served(nbdkit, bed, "changed-since=*", "snapshot=" + snapshot,
                    verbose=False)
    result = subprocess.run(["nbdinfo", "--map", server.uri],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    data = [line.split() for line in result.stdout.splitlines()
            if line and line.split()[2] == "0"]
    assert [(int(o), int(n)) for o, n, *_ in data] == grains_of(writes)
    # 16 areas in pages of 5: 4 calls for each open's map (nbdinfo of
    # libnbd 1.22 opens twice: NBD_OPT_INFO, then NBD_OPT_GO).
    opens = len(server.calls("Open"))
    assert opens in (1, 2)
    assert bed.calls("QueryChangedDiskAreas") == 4 * opens
    assert server.calls("QueryAllocatedBlocks") == []


def test_changed_areas_command(vcsim, nbdkit):
    bed = vcsim(size=16 << 20)
    bed.enable_cbt()
    first, a = bed.create_snapshot("s0")
    writes = [(3 << 20, b"\1" * 100 * 1024), ((16 << 20) - 4096, b"\2" * 4096)]
    write_through_nbdkit(nbdkit, bed, writes, None)
    snapshot, b = bed.create_snapshot("s1")
    sessions = bed.sessions()
    result = changed_areas(bed, "changed-since=" + a, "snapshot=" + snapshot,
                           password="sekret")
    assert result.returncode == 0, result.stderr
    assert bed.sessions() == sessions           # it logged out
    assert "sekret" not in result.stdout + result.stderr
    assert json.loads(result.stdout) == {
        "file": bed.disk_file, "changed_since": a, "capacity": 16 << 20,
        "next_change_id": b, "areas": [list(x) for x in grains_of(writes)]}
    # The password from an inherited file descriptor, as nbdkit reads it.
    read, write = os.pipe()
    os.write(write, b"sekret\n")
    os.close(write)
    from_fd = changed_areas(bed, "changed-since=" + a, "snapshot=" + snapshot,
                            password="-%d" % read, pass_fds=(read,))
    os.close(read)
    assert from_fd.returncode == 0, from_fd.stderr
    assert from_fd.stdout == result.stdout
    gone = changed_areas(bed, "changed-since=*", "snapshot=snapshot-999",
                         password="sekret")
    assert (gone.returncode, gone.stderr) == (
        1, "vddkpy: error: changed-since: vSphere %s:%d has no VM moref=%s "
        "snapshot snapshot-999\n" % (bed.host, bed.port, bed.vm))
    bad = changed_areas(bed, "changed-since=*", password="-hunter2")
    assert (bad.returncode, bad.stdout, bad.stderr) == (
        1, "", "vddkpy: error: password file descriptor: could not parse "
        "number\n")


# -- the documented warm migration, end to end --------------------------------

def documented_commands():
    """The manual's two changed-since examples (full copy, delta)."""
    import re
    text = (ROOT / "doc" / "nbdkit-vddk-plugin.md").read_text()
    blocks = re.findall(r"```\{\.sh \.vsphere\}\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    return blocks


def localize(command, bed, libdir, snapshots):
    from bed import PLUGIN
    for placeholder, value in (
            # The checkout's plugin, rather than an installed "vddk".
            (" vddk libdir=", " python %s libdir=" % PLUGIN),
            ("/opt/vmware-vix-disklib-distrib", str(libdir)),
            ("server=esxi.example.com",
             "server=%s port=%d" % (bed.host, bed.port)),
            ("+/tmp/rootpw", "+%s" % bed.password_file),
            ("thumbprint=xx:xx:xx:xx", "thumbprint=%s" % bed.thumbprint),
            ("vm=moref=2", "vm=moref=%s" % bed.vm),
            ("snapshot=snapshot-1", "snapshot=%s" % snapshots[0]),
            ("snapshot=snapshot-2", "snapshot=%s" % snapshots[-1]),
            ("[datastore1] Fedora/Fedora.vmdk", bed.disk_file)):
        command = command.replace(placeholder, value)
    return command


def run_documented(command, bed, libdir, snapshots, directory,
                   config=None, status=0):
    """The recipe as a user pastes it into a shell (no ``set -e``); the
    exit status must be ``status`` (None: any), and no process it started
    may outlive it (a server left running would hold the copy open).  Its
    output goes to files: a process left behind cannot hold the run open
    through a pipe."""
    import tempfile
    from bed import standin_env
    from bed.docs import libnbd_leftovers_removed, own_sockets
    for socket in directory.glob("nbd*.sock"):
        socket.unlink()
    argv = ["bash", "-c", own_sockets(localize(command, bed, libdir,
                                               snapshots), directory)]
    with tempfile.TemporaryFile("w+") as out, \
            tempfile.TemporaryFile("w+") as err, \
            libnbd_leftovers_removed():
        returncode = subprocess.run(
            argv, cwd=directory, stdout=out, stderr=err, timeout=600,
            env=standin_env(directory, config or bed.standin_config()),
        ).returncode
        out.seek(0)
        err.seek(0)
        result = subprocess.CompletedProcess(argv, returncode, out.read(),
                                             err.read())
        assert not processes_left_in(directory), result.stderr
    if status is not None:
        assert result.returncode == status, result.stderr
    assert_no_traceback(result.stderr)
    return result


def processes_left_in(directory, grace=30):
    """The command lines of processes still working in ``directory`` once
    those already told to exit had ``grace`` seconds to do so (then
    killed, so that a failing test leaves nothing behind)."""
    import signal
    import time
    deadline = time.monotonic() + grace
    while True:
        left = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                if os.readlink("/proc/%s/cwd" % pid) == str(directory):
                    with open("/proc/%s/cmdline" % pid, "rb") as f:
                        left[int(pid)] = f.read().replace(b"\0", b" ")
            except OSError:
                pass        # gone meanwhile, or not ours to read
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return sorted(left.values())


def migration_writes(rng, size, before):
    """5000 scattered writes after the full copy: zeros over 1000 grains
    that held data, random data of 512 B to 64 KiB in 3900 other grains
    (every other grain, so each stays an area of its own), and 100 writes
    filling a region that was empty (an area that grows); nothing in the
    middle quarter, so that pages there are empty."""
    quarter = size // 4
    usable = [g for g in range(0, size // GRAIN, 2)
              if not quarter * 2 <= g * GRAIN < quarter * 3
              and g * GRAIN < size - (8 << 20)]
    held = [offset // GRAIN for offset, _ in before]
    zeroed = rng.sample(held, 1000)
    fresh = rng.sample(sorted(set(usable) - set(held)), 3900)
    writes = [(g * GRAIN, bytes(GRAIN)) for g in zeroed]
    for g in fresh:
        length = rng.choice((512, 4096, 65536))
        start = g * GRAIN + rng.randrange(0, GRAIN - length + 1, 512)
        writes.append((start, rng.randbytes(length)))
    grown = size - (8 << 20)
    writes += [(grown + i * 80 * 1024, rng.randbytes(80 * 1024))
               for i in range(100)]
    rng.shuffle(writes)
    return writes


def test_warm_migration_end_to_end(vcsim, nbdkit, libdir, tmp_path):
    import random
    rng = random.Random(20)
    size = 1 << 30
    bed = vcsim(size=size)
    bed.enable_cbt()
    quarter = size // 4
    before = [(g * GRAIN, rng.randbytes(GRAIN))
              for g in rng.sample(range(0, quarter * 2 // GRAIN, 2), 1500)]
    write_through_nbdkit(nbdkit, bed, before, tmp_path)
    first, change_a = bed.create_snapshot("full")
    full, delta = documented_commands()
    work = tmp_path / "work"
    work.mkdir()
    run_documented(full, bed, libdir, [first], work)
    assert cmp(work / "previous.raw", bed.data_path).returncode == 0
    assert (work / "changeid").read_text().strip() == change_a

    writes = migration_writes(rng, size, before)
    assert len(writes) == 5000
    write_through_nbdkit(nbdkit, bed, writes, tmp_path)
    second, change_b = bed.create_snapshot("delta")
    expected = frozen_copy(bed, tmp_path / "expected.raw")
    areas = len(grains_of(writes))
    assert areas > 4000

    bed.reset()                     # pages of 2000 areas
    run_documented(delta, bed, libdir, [first, second], work)
    assert cmp(work / "previous.raw", expected).returncode == 0
    assert (work / "changeid").read_text().strip() == change_b
    stats = json.loads((work / "delta.json").read_text())
    calls = stats["functions"]["QueryChangedDiskAreas"]["calls"]
    assert calls == bed.calls("QueryChangedDiskAreas")
    connections = calls // 3
    assert calls == 3 * connections > 0       # 2000 + 2000 + the rest

    # The same again from the full copy, with answers of 64 MiB each:
    # four of them, in the middle quarter, hold no area.
    again = tmp_path / "work2"
    again.mkdir()
    run_documented(full, bed, libdir, [first], again)
    bed.reset()
    bed.set_page_bytes(64 << 20)
    run_documented(delta, bed, libdir, [first, second], again)
    assert cmp(again / "previous.raw", expected).returncode == 0
    calls = bed.calls("QueryChangedDiskAreas")
    assert calls % 16 == 0 and calls >= 16, calls


# -- vSphere's refusals, and sessions -----------------------------------------

def tracked_bed(vcsim, nbdkit, size=8 << 20):
    """A bed with change tracking on, one write, and a snapshot after it:
    (bed, snapshot moref, the changeId before the write)."""
    bed = vcsim(size=size)
    bed.enable_cbt()
    _, before = bed.create_snapshot("s0")
    write_through_nbdkit(nbdkit, bed, [(1 << 20, b"\5" * 4096)], None)
    snapshot, _ = bed.create_snapshot("s1")
    return bed, snapshot, before


REFUSED = ("changed-since=%s: vSphere refused this changeId for [datastore1] "
           "vm/vm.vmdk (InvalidArgument: A specified parameter was not "
           "correct: changeId): it is not one of this disk's or has expired "
           "(change tracking was reset): a full copy is needed: make one "
           "with changed-since=* and use the changeId it reports")


def test_invalid_change_id(vcsim, nbdkit):
    bed, snapshot, _ = tracked_bed(vcsim, nbdkit)
    assert open_error(nbdkit, bed, "changed-since=52 00 bogus/1",
                      "snapshot=" + snapshot) == REFUSED % "52 00 bogus/1"


def test_expired_change_id(vcsim, nbdkit):
    """Change tracking turned off and on again forgets every changeId."""
    bed, _, before = tracked_bed(vcsim, nbdkit)
    bed.enable_cbt(False)
    bed.enable_cbt()
    snapshot, _ = bed.create_snapshot("s2")
    assert open_error(nbdkit, bed, "changed-since=" + before,
                      "snapshot=" + snapshot) == REFUSED % before


def test_running_vm_without_snapshot(vcsim, nbdkit):
    bed, _, before = tracked_bed(vcsim, nbdkit)
    assert open_error(nbdkit, bed, "changed-since=" + before) == (
        "changed-since: vSphere QueryChangedDiskAreas: [datastore1] "
        "vm/vm.vmdk: FileFault: Error caused by file [datastore1] vm/vm.vmdk "
        "(the changes of a running VM's disk can only be read from a "
        "snapshot: give snapshot=)")


def test_logs_in_again_when_the_session_ends(vcsim, nbdkit):
    bed, snapshot, before = tracked_bed(vcsim, nbdkit)
    bed.reset()
    server = served(nbdkit, bed, "changed-since=" + before,
                    "snapshot=" + snapshot)
    server.connect().shutdown()
    assert bed.calls("Login") == 1
    manager = bed.si.content.sessionManager
    ours = [s.key for s in manager.sessionList
            if s.key != manager.currentSession.key]
    assert ours
    manager.TerminateSession(ours)
    h = server.connect()
    assert h.pread(4096, 1 << 20) == b"\5" * 4096
    h.shutdown()
    assert bed.calls("Login") == 2
    assert error_lines(server.stderr) == []


def test_cookie_session(vcsim, nbdkit):
    """cookie=: an existing session, no Login of its own."""
    bed, snapshot, before = tracked_bed(vcsim, nbdkit)
    session = bed.connect()
    cookie = session._stub.cookie.split(";")[0].split("=", 1)[1].strip('"')
    config = bed.standin_config().replace(
        "  user root sekret\n", "  user root sekret\n  cookie %s root\n"
        % cookie)
    # The session is the cookie's owner's: the server's stop leaves it.
    first = nbdkit(*bed.plugin_args(), "cookie=" + cookie, "changed-since=*",
                   "snapshot=" + snapshot, config=config, readonly=True)
    assert data_extents(first)
    first.stop()
    assert bed.calls("Logout") == 0
    assert session.content.sessionManager.currentSession is not None
    bed.reset()
    server = nbdkit(*bed.plugin_args(), "cookie=" + cookie,
                    "changed-since=" + before, "snapshot=" + snapshot,
                    config=config, readonly=True)
    h = server.connect()
    assert h.pread(4096, 1 << 20) == b"\5" * 4096
    h.shutdown()
    assert bed.calls("Login") == 0
    assert bed.calls("QueryChangedDiskAreas") == 1
    # A cookie cannot log in again: once its session ends, one line says so.
    key = session.content.sessionManager.currentSession.key
    bed.si.content.sessionManager.TerminateSession([key])
    import nbd
    with pytest.raises(nbd.Error):
        server.connect()
    assert error_lines(server.stderr)[-1].endswith(
        ": open: error: vSphere %s:%d no longer accepts cookie= (its session "
        "has ended)" % (bed.host, bed.port))


def test_the_server_logs_out_when_it_stops(vcsim, nbdkit):
    """The server's one session ends with it: vSphere would keep an
    abandoned one until it timed out, and refuses log-ins past a limit."""
    bed, snapshot, before = tracked_bed(vcsim, nbdkit)
    sessions = bed.sessions()
    bed.reset()
    server = served(nbdkit, bed, "changed-since=" + before,
                    "snapshot=" + snapshot)
    first = data_extents(server)            # two connections, one session
    assert first and data_extents(server) == first
    assert bed.sessions() == sessions + 1
    server.stop()
    assert (bed.calls("Login"), bed.calls("Logout")) == (1, 1)
    assert bed.sessions() == sessions
    assert error_lines(server.stderr) == []


def test_stats_and_extents_debug(vcsim, nbdkit, tmp_path):
    bed, snapshot, before = tracked_bed(vcsim, nbdkit)
    bed.reset()
    server = served(nbdkit, bed, "changed-since=" + before,
                    "snapshot=" + snapshot,
                    "stats-file=%s" % (tmp_path / "stats.json"),
                    options=["-D", "vddk.stats=1", "-D", "vddk.extents=1"])
    h = server.connect()
    assert h.pread(4096, 1 << 20) == b"\5" * 4096
    assert h.pread(4096, 0) == bytes(4096)        # unchanged: zeros
    h.shutdown()
    server.stop()
    change_id = bed.state["snapshots"][-1]["changeIds"][bed.disk_file]
    err = server.stderr
    assert "changed area at [1048576...1310719] (length 262144)" in err
    rows = [line.split("nbdkit: ", 1)[-1] for line in err.splitlines()]
    assert any(r.split()[:1] == ["QueryChangedDiskAreas"]
               and r.split()[2] == "1" for r in
               (x.split("debug: ", 1)[-1].strip() for x in rows)), err
    assert "next changed-since for [datastore1] vm/vm.vmdk: %s" % change_id \
        in err
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["functions"]["QueryChangedDiskAreas"]["calls"] == 1
    assert stats["next_change_ids"] == {bed.disk_file: change_id}


def test_maps_past_4_gib(vcsim, nbdkit, tmp_path):
    """Extents of 4 GiB or more are cut to the request, so that nbdkit
    1.32 does not cut them at 4 GiB - 1 (nbdinfo: "request is
    unaligned"): a local -r disk, and a CBT map."""
    local = tmp_path / "big.raw"
    with open(local, "wb") as f:
        f.truncate(5 << 30)
    server = nbdkit("file=%s" % local, readonly=True, verbose=False)
    result = subprocess.run(["nbdinfo", "--map", server.uri],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", str(5 << 30), "3", "hole,zero"]
    server.stop()

    bed = vcsim(size=6 << 30, power_on=False)
    bed.enable_cbt()
    write_through_nbdkit(nbdkit, bed, [(5 << 30, b"\3" * 512)], None)
    server = served(nbdkit, bed, "changed-since=*", verbose=False)
    assert data_extents(server) == [(5 << 30, GRAIN)]
    result = subprocess.run(["nbdinfo", "--map", server.uri],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_tracking_file_gone(vcsim, nbdkit):
    """The disk names a changeId but ESXi has no change-tracking file for
    it (FileFault, message key vim.hostd.vmsvc.cbt.noTrack): the same line
    as tracking that was never enabled."""
    bed, snapshot, before = tracked_bed(vcsim, nbdkit)
    frozen = bed.snapshot_data_path(snapshot).parent
    sidecars = list(frozen.glob("*-ctk.vmdk"))
    assert sidecars
    for sidecar in sidecars:
        sidecar.unlink()
    assert open_error(nbdkit, bed, "changed-since=" + before,
                      "snapshot=" + snapshot) == (
        "changed-since: changed block tracking is not enabled on "
        "[datastore1] vm/vm.vmdk of VM moref=%s snapshot %s: enable it "
        "(ReconfigVM_Task with changeTrackingEnabled=true, or the VM option "
        "ctkEnabled=TRUE), take a snapshot, and make a full copy with "
        "changed-since=*" % (bed.vm, snapshot))
