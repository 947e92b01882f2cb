"""vddkpy sync end to end on the bed: rounds of a running VM's disks
copied onto images in a directory, each image equal to the disk as of the
round's snapshot, only the changed areas read, no snapshot left behind;
failures and interruptions leave the state as it was and the next round
repairs the copy."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from . import guest

GRAIN = 64 << 10            # the bed's change-tracking granularity
DISK = "[datastore1] vm/vm.vmdk"
STATE = "vddkpy-sync.json"


def image_bytes(path, image_format="raw"):
    """The disk an image holds, byte for byte."""
    if image_format == "raw":
        return path.read_bytes()
    raw = path.with_suffix(".check")
    subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw",
                    str(path), str(raw)], check=True)
    data = raw.read_bytes()
    raw.unlink()
    return data


def grains(writes):
    """Bytes of the 64 KiB grains the writes touch (what vSphere reports
    changed: the unit of its tracking)."""
    touched = {g for offset, data in writes
               for g in range(offset // GRAIN,
                              -(-(offset + len(data)) // GRAIN))}
    return len(touched) * GRAIN


def bytes_read(run):
    return sum(c["count"] * 512 for c in run.calls()
               if c["fn"] in ("Read", "ReadAsync"))


def one_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def refused(run, to, *options, **kw):
    """The one line of a round that fails with exit status 1."""
    result = run.run(to, *options, **kw)
    assert result.returncode == 1, result.stderr
    return one_line(result.stderr)


def full_copy(image, nbytes, disk=DISK):
    """What a round prints for a disk it copied whole."""
    return "%s: %s (full copy, %d bytes read)\n" % (disk, image, nbytes)


def round_then_guest_writes(run, to, count, seed, *options):
    """A round, then ``count`` scattered guest writes on each disk (seeds
    ``seed``, ``seed`` + 1, ...): the state that round wrote."""
    run.ok(to, *options)
    for n, disk in enumerate(run.bed.disks):
        guest.write(run.bed, run.libdir, run.dir / ("guest%d" % n),
                    guest.scattered_writes(disk.size, count, seed=seed + n),
                    disk=n)
    return (to / STATE).read_bytes()


def assert_unchanged_then_repaired(run, to, state_before,
                                   image_format="raw"):
    """A failed round left the state as it was and no snapshot; the next
    round brings each disk's image up to the disk."""
    assert (to / STATE).read_bytes() == state_before
    assert run.bed.snapshot_morefs() == []
    run.ok(to, "--format", image_format)
    for disk in run.bed.disks:
        image = to / ("%s.%s" % (disk.path.stem, image_format))
        assert image_bytes(image, image_format) == \
            disk.data_path.read_bytes()


def assert_copied_whole_with_a_warning(run, to, refusal):
    """The next round warns that vSphere refused the state's changeId
    (``refusal``: its words) and copies the disk (2 MiB) whole."""
    result = run.ok(to)
    assert result.stderr == (
        "vddkpy sync: warning: vSphere refused changeId %s: copying it "
        "whole\n" % refusal)
    assert "(full copy, %d bytes read)" % (2 << 20) in result.stdout
    assert (to / "vm.raw").read_bytes() == run.bed.data_path.read_bytes()


def outage_after(bed, calls):
    """The bed's stand-in config with ESXi's data path down after
    ``calls`` calls."""
    return bed.standin_config().replace(
        "  port ", "  down_for calls=100000 after=%d\n  port " % calls, 1)


@contextlib.contextmanager
def nbd_uri_of(path, *filters):
    """nbdkit's file plugin serving ``path`` on a Unix socket beside it
    (with ``filters``): its NBD URI."""
    sock = path.with_suffix(".sock")
    server = subprocess.Popen(["nbdkit", "-f", "-U", str(sock)] +
                              ["--filter=" + f for f in filters] +
                              ["file", str(path)])
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert time.monotonic() < deadline and server.poll() is None
            time.sleep(0.02)
        yield "nbd+unix:///?socket=%s" % sock
    finally:
        server.terminate()
        server.wait()


