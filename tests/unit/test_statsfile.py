"""stats-file= rules: the target's directory must exist and be writable;
the target may be absent or a previous vddkpy statistics document, never
a symbolic link (not followed), a directory, a FIFO or other special
file, another file, or a file of the disk being served under any name.
Writing goes to a new 0600 file that takes the name only after the same
checks, and a file that reached the name in the last moment survives."""

import json
import os
import stat

import pytest

from vddkpy import statsfile, vmdkfiles

NOT_OURS = "exists and is not a vddkpy statistics document (not replaced)"


def problem(path, disk_files=None):
    return statsfile.problem(str(path), disk_files)


def reason(path, disk_files=None):
    """The part of problem()'s line after "stats-file: PATH: "."""
    line = problem(path, disk_files)
    prefix = "stats-file: %s: " % path
    assert line.startswith(prefix), line
    return line[len(prefix):]


def test_absent_target_in_an_existing_directory(tmp_path):
    assert problem(tmp_path / "stats.json") is None


def test_missing_directory(tmp_path):
    assert reason(tmp_path / "no" / "stats.json") == \
        "%s: No such file or directory" % (tmp_path / "no")


def test_directory_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    assert reason(tmp_path / "file" / "stats.json") == \
        "%s: Not a directory" % (tmp_path / "file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_directory_without_write_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    assert reason(locked / "stats.json") == \
        "cannot create files in %s: Permission denied" % locked


def test_trailing_slash_is_a_directory(tmp_path):
    assert problem(str(tmp_path) + "/") == \
        "stats-file: %s/: Is a directory" % tmp_path


def test_target_that_is_a_directory(tmp_path):
    (tmp_path / "stats.json").mkdir()
    assert reason(tmp_path / "stats.json") == "Is a directory"


@pytest.mark.parametrize("points_at", ["document", "missing"])
def test_symbolic_links_are_never_followed(tmp_path, points_at):
    (tmp_path / "document").write_text(json.dumps(
        {"format": statsfile.FORMAT}))
    (tmp_path / "stats.json").symlink_to(tmp_path / points_at)
    assert reason(tmp_path / "stats.json") == \
        "is a symbolic link (not followed)"


def test_fifo_is_not_a_regular_file(tmp_path):
    os.mkfifo(tmp_path / "stats.json")
    assert reason(tmp_path / "stats.json") == "is not a regular file"


@pytest.mark.parametrize("document", [
    {"format": "vddkpy-stats/1"},
    {"format": "vddkpy-stats/1", "functions": {}},
    {"format": "vddkpy-stats/27", "anything": [1, 2]},
])
def test_previous_documents_may_be_replaced(tmp_path, document):
    target = tmp_path / "stats.json"
    target.write_text(json.dumps(document))
    assert problem(target) is None


@pytest.mark.parametrize("content", [
    "", "not json", "[]", '"vddkpy-stats/1"', "{}",
    '{"format": "vddkpy-stats/"}', '{"format": "vddkpy-stats/1x"}',
    '{"format": "other-stats/1"}', '{"format": 1}',
    '{"functions": "none"}', "[" * 100000,
    json.dumps({"format": "vddkpy-stats/1", "pad": "x" * (1 << 20)}),
])
def test_other_files_are_not_replaced(tmp_path, content):
    target = tmp_path / "stats.json"
    target.write_text(content)
    assert reason(target) == NOT_OURS


def flat_disk(directory):
    (directory / "disk-flat.vmdk").write_bytes(b"precious data\n")
    disk = directory / "disk.vmdk"
    disk.write_text('# Disk DescriptorFile\nversion=1\n'
                    'createType="monolithicFlat"\n'
                    'RW 1 FLAT "disk-flat.vmdk" 0\n')
    return vmdkfiles.local_disk(str(disk))


@pytest.mark.parametrize("name, role", [
    ("disk.vmdk", "the disk being served"),
    ("disk-flat.vmdk", "an extent of the disk being served"),
    ("hard-link", "an extent of the disk being served")])
def test_files_of_the_disk_are_refused(tmp_path, name, role):
    files = flat_disk(tmp_path)
    os.link(tmp_path / "disk-flat.vmdk", tmp_path / "hard-link")
    assert reason(tmp_path / name, files) == "is %s (file=)" % role


def test_a_file_create_will_make_is_refused_before_it_exists(tmp_path):
    files = vmdkfiles.local_disk(str(tmp_path / "new.vmdk"), 3)
    assert reason(tmp_path / "new-s004.vmdk", files) == \
        "is a file that create=true will make (file=)"


def test_names_are_printed_escaped(tmp_path):
    target = tmp_path / "st\x1bats\n.json"
    target.write_text("x")
    assert problem(target) == "stats-file: %s/st\\x1bats\\n.json: %s" % (
        tmp_path, NOT_OURS)


def test_written_document_is_private_and_marked(tmp_path):
    target = tmp_path / "stats.json"
    statsfile.write(str(target), {"functions": {"Open": {"us": 1}}})
    assert json.loads(target.read_text()) == {
        "format": statsfile.FORMAT, "functions": {"Open": {"us": 1}}}
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["stats.json"]


def test_previous_document_replaced_by_the_swap(tmp_path):
    target = tmp_path / "stats.json"
    target.write_text(json.dumps({"format": statsfile.FORMAT}))
    statsfile.write(str(target), {"functions": {}})
    assert json.loads(target.read_text()) == {
        "format": statsfile.FORMAT, "functions": {}}
    assert os.listdir(tmp_path) == ["stats.json"]


def test_a_file_that_appeared_while_serving_is_kept(tmp_path):
    target = tmp_path / "stats.json"
    target.write_text("notes of the admin\n")
    with pytest.raises(statsfile.Refused) as refused:
        statsfile.write(str(target), {"functions": {}})
    assert str(refused.value) == "stats-file: %s: %s; statistics not " \
        "written" % (target, NOT_OURS)
    assert target.read_text() == "notes of the admin\n"
    assert os.listdir(tmp_path) == ["stats.json"]


def test_file_moved_in_after_the_last_check_survives(tmp_path, monkeypatch):
    """A disk file moved to the stats path after the exit check (the check
    is made to see nothing, as in that window) keeps its bytes under the
    stats path: the swap puts it back instead of unlinking it."""
    files = flat_disk(tmp_path)
    target = tmp_path / "stats.json"
    os.rename(tmp_path / "disk-flat.vmdk", target)  # only this name left
    monkeypatch.setattr(statsfile, "problem", lambda path, disk_files: None)
    with pytest.raises(statsfile.Refused) as refused:
        statsfile.write(str(target), {"functions": {}}, files)
    assert str(refused.value) == (
        "stats-file: %s: is an extent of the disk being served (file=); "
        "statistics not written" % target)
    assert target.read_bytes() == b"precious data\n"
    assert sorted(os.listdir(tmp_path)) == ["disk.vmdk", "stats.json"]
