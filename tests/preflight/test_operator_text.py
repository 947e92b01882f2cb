"""Operator parameters quoted in the plugin's error lines (compression=,
create-type=, create-adapter-type=, create-hwversion=, the vm= of
changed-since=, the export= wildcard) cannot forge lines or drive the
terminal: an ESC and a newline show as escapes, once, in the plugin's
line and in ``vddkpy check``'s."""

import subprocess
import sys

import nbd
import pytest

from bed import (REMOTE, ROOT, THUMB, random_file, random_vmdk, run_nbdkit,
                 server_config, standin_env)

HOSTILE = "x\x1b[31m\nnbdkit: error: forged"
SHOWN = "x\\x1b[31m\\nnbdkit: error: forged"


@pytest.mark.parametrize("key, message", [
    ("compression", "unknown compression type: %s"),
    ("create-type", "unknown create-type: %s"),
    ("create-adapter-type", "unknown create-adapter-type: %s"),
    ("create-hwversion", "unknown create-hwversion: %s"),
])
def test_word_parameters(tmp_path, libdir, key, message):
    disk = random_file(tmp_path / "disk.raw", 1 << 20)
    args = ["file=%s" % disk, "%s=%s" % (key, HOSTILE)]
    result = run_nbdkit(tmp_path, libdir, args, verbose=False)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].endswith(
        "error: " + message % SHOWN), result.stderr
    assert "\x1b" not in result.stderr
    check = subprocess.run(
        [sys.executable, "-m", "vddkpy", "check", "libdir=%s" % libdir]
        + args, cwd=ROOT, capture_output=True, text=True,
        env=standin_env(tmp_path), timeout=120)
    assert check.returncode == 1
    assert check.stderr.strip().endswith(message % SHOWN), check.stderr
    assert "\x1b" not in check.stdout + check.stderr


def test_changed_since_vm(tmp_path, libdir):
    args = ["server=esxi.example.com", "user=root", "password=sekret",
            "thumbprint=AA", "file=[ds] d.vmdk", "changed-since=*",
            "vm=%s" % HOSTILE]
    result = run_nbdkit(tmp_path, libdir, args, options=["-r"],
                        verbose=False)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].endswith(
        "error: changed-since needs vm=moref=ID, not vm=%s" % SHOWN), \
        result.stderr
    assert "\x1b" not in result.stderr


def test_export_wildcard_in_access_denied(tmp_path, nbdkit):
    """Any client's name that does not match makes the plugin quote the
    wildcard (built by tools such as virt-v2v from vCenter data)."""
    datastore = tmp_path / "datastore1"
    (datastore / "Fedora").mkdir(parents=True)
    random_vmdk(datastore / "Fedora" / "a.vmdk", 65536)
    wildcard = r"\[datastore1\] %s*" % HOSTILE
    server = nbdkit(*REMOTE, "thumbprint=%s" % THUMB, "export=" + wildcard,
                    config=server_config(datastore), verbose=False)
    with pytest.raises(nbd.Error):
        server.connect(export="[datastore1] Fedora/a.vmdk")
    server.stop()
    assert ('which does not match export="%s"' % (
        r"\\[datastore1\\] %s*" % SHOWN)) in server.stderr, server.stderr
    assert "\x1b" not in server.stderr