@pytest.mark.parametrize("image_format", ["raw", "qcow2"])
def test_rounds_of_scattered_writes_then_a_final_one(
        started, libdir, tmp_path, image_format):
    size = 64 << 20
    bed, run, to = started(size=size, seed=21)
    sessions = bed.sessions()
    image = to / ("vm." + image_format)
    result = run.ok(to, "--format", image_format)
    assert result.stdout == full_copy(image, size)
    assert image_bytes(image, image_format) == bed.data_path.read_bytes()
    total_writes = 0
    for n in range(5):
        writes = guest.scattered_writes(size, 520, seed=100 + n)
        total_writes += len(writes)
        guest.write(bed, libdir, tmp_path / ("guest%d" % n), writes)
        run.reset_calls()
        run.ok(to, "--format", image_format)
        assert image_bytes(image, image_format) == \
            bed.data_path.read_bytes(), "round %d" % n
        assert 0 < bytes_read(run) <= 1.1 * grains(writes)
        assert bed.snapshot_morefs() == []
    assert total_writes >= 2500
    last = guest.scattered_writes(size, 50, seed=7)
    guest.write(bed, libdir, tmp_path / "guest-last", last)
    state_before = (to / STATE).read_bytes()
    assert refused(run, to, "--format", image_format, "--final") == (
        "vddkpy sync: error: --final: VM %s is poweredOn: shut it down "
        "first (the last round copies a VM that no longer writes)"
        % ("moref=" + bed.vm))
    assert (to / STATE).read_bytes() == state_before
    bed.stop_vm()
    run.reset_calls()
    run.ok(to, "--format", image_format, "--final")
    assert image_bytes(image, image_format) == bed.data_path.read_bytes()
    assert bytes_read(run) <= 1.1 * grains(last)
    assert bed.snapshot_morefs() == []
    assert bed.sessions() == sessions       # every log-in logged out


@pytest.mark.parametrize("more_disks", [[], [8 << 20]])
def test_data_path_outage_mid_copy_changes_nothing_and_rerun_repairs(
        started, more_disks):
    """ESXi's data path goes down after a few calls of each disk's
    reader: the round fails in one line naming a disk (with several
    disks, one's failure stops the others), nothing is recorded."""
    bed, run, to = started(size=16 << 20, seed=22, more_disks=more_disks)
    state_before = round_then_guest_writes(run, to, 300, seed=5)
    line = refused(run, to, config=outage_after(bed, 10))
    assert line.startswith("vddkpy sync: error: copying [datastore1] vm/vm"
                           ), line
    assert "The host is shutting down" in line
    assert_unchanged_then_repaired(run, to, state_before)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_round_changes_nothing_and_rerun_repairs(
        started, signum):
    bed, run, to = started(size=16 << 20, seed=23)
    sessions = bed.sessions()
    state_before = round_then_guest_writes(run, to, 300, seed=6)
    # Reads of 0.5 s: the signal comes while the disk is being copied.
    proc = run.start_copying(to, 0.5)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum
    word = "interrupted" if signum == signal.SIGINT else "terminated"
    assert one_line(err) == (
        "vddkpy sync: %s: the state is unchanged and the round's snapshot "
        "removed; run it again" % word)
    assert bed.sessions() == sessions
    assert_unchanged_then_repaired(run, to, state_before)


