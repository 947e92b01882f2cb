"""changed-since= against the test bed (tests/vcsim.py: govmomi's vcsim
as the ESXi host, the VDDK stand-in serving the VM's disk, the stand-in
recording what is written so vcsim reports it as changed)."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, assert_no_traceback, error_lines


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


def changed_areas(bed, *args, password=None):
    return subprocess.run(
        [sys.executable, "-m", "vddkpy", "changed-areas",
         *bed.plugin_args(password), *args],
        capture_output=True, text=True, cwd=ROOT, timeout=120)


# -- refusals ------------------------------------------------------------------

def test_cbt_not_enabled(vcsim, nbdkit):
    bed = vcsim(size=4 << 20)
    assert open_error(nbdkit, bed, "changed-since=*") == (
        "changed-since: changed block tracking is not enabled on "
        "[datastore1] vm/vm.vmdk of VM moref=%s: enable it (ReconfigVM_Task "
        "with changeTrackingEnabled=true, or the VM option ctkEnabled=TRUE), "
        "take a snapshot, and make a full copy with changed-since=*" % bed.vm)


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
