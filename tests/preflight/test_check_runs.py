"""``vddkpy check`` checks the run it is given: its transports= (FAIL when
none can work), a read-write run's write access, a warm migration's
options (-r, changed-since=, snapshot=: change tracking on at the
snapshot, the changeId accepted); and names the cause of Error 13 over
hotadd and of a removed snapshot."""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from bed import ROOT, install_standin, random_file, standin_env
from test_check import (DISK, NO_SCSI_DISK, digest, host, lines,  # noqa
                        plugin_errors, remote, run_check, serve_remote,
                        step)


def test_no_transport_of_transports_can_work(tmp_path, remote):
    """transports=san where san cannot reach anything: the run would fail
    (Error 13), so the check FAILs, with the modes that work."""
    args, config, data, before, _ = remote(args=["transports=san"])
    result = run_check(tmp_path, args, config)
    assert result.returncode == 1, result.stdout
    if NO_SCSI_DISK:
        assert step(result, "transports") == (
            "FAIL transports: no mode of transports=san can work here: san "
            "reaches the datastore's LUNs through this machine's SCSI disks, "
            "and it has none (no /sys/class/scsi_disk); fix: "
            "transports=nbdssl:nbd")
    else:
        assert step(result, "disk over san").startswith("FAIL disk over san")
    assert digest(data) == before


def test_hotadd_on_a_stopped_vm_names_hotadd(tmp_path, remote):
    """Error 13 over hotadd alone is about where nbdkit runs, not about a
    running VM: the check's fix and the plugin's hint say so."""
    args, config, data, before, _ = remote(args=["transports=hotadd"])
    result = run_check(tmp_path, args, config)
    fix = ("Error 13 with transports=hotadd: hotadd works only where nbdkit "
           "runs in a VM (a backup proxy) on an ESXi host that sees the "
           "disk's datastore; try transports=nbdssl:nbd")
    assert step(result, "disk over hotadd") == (
        "FAIL disk over hotadd: VixDiskLib_Open: %s: You do not have access "
        "rights to this file; fix: %s" % (DISK, fix))
    assert result.returncode == 1
    served, _ = serve_remote(tmp_path, remote, ["transports=hotadd"])
    assert plugin_errors(served)[-1] == "hint: " + fix


def _readonly_mount_run(tmp_path, directory, command):
    script = ('mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && '
              'shift && exec "$@"')
    return subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", str(directory)]
        + command, cwd=ROOT, capture_output=True, text=True,
        env=standin_env(tmp_path), timeout=120)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare")
def test_read_write_run_checks_write_access(tmp_path, libdir):
    """Without -r the plugin opens the disk for writing: a disk it can
    read but not write FAILs the write step; with -r the check is ok."""
    directory = tmp_path / "disks"
    directory.mkdir()
    disk = random_file(directory / "disk.raw", 1 << 20)
    before = digest(disk)
    command = [sys.executable, "-m", "vddkpy", "check",
               "libdir=%s" % libdir, "file=%s" % disk]
    result = _readonly_mount_run(tmp_path, directory, command)
    assert result.returncode == 1, result.stdout + result.stderr
    assert step(result, "disk").startswith("ok   disk: ")
    assert step(result, "write") == (
        "FAIL write: VixDiskLib_Open: %s: The file is write-protected (opening "
        "it for writing, as nbdkit without -r does); fix: the disk can be "
        "read but not written: give the user nbdkit runs as (on the file and "
        "its filesystem) write access, or run nbdkit with -r (read-only, all "
        "a copy from the disk needs) and check with -r" % disk)
    readonly = _readonly_mount_run(tmp_path, directory,
                                   command[:4] + ["-r"] + command[4:])
    assert readonly.returncode == 0, readonly.stdout + readonly.stderr
    assert not [line for line in lines(readonly)
                if line[5:].startswith("write")]
    writable = run_check(tmp_path, command[4:])
    assert step(writable, "write") == (
        "ok   write: %s opens for writing (nothing was written)" % disk)
    assert digest(disk) == before


# -- warm migrations, against the simulated vCenter -----------------------

