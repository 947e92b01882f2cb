"""stats-file= is checked before serving (one error line, exit status 1)
and again right before it is written at exit,
to a new 0600 file renamed over the target: never through a symbolic link,
never over a file of the served disk (descriptor, extents, parent chain,
create=true's files, whatever the spelling), never over a file that is not
a previous vddkpy statistics document.  (tests/unit/test_statsfile.py has
the rules and the last moment before the rename.)"""

import hashlib
import json
import os
import stat
import subprocess

import pytest

from bed import (assert_no_traceback, error_lines, random_file,
                      random_vmdk, run_nbdkit)

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


def run_with_stats(tmp_path, libdir, target, run="nbdinfo --size \"$uri\"",
                   stderr=""):
    disk = random_file(tmp_path / "disk.raw", 65536)
    result = run_nbdkit(tmp_path, libdir,
                        ["file=%s" % disk, "stats-file=%s" % target],
                        run=run, verbose=False)
    assert result.returncode == 0, result.stderr
    assert result.stderr == stderr
    if stderr:
        return None
    document = json.loads(target.read_text())
    assert document["format"] == "vddkpy-stats/1"
    return document["functions"]




# -- what may be replaced ----------------------------------------------------

def stats_document(tmp_path, libdir):
    """A statistics document as vddkpy writes it (from a real run)."""
    target = tmp_path / "previous.json"
    run_with_stats(tmp_path, libdir, target)
    return target.read_text()


def test_previous_stats_document_is_replaced(tmp_path, libdir):
    target = tmp_path / "stats" / "stats.json"
    target.parent.mkdir()
    target.write_text(stats_document(tmp_path, libdir))
    target.chmod(0o644)
    old_inode = target.stat().st_ino
    functions = run_with_stats(tmp_path, libdir, target)
    assert functions["Open"]["calls"] == 1
    written = target.stat()
    assert stat.S_IMODE(written.st_mode) == 0o600
    assert written.st_ino != old_inode
    assert os.listdir(target.parent) == ["stats.json"]


NOT_STATS = [
    b"precious\n", b"", b"{}", b"[]", b'{"functions": {}, "mine": 1}',
    b'{"format": "other/1", "functions": {}}',
    b'{"functions": {"Open": {"us": 1, "calls": 1, "bytes": 0}}}',
    # The shape of a document without "format" (never released).
    b'{"functions": {"Open": {"us": 12, "calls": 1, "bytes": 0, '
    b'"latency_us": {"p50": 12, "p90": 12, "p99": 12, "max": 12}}}}',
    b"\x00\xff" * 100, b"[" * 100000,
]


@pytest.mark.parametrize("content", NOT_STATS, ids=range(len(NOT_STATS)))
def test_existing_file_that_is_not_stats_is_refused(tmp_path, libdir,
                                                    content):
    target = tmp_path / "notes.txt"
    target.write_bytes(content)
    assert refused(tmp_path, libdir, target) == (
        "nbdkit: error: stats-file: %s: exists and is not a vddkpy "
        "statistics document (not replaced)" % target)
    assert target.read_bytes() == content


def test_file_swapped_in_while_serving_is_not_replaced(tmp_path, libdir):
    target = tmp_path / "stats.json"
    target.write_text(stats_document(tmp_path, libdir))
    # What the command puts there replaces the document that was checked.
    swap = "printf precious > %s.new && mv %s.new %s" % ((target,) * 3)
    run_with_stats(tmp_path, libdir, target, run=swap, stderr=(
        "nbdkit: error: stats-file: %s: exists and is not a vddkpy "
        "statistics document (not replaced); statistics not written\n"
        % target))
    assert target.read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["calls.jsonl", "disk.raw", "previous.json", "stats.json", "vddk"])


def test_link_planted_while_serving_is_left_alone(tmp_path, libdir):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "stats.json"
    run_with_stats(tmp_path, libdir, target,
                   run="ln -s %s %s" % (victim, target), stderr=(
                       "nbdkit: error: stats-file: %s: is a symbolic link "
                       "(not followed); statistics not written\n" % target))
    assert victim.read_text() == "precious\n"
    assert os.readlink(target) == str(victim)