def test_a_plugin_server_that_dies_after_the_copy_fails_the_round(
        started):
    """The plugin's nbdkit of the disk is killed after the last read,
    while VDDK closes the disk: every byte arrived, yet the round fails in
    one line naming it, the state stays, the snapshot goes; the next round
    brings the changes."""
    _, run, to = started(size=4 << 20, seed=41)
    state_before = round_then_guest_writes(run, to, 50, seed=11)
    run.reset_calls()
    # VixDiskLib_Wait comes just before Close, which then takes 60 s.
    proc = run.start(to, extra="latency Close 60000000\n")
    os.kill(run.wait_for_call(proc, ("Wait",))["pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert one_line(err) == ("vddkpy sync: error: the plugin's nbdkit for %s "
                             "was killed by signal 9" % DISK)
    assert_unchanged_then_repaired(run, to, state_before)


@pytest.mark.parametrize("ending, problem", [
    ("echo 'qemu-nbd: error: lost the image' >&2; exit 3",
     "exited with status 3: qemu-nbd: error: lost the image"),
    ("kill -9 $$", "was killed by signal 9")], ids=["status", "killed"])
def test_a_qemu_nbd_that_fails_after_the_copy_fails_the_round(
        started, tmp_path, ending, problem):
    """The qcow2 image's qemu-nbd serves every write of the round, then
    fails as it ends (exit status, or killed): the round fails in one line
    naming it, the state stays, the snapshot goes; the next round brings
    the changes."""
    _, run, to = started(size=4 << 20, seed=44)
    state_before = round_then_guest_writes(run, to, 50, 12, "--format",
                                           "qcow2")
    failing = tmp_path / "bin"
    failing.mkdir()
    # The real qemu-nbd as a child (socket activation names its own pid),
    # then the failure, once it has served the round and ended.
    (failing / "qemu-nbd").write_text(
        "#!/bin/sh\n"
        "sh -c 'LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"' "
        "%s \"$@\"\n%s\n" % (shutil.which("qemu-nbd"), ending))
    (failing / "qemu-nbd").chmod(0o755)
    assert refused(run, to, "--format", "qcow2", env={
        "PATH": "%s:%s" % (failing, os.environ["PATH"])}) == (
        "vddkpy sync: error: qemu-nbd for %s %s" % (to / "vm.qcow2", problem))
    assert_unchanged_then_repaired(run, to, state_before, "qcow2")


def descendants(pid):
    """The processes below ``pid``, now."""
    children = {}
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as f:
                parent = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if entry.isdigit():
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def test_a_killed_round_leaves_its_password_nowhere(started, tmp_path):
    """password= reaches each plugin nbdkit through a pipe it inherits: a
    round killed outright (no clean-up runs) leaves no file holding the
    password in its temporary area, and no child had it on its command
    line."""
    secret = "pw-" + os.urandom(8).hex()
    _, run, to = started(size=4 << 20, seed=42, password=secret)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    proc = run.start_copying(to, 0.5, env={"TMPDIR": str(temporary)})
    command_lines = []
    for pid in descendants(proc.pid):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                command_lines.append(f.read())
        except OSError:
            pass
    proc.kill()
    proc.communicate(timeout=60)
    assert any(b"nbdkit" in line for line in command_lines), command_lines
    assert [line for line in command_lines if secret.encode() in line] == []
    files = [p for p in temporary.rglob("*") if p.is_file()]
    assert files, "the round's logs are in its temporary area"
    assert [p for p in files if secret.encode() in p.read_bytes()] == []


def test_cookie_reaches_the_plugin_on_no_command_line(
        started, syncer, tmp_path):
    """cookie= (a session of the bed's vCenter) reaches each plugin nbdkit
    through a pipe, as password= does: no nbdkit the round starts has it
    on its command line, recorded as each starts (before the plugin's
    re-exec), and VDDK connects with that cookie."""
    bed, _, to = started(size=4 << 20, seed=46)
    session = bed.connect()
    cookie = re.search(r'vmware_soap_session="?([^";]+)',
                       session._stub.cookie)[1]
    run = syncer(bed, "cookie-sync", cookies=[cookie],
                 params=bed.vm_args() + ["cookie=" + cookie])
    recording = tmp_path / "bin"
    recording.mkdir()
    started_with = tmp_path / "nbdkit-command-lines"
    (recording / "nbdkit").write_text(
        "#!/bin/sh\nprintf '%%s\\n' \"$*\" >> %s\nexec %s \"$@\"\n"
        % (started_with, shutil.which("nbdkit")))
    (recording / "nbdkit").chmod(0o755)
    result = run.ok(to, env={"PATH": "%s:%s" % (recording,
                                                  os.environ["PATH"])})
    assert result.stdout == full_copy(to / "vm.raw", 4 << 20)
    assert (to / "vm.raw").read_bytes() == bed.data_path.read_bytes()
    command_lines = started_with.read_text().splitlines()
    assert any(" file=%s" % DISK in line for line in command_lines), \
        command_lines
    assert [line for line in command_lines if cookie in line] == []
    assert [c["cookie"] for c in run.calls("ConnectEx")] == [cookie]


def test_a_failed_first_round_leaves_no_state_and_rerun_repairs(started):
    """The first round fails mid-copy (ESXi's data path down): there is
    still no state file; the image it made stays, a round in another
    format is refused in one line naming the record of that image, and
    the next round takes it and copies the disk whole onto it."""
    size = 16 << 20
    bed, run, to = started(size=size, seed=43)
    # Down after ConnectEx, Open, GetInfo and the first reads.
    line = refused(run, to, config=outage_after(bed, 5))
    assert line.startswith("vddkpy sync: error: copying %s: " % DISK), line
    assert "The host is shutting down" in line
    assert not (to / STATE).exists()
    assert bed.snapshot_morefs() == []
    assert refused(run, to, "--format", "qcow2") == (
        "vddkpy sync: error: %s: .vddkpy-sync.new-images.json (images made "
        "by a round that did not finish) keeps this disk as raw, not qcow2"
        % DISK)
    assert bed.snapshot_morefs() == []
    assert run.ok(to).stdout == full_copy(to / "vm.raw", size)
    assert subprocess.run(["cmp", str(to / "vm.raw"),
                           str(bed.data_path)]).returncode == 0
    assert sorted(p.name for p in to.iterdir()) == [
        ".vddkpy-sync.lock", STATE, "vm.raw"]


def test_an_image_the_record_describes_is_checked_and_refusals_name_it(
        started):
    """The first round fails mid-copy, leaving its image in the record of
    new images: an image resized, replaced or removed since is refused in
    one line naming that record (not the state, which does not exist);
    with the record moved away, the next round copies the disk whole."""
    size = 16 << 20
    bed, run, to = started(size=size, seed=45)
    refused(run, to, config=outage_after(bed, 5))
    image = to / "vm.raw"
    record = (".vddkpy-sync.new-images.json (images made by a round that "
              "did not finish)")
    os.truncate(image, size + (1 << 20))
    assert refused(run, to) == (
        "vddkpy sync: error: %s holds %d bytes, %s says %d: refusing to "
        "write it" % (image, size + (1 << 20), record, size))
    os.truncate(image, size)
    (to / "restored").write_bytes(image.read_bytes())
    (to / "restored").replace(image)
    assert refused(run, to) == (
        "vddkpy sync: error: %s is not the file %s describes (it was "
        "replaced or copied): refusing to write it" % (image, record))
    image.unlink()
    assert refused(run, to) == (
        "vddkpy sync: error: %s is missing, but %s describes it: refusing "
        "to write it" % (image, record))
    assert not (to / STATE).exists()
    assert bed.snapshot_morefs() == []
    (to / ".vddkpy-sync.new-images.json").unlink()
    assert run.ok(to).stdout == full_copy(image, size)
    assert image.read_bytes() == bed.data_path.read_bytes()


@pytest.mark.parametrize("image_format", ["raw", "qcow2"])
def test_grown_disk_grows_the_image_and_copies_the_tail(
        started, libdir, tmp_path, image_format):
    bed, run, to = started(size=4 << 20, seed=24)
    run.ok(to, "--format", image_format)
    bed.grow(9 << 20)
    guest.write(bed, libdir, tmp_path / "guest",
                [((9 << 20) - 700, b"tail" * 100), (5 << 20, b"mid" * 9)])
    run.ok(to, "--format", image_format)
    image = to / ("vm." + image_format)
    assert image_bytes(image, image_format) == bed.data_path.read_bytes()
    state = json.loads((to / STATE).read_text())
    assert state["disks"][DISK]["capacity"] == 9 << 20


def test_change_tracking_reset_copies_whole_with_a_warning(
        started, libdir, tmp_path):
    bed, run, to = started(size=4 << 20, seed=25)
    run.ok(to)
    bed.enable_cbt(False)
    guest.write(bed, libdir, tmp_path / "guest", [(12345, b"r" * 3000)])
    bed.enable_cbt(True)
    result = run.ok(to)
    assert result.stderr.startswith(
        "vddkpy sync: warning: change tracking of %s was reset" % DISK)
    assert "(full copy," in result.stdout
    assert (to / "vm.raw").read_bytes() == bed.data_path.read_bytes()


def test_change_tracking_off_is_one_line_and_enable_cbt_turns_it_on(
        started):
    bed, run, to = started(cbt=False, size=2 << 20, seed=26)
    assert refused(run, to) == (
        "vddkpy sync: error: change tracking is off on VM moref=%s: run "
        "again with --enable-cbt (turns it on; the next round copies every "
        "disk whole)" % bed.vm)
    assert [p.name for p in to.iterdir()] == [".vddkpy-sync.lock"]
    run.ok(to, "--enable-cbt")
    assert bed.vm_object().config.changeTrackingEnabled is True
    assert (to / "vm.raw").read_bytes() == bed.data_path.read_bytes()


def test_two_disk_vm(started, libdir, tmp_path):
    bed, run, to = started(size=4 << 20, seed=27, more_disks=[3 << 20])
    assert run.ok(to).stdout == full_copy(to / "vm.raw", 4 << 20) + \
        full_copy(to / "vm_1.raw", 3 << 20, "[datastore1] vm/vm_1.vmdk")
    guest.write(bed, libdir, tmp_path / "g0", [(100, b"a" * 10)])
    guest.write(bed, libdir, tmp_path / "g1", [(3 << 19, b"b" * 70000)],
                disk=1)
    run.ok(to)
    for disk, image in zip(bed.disks, ("vm.raw", "vm_1.raw")):
        assert (to / image).read_bytes() == disk.data_path.read_bytes()
    assert bed.snapshot_morefs() == []


def test_a_destination_that_is_not_the_states_is_refused(started, tmp_path):
    bed, run, to = started(size=2 << 20, seed=28)
    run.ok(to)
    image = to / "vm.raw"
    os.truncate(image, 3 << 20)             # resized behind our back
    assert refused(run, to) == (
        "vddkpy sync: error: %s holds %d bytes, the state vddkpy-sync.json "
        "says %d: refusing to write it" % (image, 3 << 20, 2 << 20))
    assert image.stat().st_size == 3 << 20
    os.truncate(image, 2 << 20)
    (to / "restored").write_bytes(image.read_bytes())
    (to / "restored").replace(image)        # another file in its place
    assert refused(run, to) == (
        "vddkpy sync: error: %s is not the file the state vddkpy-sync.json "
        "describes (it was replaced or copied): refusing to write it"
        % image)
    assert bed.snapshot_morefs() == []
    image.unlink()
    assert refused(run, to) == (
        "vddkpy sync: error: %s is missing, but the state vddkpy-sync.json "
        "describes it: refusing to write it" % image)
    other = tmp_path / "other"
    other.mkdir()
    (other / "vm.raw").write_bytes(b"precious")
    assert refused(run, other) == (
        "vddkpy sync: error: %s exists and is not in vddkpy-sync.json: move "
        "it away (an image is never overwritten)" % (other / "vm.raw"))
    assert (other / "vm.raw").read_bytes() == b"precious"


def test_progress_json_is_one_object_per_line(started):
    """--progress=json (here with --quiesce): one JSON object per step on
    stdout, the last listing the disks."""
    _, run, to = started(size=2 << 20, seed=29)
    result = run.ok(to, "--progress=json", "--quiesce")
    assert result.stderr == ""
    steps = [json.loads(line) for line in result.stdout.splitlines()]
    names = [s["step"] for s in steps]
    assert names[0] == "snapshot" and names[-2:] == ["snapshot-removed",
                                                     "done"]
    assert "state" in names and "copied" in names
    assert steps[-1]["disks"][0]["image"] == str(to / "vm.raw")
    assert steps[-1]["disks"][0]["bytes_read"] == 2 << 20
    copy = [s for s in steps if s["step"] == "copy"]
    assert copy[-1]["done"] == copy[-1]["total"] == 2 << 20


def test_nbd_target_gets_the_disk_and_its_changes(
        started, libdir, tmp_path):
    """--target DISK=NBD-URI: the copy goes to an existing NBD server
    (here nbdkit's file plugin on a file of other bytes, larger than the
    disk); unchanged areas of a full copy are written as zeros."""
    size = 4 << 20
    bed, run, to = started(size=size)           # holes, then one area
    guest.write(bed, libdir, tmp_path / "guest0", [(70000, b"x" * 9000)])
    target = tmp_path / "target.raw"
    target.write_bytes(b"\xee" * (size + 4096))
    with nbd_uri_of(target) as uri:
        result = run.ok(to, "--target", "%s=%s" % (DISK, uri))
        assert result.stdout == full_copy(uri, GRAIN)
        guest.write(bed, libdir, tmp_path / "guest", [(5000, b"n" * 100)])
        run.ok(to, "--target=%s=%s" % (DISK, uri))
        assert target.read_bytes()[:size] == bed.data_path.read_bytes()
        assert target.read_bytes()[size:] == b"\xee" * 4096
        assert refused(run, to) == (
            "vddkpy sync: error: %s: the state vddkpy-sync.json keeps this "
            "disk in %s: give --target DISK=%s" % (DISK, uri, uri))


def test_nbd_target_without_zero_support_gets_zeros_written(
        started, libdir, tmp_path):
    """An NBD target that cannot zero (nbdkit's nozero filter): the areas
    of a full copy the disk does not use are written as zero bytes."""
    size = 4 << 20
    bed, run, to = started(size=size)
    guest.write(bed, libdir, tmp_path / "guest0", [(70000, b"x" * 9000)])
    target = tmp_path / "target.raw"
    target.write_bytes(b"\xee" * size)
    with nbd_uri_of(target, "nozero") as uri:
        run.ok(to, "--target", "%s=%s" % (DISK, uri))
        assert target.read_bytes() == bed.data_path.read_bytes()


def test_change_id_vsphere_refuses_is_a_full_copy_with_a_warning(
        started, libdir, tmp_path):
    """A changeId vSphere no longer accepts (same tracking id, a sequence
    it does not know) is not an empty delta: the disk is copied whole."""
    bed, run, to = started(size=2 << 20, seed=32)
    run.ok(to)
    state = json.loads((to / STATE).read_text())
    tracking = state["disks"][DISK]["change_id"].rpartition("/")[0]
    state["disks"][DISK]["change_id"] = tracking + "/999999"
    (to / STATE).write_text(json.dumps(state))
    guest.write(bed, libdir, tmp_path / "guest", [(3 << 19, b"q" * 10)])
    assert_copied_whole_with_a_warning(run, to, (
        "%s/999999 of %s (InvalidArgument: A specified parameter was not "
        "correct: changeId)" % (tracking, DISK)))


def test_file_fault_after_a_reset_is_a_full_copy_with_a_warning(
        started, libdir, tmp_path):
    """ESXi answers a changeId from before a change-tracking reset with a
    FileFault: not an empty delta, not a failed round, but the disk copied
    whole with one warning line."""
    bed, run, to = started(size=2 << 20, seed=34)
    run.ok(to)
    since = json.loads((to / STATE).read_text())["disks"][DISK]["change_id"]
    guest.write(bed, libdir, tmp_path / "guest", [(3 << 19, b"f" * 10)])
    bed.set_hostile("raw", calls=1, status=500, body=(
        '<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://'
        'schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/'
        '2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault><faultcode>'
        'ServerFaultCode</faultcode><faultstring>Error caused by file '
        '/vmfs/volumes/ds/vm/vm.vmdk</faultstring><detail><FileFaultFault '
        'xmlns="urn:vim25" xsi:type="FileFault"><file>/vmfs/volumes/ds/vm/'
        'vm.vmdk</file></FileFaultFault></detail></soapenv:Fault>'
        '</soapenv:Body></soapenv:Envelope>'))
    assert_copied_whole_with_a_warning(run, to, (
        "%s of %s (FileFault: Error caused by file /vmfs/volumes/ds/vm/"
        "vm.vmdk)" % (since, DISK)))


def test_disks_are_copied_at_most_four_at_once(started):
    """Each disk is read by its own nbdkit child (one NFC connection):
    never more than four at once, however many disks the VM has."""
    bed, run, to = started(size=1 << 20, seed=33, more_disks=[1 << 20] * 5)
    # Reads of 1 s: the copies of one wave overlap however slow starts are.
    run.ok(to, extra=run.slow_reads(1))
    for disk in bed.disks:
        image = to / (disk.path.stem + ".raw")
        assert image.read_bytes() == disk.data_path.read_bytes()
    spans = {}
    for call in run.calls():
        if call["fn"] in ("ConnectEx", "Disconnect"):
            first, last = spans.get(call["pid"], (call["t0"], call["t1"]))
            spans[call["pid"]] = (min(first, call["t0"]),
                                  max(last, call["t1"]))
    assert len(spans) == 6
    overlap = max(sum(1 for a, b in spans.values() if a <= t < b)
                  for t, _ in spans.values())
    assert 2 <= overlap <= 4


def test_file_picks_one_disk(started):
    bed, run, to = started(size=1 << 20, seed=34, more_disks=[2 << 20])
    second = "[datastore1] vm/vm_1.vmdk"
    result = run.ok(to, params=bed.vm_args() + ["file=" + second])
    assert result.stdout == full_copy(to / "vm_1.raw", 2 << 20, second)
    assert sorted(p.name for p in to.iterdir()) == [
        ".vddkpy-sync.lock", STATE, "vm_1.raw"]
    assert (to / "vm_1.raw").read_bytes() == \
        bed.disks[1].data_path.read_bytes()


def test_progress_bar(started):
    """--progress=bar (the default on a terminal): tqdm's bar of the
    round's bytes, the steps above it."""
    _, run, to = started(size=2 << 20, seed=35)
    result = run.ok(to, "--progress=bar")
    assert "copy: 100%" in result.stderr
    assert "2.00M/2.00M" in result.stderr
    assert "snapshot: moref=snapshot-" in result.stderr
    assert result.stdout == full_copy(to / "vm.raw", 2 << 20)


def test_a_warning_is_one_line_whatever_the_progress(started):
    """Warnings go to stderr once, above the bar if there is one; with
    --progress=json also as a step."""
    bed, run, to = started(size=2 << 20, seed=37)
    run.ok(to)
    warning = "vddkpy sync: warning: change tracking of %s was reset" % DISK
    for progress in ("bar", "json", "none"):
        bed.enable_cbt(False)
        bed.enable_cbt(True)
        result = run.ok(to, "--progress=" + progress)
        said = [line for line in result.stderr.splitlines()
                if "warning:" in line]
        assert len(said) == 1 and said[0].startswith(warning), said
        steps = [json.loads(line) for line in result.stdout.splitlines()
                 if progress == "json"]
        assert [s["message"] for s in steps if s["step"] == "warning"] == (
            [said[0][len("vddkpy sync: warning: "):]]
            if progress == "json" else [])


def test_a_log_out_vsphere_does_not_answer_is_a_warning(started):
    """The round is done; its session stays on vSphere until it times
    out, and the line says so."""
    bed, run, to = started(size=2 << 20, seed=38)
    bed.set_latency("Logout", 3)
    result = run.ok(to)
    assert result.stderr == (
        "vddkpy sync: warning: vSphere %s:%d did not answer the log-out "
        "within 1 s: the session stays on vSphere until it times out\n"
        % (bed.host, bed.port))
    assert (to / "vm.raw").read_bytes() == bed.data_path.read_bytes()


def test_image_is_the_disk_at_the_snapshot_while_the_guest_writes(
        started, libdir, tmp_path):
    """The guest keeps writing during a round: the image is the disk as
    it was when the round's snapshot was taken, and the next round brings
    those writes."""
    size = 8 << 20
    bed, run, to = started(size=size, seed=36)
    round_then_guest_writes(run, to, 100, seed=8)
    at_snapshot = bed.data_path.read_bytes()
    # Reads of 2 s: the round is still copying when the guest is done.
    proc = run.start_copying(to, 2)
    during = guest.scattered_writes(size, 100, seed=9)
    guest.write(bed, libdir, tmp_path / "g2", during)
    assert proc.poll() is None
    out, err = proc.communicate(timeout=300)
    # VDDK ran only in the nbdkit children, never in the process that
    # talks to vSphere with Python's ssl.
    readers = {c["pid"] for c in run.calls()}
    assert readers and proc.pid not in readers
    assert proc.returncode == 0, err
    assert bed.data_path.read_bytes() != at_snapshot
    assert (to / "vm.raw").read_bytes() == at_snapshot
    run.ok(to)
    assert (to / "vm.raw").read_bytes() == bed.data_path.read_bytes()


def test_one_round_at_a_time_in_a_directory(started):
    import fcntl
    bed, run, to = started(size=1 << 20, seed=37)
    with open(to / ".vddkpy-sync.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        busy = refused(run, to)
    assert busy == (
        "vddkpy sync: error: another vddkpy sync is running on %s" % to)
    assert bed.snapshot_morefs() == []
    run.ok(to)


def test_a_snapshot_left_by_a_killed_round_is_named(started):
    bed, run, to = started(size=1 << 20, seed=38)
    left, _ = bed.create_snapshot("vddkpy-sync-1700000000")
    result = run.ok(to)
    assert result.stderr == (
        "vddkpy sync: warning: VM moref=%s has snapshot %s "
        "(vddkpy-sync-1700000000) of a round that did not end: remove it "
        "unless another vddkpy sync of this VM is running\n" % (bed.vm, left))
    assert bed.snapshot_morefs() == [left]


def test_vsphere_lost_before_the_snapshot_is_removed(started):
    """vSphere goes away after the copy is recorded, while the snapshot is
    being removed: one line says which snapshot is left to remove."""
    bed, run, to = started(size=4 << 20, seed=39)
    bed.set_latency("RemoveSnapshot_Task", 60)
    proc = run.start(to)
    deadline = time.monotonic() + 120
    while not (to / STATE).exists() or not json.loads(
            (to / STATE).read_text())["disks"][DISK]["change_id"]:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    snapshot = bed.state["snapshots"][0]["moref"]
    port = bed.port
    bed.stop()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    line = one_line(err)
    assert line.startswith("vddkpy sync: error: cannot reach vSphere "
                           "127.0.0.1:%d: " % port), line
    assert line.endswith(" (remove snapshot %s by hand)" % snapshot), line
    assert (to / "vm.raw").read_bytes() == bed.data_path.read_bytes()


@pytest.mark.parametrize("args, status, line", [
    (["server=h", "--format", "vmdk", "--to", "."], 2,
     "vddkpy sync: error: --format must be raw or qcow2, not vmdk"),
    (["server=h"], 2, "vddkpy sync: error: --to DIR is required"),
    (["--bogus", "--to", "."], 2,
     "vddkpy sync: error: unknown option --bogus"),
    (["--target", "x", "--to", "."], 2,
     "vddkpy sync: error: --target needs DISK=DEVICE or DISK=NBD-URI"),
    (["server=h", "changed-since=*", "--to", "."], 1,
     "vddkpy sync: error: changed-since= is not a sync parameter (a round "
     "chooses its own snapshot and changes)"),
    (["server=h", "cookie_=-3", "--to", "."], 1,
     "vddkpy sync: error: cookie_= is not a sync parameter"),
    (["server=h", "user=u", "password=p", "vm=moref=1", "--to", "."], 1,
     "vddkpy sync: error: sync needs thumbprint= (and user=, password=): "
     "change tracking is vSphere's"),
    (["server=h", "user=u", "cookie=c", "thumbprint=AA", "vm=moref=1",
      "--to", "."], 1,
     "vddkpy sync: error: sync needs user= and password= (also with "
     "cookie=, as the plugin)"),
    (["server=h", "user=u", "password=p", "thumbprint=AA", "vm=vm1",
      "--to", "."], 1,
     "vddkpy sync: error: sync needs vm=moref=ID, not vm=vm1"),
    (["server=h", "user=u", "password=p", "thumbprint=AA", "vm=moref=1",
      "--to", "/nonexistent"], 1,
     "vddkpy sync: error: --to /nonexistent: No such file or directory"),
])
def test_command_line_errors(args, status, line):
    from bed import ROOT
    result = subprocess.run([sys.executable, "-m", "vddkpy.sync"] + args,
                            capture_output=True, text=True, timeout=60,
                            cwd=str(ROOT))
    assert result.returncode == status
    assert result.stderr.splitlines()[0] == line
    assert "Traceback" not in result.stderr


@pytest.fixture
def loop_device(tmp_path):
    """A loop device over a file of 0xee bytes (skipped where loop devices
    cannot be made), detached at the end."""
    backing = tmp_path / "loop.img"
    backing.write_bytes(b"\xee" * (5 << 20))
    made = subprocess.run(["losetup", "-f", "--show", str(backing)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip("no loop device here: %s" % made.stderr.strip())
    device = made.stdout.strip()
    try:
        yield device, backing
    finally:
        subprocess.run(["losetup", "-d", device], check=True)


def test_block_device_target(started, libdir, tmp_path, loop_device):
    """--target DISK=/dev/...: the disk goes to an existing block device
    (never resized; what the disk does not use is written as zeros)."""
    device, backing = loop_device
    size = 4 << 20
    bed, run, to = started(size=size)
    guest.write(bed, libdir, tmp_path / "g0", [(1 << 20, b"d" * 5000)])
    result = run.ok(to, "--target", "%s=%s" % (DISK, device))
    assert result.stdout == full_copy(device, GRAIN)
    guest.write(bed, libdir, tmp_path / "g1", [(size - 100, b"e" * 100)])
    run.ok(to, "--target", "%s=%s" % (DISK, device))
    with open(device, "rb") as f:
        copied = f.read()
    assert copied[:size] == bed.data_path.read_bytes()
    assert copied[size:] == b"\xee" * (1 << 20)
    state = json.loads((to / STATE).read_text())
    assert state["disks"][DISK]["format"] == "device"
    assert state["disks"][DISK]["image"] == device


def test_wrong_thumbprint_sends_no_credential(started):
    bed, run, to = started(size=1 << 20, seed=40)
    bed.reset()
    wrong = "AA:" * 19 + "AA"
    params = [a for a in bed.vm_args() if not a.startswith("thumbprint=")]
    line = refused(run, to, params=params + ["thumbprint=" + wrong])
    assert line.startswith("vddkpy sync: error: vSphere 127.0.0.1:%d has "
                           "certificate thumbprint %s, not thumbprint=%s"
                           % (bed.port, bed.thumbprint, wrong)), line
    assert bed.calls("Login") == 0
    assert list(to.iterdir()) == [to / ".vddkpy-sync.lock"]
