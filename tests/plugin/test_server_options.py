"""nbdkit's command line read as the server under test reads it: its
version, and an option that differs between versions, end to end
(tests/unit/test_cmdline.py has the rules themselves)."""

import subprocess

import pytest

from bed import run_nbdkit, server_version


def test_server_version_of_the_server_under_test():
    out = subprocess.run(["nbdkit", "--version"], capture_output=True,
                         text=True, check=True).stdout
    assert "nbdkit %d.%d.%d" % server_version() in out


@pytest.mark.parametrize("option", ["--keepalive", "--keep"])
def test_keepalive_end_to_end(tmp_path, libdir, option):
    if server_version() < (1, 41, 6):
        pytest.skip("nbdkit %d.%d.%d has no --keepalive" % server_version())
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(1024 * 1024))
    # Read as taking an argument, the option would swallow -v.
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % disk], verbose=False,
                        options=[option, "-v", "-D", "vddk.stats=1"],
                        run='nbdcopy "$uri" null:')
    assert result.returncode == 0, result.stderr
    assert "VDDK function stats (-D vddk.stats=1):" in result.stderr