@pytest.fixture
def warm(tmp_path, libdir, vcsim):
    """(the vcsim bed, a function running the check on it with more
    arguments and options)."""
    bed = vcsim()
    nfc = socket.create_server(("127.0.0.1", 0))
    nfc_port = nfc.getsockname()[1]

    def check(*more, options=("-r",)):
        config = bed.standin_config().replace(
            "  vm moref", "  nfc_port %d\n  vm moref" % nfc_port)
        args = bed.plugin_args() + ["libdir=%s" % libdir, "transports=nbd",
                                    "nfchostport=%d" % nfc_port]
        return run_check(tmp_path, args + list(more), config,
                         options=options)
    yield bed, check
    nfc.close()


def test_warm_migration_is_checked(warm):
    """-r and changed-since= are the run's options: the check accepts
    them, reads the disk at the snapshot and asks vSphere about the
    changeId."""
    bed, check = warm
    bed.enable_cbt()
    snapshot, change_id = bed.create_snapshot()
    full = check("snapshot=%s" % snapshot, "changed-since=*")
    assert full.returncode == 0, full.stdout + full.stderr
    assert step(full, "cbt") == (
        "ok   cbt: changed block tracking is on at snapshot=%s; the disk's "
        "changeId is %s" % (snapshot, change_id))
    delta = check("snapshot=%s" % snapshot, "changed-since=%s" % change_id)
    assert delta.returncode == 0, delta.stdout + delta.stderr
    assert step(delta, "cbt") == (
        "ok   cbt: changed block tracking is on at snapshot=%s; the disk's "
        "changeId is %s; vSphere accepts changed-since=%s"
        % (snapshot, change_id, change_id))


def test_snapshot_taken_before_tracking_was_enabled(warm):
    """Tracking enabled after the snapshot: the snapshot's disk has no
    changeId, so the warm copy from it fails; the check FAILs."""
    bed, check = warm
    snapshot, _ = bed.create_snapshot()
    bed.enable_cbt()
    result = check("snapshot=%s" % snapshot, "changed-since=*")
    assert result.returncode == 1, result.stdout + result.stderr
    assert step(result, "cbt") == (
        "FAIL cbt: changed block tracking is not enabled on %s of VM "
        "moref=%s snapshot %s: each warm-migration pass would copy the whole "
        "disk; fix: enable it (ReconfigVM_Task with changeTrackingEnabled="
        "true, or the VM option ctkEnabled=TRUE), take a snapshot, and make "
        "a full copy with changed-since=*" % (bed.disk_file, bed.vm,
                                              snapshot))


def test_change_id_vsphere_refuses(warm):
    bed, check = warm
    bed.enable_cbt()
    snapshot, _ = bed.create_snapshot()
    result = check("snapshot=%s" % snapshot, "changed-since=52 00 00/9")
    assert result.returncode == 1, result.stdout + result.stderr
    # The whole line: the message says what to do, no other fix after it.
    assert step(result, "cbt") == (
        "FAIL cbt: changed-since=52 00 00/9: vSphere refused this changeId "
        "for %s (InvalidArgument: A specified parameter was not correct: "
        "changeId): it is not one of this disk's or has expired (change "
        "tracking was reset): a full copy is needed: make one with "
        "changed-since=* and use the changeId it reports" % bed.disk_file)


def test_refused_change_id_escaped_once(warm):
    """A changeId with a DEL and a backslash (both valid in vSphere's XML):
    the plugin's message has them escaped, and the check's line shows them
    so once (``\\x7f``, not ``\\\\x7f``)."""
    bed, check = warm
    bed.enable_cbt()
    snapshot, _ = bed.create_snapshot()
    result = check("snapshot=%s" % snapshot, "changed-since=52\\00\x7f/9")
    assert result.returncode == 1, result.stdout + result.stderr
    assert step(result, "cbt").startswith(
        "FAIL cbt: changed-since=52\\\\00\\x7f/9: vSphere refused this "
        "changeId for %s (" % bed.disk_file)


def test_cbt_step_names_a_disk_the_vm_does_not_have(warm):
    """file= that is none of the VM's disks: the cbt step lists them and
    says what file= must be."""
    bed, check = warm
    bed.enable_cbt()
    result = check("file=[datastore1] vm/other.vmdk", "changed-since=*")
    assert result.returncode == 1, result.stdout + result.stderr
    assert step(result, "cbt") == (
        "FAIL cbt: VM moref=%s has no disk whose backing file is [datastore1] "
        "vm/other.vmdk (its disks: %s); fix: file= names the disk as the "
        "VM's configuration does" % (bed.vm, bed.disk_file))


