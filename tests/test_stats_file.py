"""Issue 14.2: stats-file= is checked before serving (one error line, exit
status 1) and written at exit to a new 0600 file renamed over the target,
never through a symbolic link, never over the served disk."""

import json
import os
import stat

import pytest

from conftest import (assert_no_traceback, error_lines, random_file,
                      run_nbdkit)

TIMEOUT = 5       # the FIFO case once blocked nbdkit's exit for ever


def refused(tmp_path, libdir, target, extra=(), disk=None):
    disk = disk or random_file(tmp_path / "disk.raw", 65536)
    before = disk.read_bytes() if disk.exists() else None
    result = run_nbdkit(tmp_path, libdir,
                        ["file=%s" % disk, "stats-file=%s" % target]
                        + list(extra),
                        run="touch %s" % (tmp_path / "served"),
                        verbose=False, timeout=TIMEOUT)
    assert result.returncode == 1, result.stderr
    assert_no_traceback(result.stderr)
    assert not (tmp_path / "served").exists()
    (line,) = result.stderr.splitlines()
    assert error_lines(result.stderr) == [line]
    if before is not None:
        assert disk.read_bytes() == before
    return line


def test_missing_directory(tmp_path, libdir):
    target = tmp_path / "nowhere" / "stats.json"
    assert refused(tmp_path, libdir, target) == (
        "nbdkit: error: stats-file: %s: %s: No such file or directory"
        % (target, target.parent))


def test_parent_is_a_file(tmp_path, libdir):
    parent = random_file(tmp_path / "file", 10)
    target = parent / "stats.json"
    assert refused(tmp_path, libdir, target) == (
        "nbdkit: error: stats-file: %s: %s: Not a directory"
        % (target, parent))


def test_directory(tmp_path, libdir):
    target = tmp_path / "dir"
    target.mkdir()
    assert refused(tmp_path, libdir, target) == (
        "nbdkit: error: stats-file: %s: Is a directory" % target)
    assert refused(tmp_path, libdir, str(target) + "/").endswith(
        ": Is a directory")


def test_fifo(tmp_path, libdir):
    target = tmp_path / "fifo"
    os.mkfifo(target)
    assert refused(tmp_path, libdir, target) == (
        "nbdkit: error: stats-file: %s: is not a regular file" % target)


@pytest.mark.parametrize("dangling", [False, True])
def test_symlink_is_not_followed(tmp_path, libdir, dangling):
    victim = tmp_path / "victim"
    if not dangling:
        victim.write_text("precious\n")
    target = tmp_path / "stats.json"
    target.symlink_to(victim)
    assert refused(tmp_path, libdir, target) == (
        "nbdkit: error: stats-file: %s: is a symbolic link (not followed)"
        % target)
    assert target.is_symlink()
    if dangling:
        assert not victim.exists()
    else:
        assert victim.read_text() == "precious\n"


def test_served_disk(tmp_path, libdir):
    disk = random_file(tmp_path / "disk.raw", 65536)
    message = "nbdkit: error: stats-file: %s: is the disk being served " \
              "(file=)"
    assert refused(tmp_path, libdir, disk, disk=disk) == message % disk
    # The same inode under another name.
    link = tmp_path / "hardlink"
    os.link(disk, link)
    assert refused(tmp_path, libdir, link, disk=disk) == message % link


def test_disk_to_be_created(tmp_path, libdir):
    disk = tmp_path / "new.vmdk"
    line = refused(tmp_path, libdir, disk, disk=disk,
                   extra=["create=true", "create-size=1M"])
    assert line.endswith("is the disk being served (file=)")
    assert not disk.exists()


def run_with_stats(tmp_path, libdir, target, run="nbdinfo --size \"$uri\""):
    disk = random_file(tmp_path / "disk.raw", 65536)
    result = run_nbdkit(tmp_path, libdir,
                        ["file=%s" % disk, "stats-file=%s" % target],
                        run=run, verbose=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return json.loads(target.read_text())["functions"]


def test_written_by_rename_with_mode_0600(tmp_path, libdir):
    target = tmp_path / "stats" / "stats.json"
    target.parent.mkdir()
    target.write_text("old\n")
    target.chmod(0o644)
    old_inode = target.stat().st_ino
    functions = run_with_stats(tmp_path, libdir, target)
    assert functions["Open"]["calls"] == 1
    written = target.stat()
    assert stat.S_IMODE(written.st_mode) == 0o600
    assert written.st_ino != old_inode
    assert os.listdir(target.parent) == ["stats.json"]


def test_link_planted_while_serving_is_replaced(tmp_path, libdir):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "stats.json"
    functions = run_with_stats(tmp_path, libdir, target,
                               run="ln -s %s %s" % (victim, target))
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink()
    assert functions["InitEx"]["calls"] == 1