# -- never a file of the served disk -----------------------------------------

def digests(*paths):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in paths}


def served_bytes(tmp_path, libdir, disk):
    out = tmp_path / "copy.raw"
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % disk], options=["-r"],
                        run='nbdcopy "$uri" %s' % out, verbose=False)
    assert result.returncode == 0, result.stderr
    data = out.read_bytes()
    out.unlink()
    return data


def refused_for_disk(tmp_path, libdir, disk, target, files, role):
    """stats-file=target is refused as ``role`` of ``disk`` (one line, exit
    status 1), and every file of the disk is as it was, read back through
    the plugin too."""
    before = digests(*files)
    original = served_bytes(tmp_path, libdir, disk)
    line = refused(tmp_path, libdir, target, disk=disk)
    assert line == "nbdkit: error: stats-file: %s: is %s (file=)" % (
        os.path.abspath(target), role)      # as params spells it (abspath)
    assert digests(*files) == before
    assert served_bytes(tmp_path, libdir, disk) == original


def test_data_extent_of_a_flat_vmdk(tmp_path, libdir):
    vm = tmp_path / "vm"
    vm.mkdir()
    disk = vm / "disk.vmdk"
    extent = random_vmdk(disk, 65536)
    for target in (extent, vm / "." / "disk-flat.vmdk",
                   tmp_path / "vm" / ".." / "vm" / "disk-flat.vmdk"):
        refused_for_disk(tmp_path, libdir, disk, target, [disk, extent],
                         "an extent of the disk being served")
    os.link(extent, tmp_path / "other-name")
    refused_for_disk(tmp_path, libdir, disk, tmp_path / "other-name",
                     [disk, extent], "an extent of the disk being served")


def qemu_img(*args, cwd):
    subprocess.run(["qemu-img"] + [str(a) for a in args], check=True,
                   capture_output=True, cwd=cwd)


def qemu_chain(vm):
    """base.vmdk (monolithicFlat: base-flat.vmdk) and child.vmdk
    (twoGbMaxExtentSparse: child-s001.vmdk) on it, made by qemu-img; and
    top.vmdk (monolithicSparse, its descriptor embedded) on child.vmdk.
    Returns (top, every file)."""
    random_file(vm / "base.raw", 1024 * 1024, seed=5)
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o",
             "subformat=monolithicFlat", "base.raw", "base.vmdk", cwd=vm)
    (vm / "base.raw").unlink()
    qemu_img("create", "-f", "vmdk", "-o", "subformat=twoGbMaxExtentSparse",
             "-b", "base.vmdk", "-F", "vmdk", "child.vmdk", cwd=vm)
    qemu_img("create", "-f", "vmdk", "-b", "child.vmdk", "-F", "vmdk",
             "top.vmdk", cwd=vm)
    subprocess.run(["qemu-io", "-f", "vmdk", "-c", "write -P 0x55 64k 64k",
                    "top.vmdk"], check=True, capture_output=True, cwd=vm)
    files = [vm / n for n in ("top.vmdk", "child.vmdk", "child-s001.vmdk",
                              "base.vmdk", "base-flat.vmdk")]
    assert sorted(os.listdir(vm)) == sorted(f.name for f in files)
    return vm / "top.vmdk", files


@pytest.mark.parametrize("name, role", [
    ("child.vmdk", "a parent of the disk being served"),
    ("base.vmdk", "a parent of the disk being served"),
    ("child-s001.vmdk", "an extent of a parent of the disk being served"),
    ("base-flat.vmdk", "an extent of a parent of the disk being served"),
    ("top.vmdk", "the disk being served"),
])
def test_parent_chain(tmp_path, libdir, name, role):
    vm = tmp_path / "vm"
    vm.mkdir()
    top, files = qemu_chain(vm)
    (tmp_path / "link").symlink_to(vm)
    refused_for_disk(tmp_path, libdir, top, tmp_path / "link" / name, files,
                     role)