def test_removed_snapshot(warm):
    """A snapshot removed since: the fix says so (not only what a moref
    looks like)."""
    bed, check = warm
    snapshot, _ = bed.create_snapshot()
    bed.remove_snapshot(snapshot)
    result = check("snapshot=%s" % snapshot)
    assert result.returncode == 1, result.stdout + result.stderr
    assert step(result, "snapshot") == (
        "FAIL snapshot: snapshot=%s: The snapshot does not exist; fix: "
        "snapshot= names no snapshot of this VM now: one removed since (take "
        "a new snapshot and pass its reference), or not a managed object "
        "reference (snapshot-NN)" % snapshot)


def test_every_step_ok_on_the_bed(warm):
    """The project's bed (the simulated vCenter, VDDK 8's stand-in), set
    up for a warm migration: every step is ok (but install, where vddkpy
    is not nbdkit's vddk plugin)."""
    bed, check = warm
    bed.enable_cbt()
    snapshot, _ = bed.create_snapshot()
    result = check("snapshot=%s" % snapshot, "changed-since=*")
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [line[5:].split(":")[0] for line in lines(result)]
    assert steps == ["install", "parameters", "library", "load", "init",
                     "api-port", "thumbprint", "version", "nfc-port",
                     "login", "vm", "snapshot", "disk over nbd", "cbt"]
    assert [line for line in lines(result) if not line.startswith("ok ")] \
        == [lines(result)[0]], result.stdout


@pytest.mark.parametrize("version, verdict", [
    ("8.0.2", "ok   version: VMware ESXi 8.0.2 build-1; VDDK 8 supports "
              "vSphere 6.7 to 9.0"),
    ("6.5.0", "FAIL version: VMware ESXi 6.5.0 build-1; VDDK 8 supports "
              "vSphere 6.7 to 9.0; it is too old (VDDK opens disks there but "
              "fails reading them); fix: use VDDK 7.0"),
])
def test_version_of_the_bed(tmp_path, libdir, vcsim, version, verdict):
    """The bed reports the vSphere version it is given: the version step
    passes and fails against it."""
    bed = vcsim(version=version)
    result = run_check(tmp_path, bed.plugin_args()
                       + ["libdir=%s" % libdir, "transports=nbd"],
                       bed.standin_config(), options=["-r"])
    assert step(result, "version") == verdict


def test_changed_since_without_r_says_how_to_check(warm):
    bed, check = warm
    result = check("changed-since=*", options=())
    assert result.returncode == 1
    assert step(result, "parameters") == (
        "FAIL parameters: changed-since serves a read-only export: run "
        "nbdkit with -r (--readonly); fix: correct them: the plugin refuses "
        "them the same way; a read-only run is checked with vddkpy check -r")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become nobody")
def test_run_as_another_user(tmp_path):
    """-u nobody, as the run's nbdkit -u: the library is loaded as root,
    then the steps run as nobody, who may read the disk but not write
    it: the write step fails as the run would."""
    top = Path(tempfile.mkdtemp(prefix="vddkpy-check-"))
    try:
        os.chmod(top, 0o755)
        libdir = install_standin(top / "vddk")
        disk = random_file(top / "disk.raw", 1 << 20)
        os.chmod(disk, 0o644)
        log = tmp_path / "calls.jsonl"
        log.touch()
        os.chmod(log, 0o666)
        os.chmod(tmp_path, 0o755)
        result = run_check(tmp_path, ["libdir=%s" % libdir, "file=%s" % disk],
                           options=["-u", "nobody"])
        assert result.returncode == 1, result.stdout + result.stderr
        assert step(result, "user") == (
            "ok   user: the steps below run as uid 65534 gid 65534, as "
            "nbdkit -u/-g serves")
        assert step(result, "disk").startswith("ok   disk: ")
        assert step(result, "write").startswith(
            "FAIL write: VixDiskLib_Open: %s: You do not have access rights "
            "to this file (opening it for writing, as nbdkit without -r "
            "does); fix: the disk can be read but not written" % disk)
    finally:
        shutil.rmtree(top)
