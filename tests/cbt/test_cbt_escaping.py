"""Text in changed-since='s messages that vSphere, a client or the operator
chose (a changeId, an export name, a user name) is escaped: a newline
cannot forge an ``nbdkit: ... error:`` line, DEL, C1 controls and bidi
overrides show as escapes."""

import shutil
import subprocess
import sys

import pytest

from bed import ROOT, assert_no_traceback, error_lines

MiB = 1 << 20
FORGED = "\nnbdkit: python[1]: error: forged\x7f\x85\u202e"
SHOWN = "\\nnbdkit: python[1]: error: forged\\x7f\\x85\\u202e"


def only_error_line(server):
    lines = error_lines(server.stderr)
    assert_no_traceback(server.stderr)
    assert not [line for line in server.stderr.splitlines()
                if line.startswith("nbdkit: python[1]: error: forged")]
    assert len(lines) == 1, server.stderr
    return lines[0].split(": open: error: ", 1)[1]


def tracked_bed(vcsim):
    bed = vcsim(size=8 * MiB)
    bed.enable_cbt()
    snapshot, _ = bed.create_snapshot("s0")
    bed.reset()
    return bed, snapshot


def test_a_change_id_is_escaped(vcsim, nbdkit):
    import nbd
    bed, snapshot = tracked_bed(vcsim)
    server = nbdkit(*bed.plugin_args(), "changed-since=52 00" + FORGED + "/1",
                    "snapshot=" + snapshot, config=bed.standin_config(),
                    readonly=True, verbose=False)   # -v: nbdkit's own echo
    with pytest.raises(nbd.Error):
        server.connect()
    server.stop()
    assert only_error_line(server) == (
        "changed-since=52 00%s/1: vSphere refused this changeId for "
        "[datastore1] vm/vm.vmdk (InvalidArgument: A specified parameter "
        "was not correct: changeId): it is not one of this disk's or has "
        "expired (change tracking was reset): a full copy is needed: make "
        "one with changed-since=* and use the changeId it reports" % SHOWN)


def test_a_client_chosen_export_name_is_escaped(vcsim, nbdkit):
    import nbd
    bed, snapshot = tracked_bed(vcsim)
    name = "x" + FORGED + ".vmdk"
    # snapshot= reads the disk's files as frozen by the snapshot.
    frozen = bed.snapshot_data_path(snapshot).parent
    shutil.copy(bed.disk_path, frozen / name)
    args = [a for a in bed.plugin_args() if not a.startswith("file=")]
    server = nbdkit(*args, "export=*", "changed-since=*",
                    "snapshot=" + snapshot, config=bed.standin_config(),
                    readonly=True, verbose=False)
    with pytest.raises(nbd.Error):
        server.connect(export="[datastore1] vm/" + name)
    server.stop()
    assert only_error_line(server) == (
        "changed-since: VM moref=%s snapshot %s has no disk whose backing "
        "file is [datastore1] vm/x%s.vmdk (its disks: [datastore1] "
        "vm/vm.vmdk)" % (bed.vm, snapshot, SHOWN))


def test_a_user_name_is_escaped(vcsim):
    bed, _ = tracked_bed(vcsim)
    args = [a if not a.startswith("user=") else "user=root" + FORGED
            for a in bed.plugin_args()]
    result = subprocess.run(
        [sys.executable, "-m", "vddkpy", "changed-areas", *args,
         "changed-since=*"], capture_output=True, text=True, cwd=ROOT,
        timeout=120)
    assert result.returncode == 1
    assert result.stderr.startswith(
        "vddkpy: error: vSphere %s:%d refused the login of user root%s: "
        % (bed.host, bed.port, SHOWN))
    assert len(result.stderr.splitlines()) == 1, result.stderr