@pytest.mark.parametrize("create_type, name", [
    ("monolithic-sparse", "new.vmdk"),
    ("stream-optimized", "new.vmdk"),
    ("monolithic-flat", "new-flat.vmdk"),
    ("vmfs-flat", "new-flat.vmdk"),
    ("vmfs-thin", "new-flat.vmdk"),
    ("split-sparse", "new-s001.vmdk"),
    ("split-flat", "new-f001.vmdk"),
    ("vmfs-sparse", "new-delta.vmdk"),
])
def test_files_create_will_make(tmp_path, libdir, create_type, name):
    vm = tmp_path / "vm"
    vm.mkdir()
    (tmp_path / "link").symlink_to(vm)
    disk = vm / "new.vmdk"
    create = ["create=true", "create-size=1M", "create-type=" + create_type]
    role = "the disk being served" if name == "new.vmdk" \
        else "a file that create=true will make"
    line = refused(tmp_path, libdir, tmp_path / "link" / name, disk=disk,
                   extra=create)
    assert line == "nbdkit: error: stats-file: %s: is %s (file=)" % (
        tmp_path / "link" / name, role)
    assert os.listdir(vm) == []
    # The name is the one Create gives (here: the stand-in's, VMware's).
    result = run_nbdkit(tmp_path, libdir, ["file=%s" % disk] + create,
                        run='nbdinfo --size "$uri"', verbose=False)
    assert result.returncode == 0, result.stderr
    assert (vm / name).is_file()


GARBAGE = [
    b"KDMV" + b"\xff" * 60 + b'\nRW 1 FLAT "\0x"\n',    # offsets past the end
    b"KDMV" + b"\0" * 60,                                # no descriptor
    b"COWD" + b"\xff" * 2044,
    b'RW 1 FLAT "' + b"x" * 70000 + b'"\n',              # past 64 KiB
    b'RW 99999999999999999999 FLAT "\xff\xfe/../..//" 0\n'
    b'parentFileNameHint="\x1b\n\r"\nparentFileNameHint=\n',
    bytes(range(256)) * 16,
]


@pytest.mark.parametrize("content", GARBAGE, ids=range(len(GARBAGE)))
def test_garbage_descriptor_is_not_a_traceback(tmp_path, libdir, content):
    disk = tmp_path / "odd.vmdk"
    disk.write_bytes(content)
    assert refused(tmp_path, libdir, disk, disk=disk) == (
        "nbdkit: error: stats-file: %s: is the disk being served (file=)"
        % disk)


def test_parent_named_with_control_characters(tmp_path, libdir):
    parent = tmp_path / "p\rq\x1b\x0b\x1c.vmdk"
    parent.write_text('version=1\ncreateType="monolithicFlat"\n'
                      'RW 1 FLAT "flat" 0\n')
    child = tmp_path / "child.vmdk"
    child.write_text('version=1\ncreateType="monolithicFlat"\n'
                     'parentFileNameHint="%s"\nRW 1 FLAT "flat" 0\n'
                     % parent.name)
    assert refused(tmp_path, libdir, parent, disk=child) == (
        r"nbdkit: error: stats-file: %s/p\rq\x1b\x0b\x1c.vmdk: is a parent of "
        r"the disk being served (file=)" % tmp_path)


def test_parent_chain_that_loops(tmp_path, libdir):
    a, b = tmp_path / "a.vmdk", tmp_path / "b.vmdk"
    for this, parent in ((a, b), (b, a)):
        this.write_text('version=1\ncreateType="monolithicFlat"\n'
                        'parentFileNameHint="%s"\nRW 1 FLAT "%s-flat" 0\n'
                        % (parent.name, this.stem))
    assert refused(tmp_path, libdir, b, disk=a) == (
        "nbdkit: error: stats-file: %s: is a parent of the disk being "
        "served (file=)" % b)
    assert refused(tmp_path, libdir, tmp_path / "b-flat", disk=a) == (
        "nbdkit: error: stats-file: %s: is an extent of a parent of the "
        "disk being served (file=)" % (tmp_path / "b-flat"))


# -- long names ---------------------------------------------------------------

def test_name_of_255_bytes_is_written(tmp_path, libdir):
    target = tmp_path / "stats" / ("s" * 250 + ".json")
    target.parent.mkdir()
    functions = run_with_stats(tmp_path, libdir, target)
    assert functions["Open"]["calls"] == 1
    assert os.listdir(target.parent) == [target.name]
