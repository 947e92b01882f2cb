"""What a sync round decides without a server: the state file read safely
and written atomically, image names from disks' backing files, a disk's
plan (full copy, changes, grown tail, reset tracking, refused shrink),
destination checks, and the areas cut into requests."""

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vddkpy.sync import plan
from vddkpy.sync.plan import PlanError

DISK = "[datastore1] vm/vm.vmdk"


def entry(**kw):
    e = {"image": "vm.raw", "format": "raw", "capacity": 1 << 20,
         "change_id": "52 aa-bb/7", "identity": [1, 2]}
    e.update(kw)
    return e


def test_state_round_trips_and_leaves_no_temporary_file(tmp_path):
    state = plan.new_state("esxi", "moref=vm-9")
    state["disks"][DISK] = entry()
    plan.write_state(str(tmp_path), state)
    assert plan.read_state(str(tmp_path)) == state
    assert os.listdir(tmp_path) == [plan.STATE_NAME]


def test_no_state_is_none(tmp_path):
    assert plan.read_state(str(tmp_path)) is None


@pytest.mark.parametrize("document, problem", [
    ("not json", "no format vddkpy-sync/1"),
    ('{"format": "vddkpy-stats/1"}', "no format vddkpy-sync/1"),
    ('{"format": "vddkpy-sync/1", "server": 1, "vm": "v", "disks": {}}',
     "server and vm must be strings"),
    ('{"format": "vddkpy-sync/1", "server": "s", "vm": "v", "disks": []}',
     "disks must be an object"),
])
def test_damaged_state_is_refused_in_one_line(tmp_path, document, problem):
    (tmp_path / plan.STATE_NAME).write_text(document)
    with pytest.raises(PlanError) as e:
        plan.read_state(str(tmp_path))
    assert str(e.value) == (
        "%s is not a vddkpy sync state (%s): it was not written by vddkpy "
        "sync, or was damaged" % (tmp_path / plan.STATE_NAME, problem))


PLAIN = "image must be a plain file name (a device: its path, NBD: a URI)"


@pytest.mark.parametrize("change, problem", [
    ({"image": "../etc/passwd"}, PLAIN),
    ({"image": plan.STATE_NAME}, PLAIN),
    ({"image": ".hidden"}, PLAIN),
    ({"format": "device", "image": "dev/sdb"}, PLAIN),
    ({"format": "nbd", "image": "/dev/nbd0"}, PLAIN),
    ({"format": "vmdk"}, "format must be one of raw, qcow2, device, nbd"),
    ({"capacity": 1000}, "capacity must be a positive multiple of 512"),
    ({"capacity": True}, "capacity must be a positive multiple of 512"),
    ({"change_id": 5}, "change_id must be a string or null"),
    ({"identity": "x"}, "identity must be [device, inode]"),
])
def test_damaged_disk_entries(change, problem):
    state = plan.new_state("s", "v")
    state["disks"]["d\n"] = entry(**change)
    assert plan.state_problem(state) == "disk d\\n: " + problem


def test_state_that_is_a_symlink_is_refused(tmp_path):
    (tmp_path / "elsewhere").write_text("{}")
    (tmp_path / plan.STATE_NAME).symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PlanError, match="Too many levels of symbolic links"):
        plan.read_state(str(tmp_path))


def test_image_names():
    assert plan.image_names([DISK, "[datastore1] vm/vm_1.vmdk"], "raw") == \
        {DISK: "vm.raw", "[datastore1] vm/vm_1.vmdk": "vm_1.raw"}
    assert plan.image_names([DISK, "[ds2] other/vm.vmdk"], "qcow2") == \
        {DISK: "datastore1-vm-vm.qcow2",
         "[ds2] other/vm.vmdk": "ds2-other-vm.qcow2"}
    assert plan.image_names(["[ds2] other/vm.vmdk"], "raw",
                            taken={"vm.raw"}) == \
        {"[ds2] other/vm.vmdk": "ds2-other-vm.raw"}
    assert plan.image_names(["[ds] a/../..\n.vmdk"], "raw") == \
        {"[ds] a/../..\n.vmdk": "disk.raw"}


def test_new_disk_is_a_full_copy():
    p = plan.disk_plan(DISK, None, 1 << 20, "52 aa-bb/9", "vm.raw")
    assert (p.since, p.full, p.grown_from, p.warning) == \
        ("*", True, None, None)


def test_known_disk_copies_changes_since_the_states_change_id():
    p = plan.disk_plan(DISK, entry(), 1 << 20, "52 aa-bb/9", "vm.raw")
    assert (p.since, p.full, p.grown_from) == ("52 aa-bb/7", False, None)


def test_incomplete_image_is_copied_whole():
    p = plan.disk_plan(DISK, entry(change_id=None), 1 << 20, "52 aa-bb/9",
                       "vm.raw")
    assert p.full and p.warning is None


def test_grown_disk_copies_its_tail():
    p = plan.disk_plan(DISK, entry(), 3 << 20, "52 aa-bb/9", "vm.raw")
    assert (p.since, p.capacity, p.grown_from) == ("52 aa-bb/7", 3 << 20,
                                                   1 << 20)


def test_reset_tracking_is_a_full_copy_with_a_warning():
    p = plan.disk_plan(DISK, entry(), 1 << 20, "52 cc-dd/1", "vm.raw")
    assert p.full
    assert p.warning == (
        "change tracking of %s was reset (changeId 52 aa-bb/7 is not one of "
        "its current ones): copying it whole" % DISK)


def test_shrunk_disk_is_refused():
    with pytest.raises(PlanError) as e:
        plan.disk_plan(DISK, entry(), 512 << 10, "52 aa-bb/9", "vm.raw")
    assert str(e.value) == (
        "%s shrank from 1048576 to 524288 bytes: its image vm.raw cannot "
        "shrink; move it away to make a new full copy" % DISK)


class Stat:
    def __init__(self, mode=0o100600, dev=1, ino=2):
        self.st_mode, self.st_dev, self.st_ino = mode, dev, ino


def test_destination_checks():
    e = entry()
    state = plan.keeper(plan.STATE_NAME)
    assert plan.destination_problem(e, Stat(), 1 << 20, 1 << 20,
                                    state) is None
    assert plan.destination_problem(e, Stat(), 2 << 20, 2 << 20,
                                    state) is None
    assert plan.destination_problem(e, Stat(ino=3), 1 << 20, 1 << 20,
                                    state) == (
        "is not the file the state vddkpy-sync.json describes (it was "
        "replaced or copied)")
    assert plan.destination_problem(e, Stat(mode=0o040700), 1 << 20,
                                    1 << 20, state) == "is not a regular file"
    assert plan.destination_problem(e, Stat(), 2 << 20, 1 << 20, state) == \
        "holds 2097152 bytes, the state vddkpy-sync.json says 1048576"
    assert plan.destination_problem(e, Stat(), 512, 2 << 20, state) == \
        "holds 512 bytes, the state vddkpy-sync.json says 1048576"


def test_destination_checks_name_the_record_of_new_images():
    """An image a round that did not finish made is described by the
    record beside the state: refusals name that file."""
    record = plan.keeper(plan.NEW_IMAGES_NAME)
    assert plan.destination_problem(entry(), Stat(ino=3), 1 << 20, 1 << 20,
                                    record) == (
        "is not the file .vddkpy-sync.new-images.json (images made by a "
        "round that did not finish) describes (it was replaced or copied)")
    assert plan.destination_problem(entry(), Stat(), 512, 1 << 20,
                                    record) == (
        "holds 512 bytes, .vddkpy-sync.new-images.json (images made by a "
        "round that did not finish) says 1048576")


areas_strategy = st.lists(st.tuples(st.integers(0, 1 << 16),
                                    st.integers(0, 5000)), max_size=30)


@given(areas_strategy, st.sampled_from([1, 512, 4096]))
def test_normalised_areas_cover_exactly_the_aligned_union(areas, alignment):
    size = 70000
    result = plan.normalised(areas, size, alignment)
    covered = set()
    for start, length in result:
        assert length > 0 and start + length <= size
        covered.update(range(start, start + length))
    wanted = set()
    for start, length in areas:
        if length:
            begin = start // alignment * alignment
            end = -(-(start + length) // alignment) * alignment
            wanted.update(range(begin, min(end, size)))
    assert covered == wanted
    assert all(a[0] + a[1] < b[0] for a, b in zip(result, result[1:]))


@given(areas_strategy)
def test_complement_and_areas_tile_the_disk(areas):
    size = 70000
    merged = plan.normalised(areas, size, 1)
    pieces = sorted(merged + plan.complement(merged, size))
    position = 0
    for start, length in pieces:
        assert start == position and length > 0
        position += length
    assert position == size


def test_requests_never_exceed_the_limit():
    assert list(plan.requests([(0, 10), (100, 25)], 10)) == \
        [(0, 10), (100, 10), (110, 10), (120, 5)]


def test_directory_checks(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(PlanError, match="^--to .*/f: Not a directory$"):
        plan.check_directory(str(tmp_path / "f"))
    with pytest.raises(PlanError, match="No such file or directory$"):
        plan.check_directory(str(tmp_path / "missing"))


def test_state_file_is_sorted_json_with_a_format(tmp_path):
    plan.write_state(str(tmp_path), plan.new_state("s", "moref=vm-1"))
    assert json.loads((tmp_path / plan.STATE_NAME).read_text()) == {
        "disks": {}, "format": "vddkpy-sync/1", "server": "s",
        "vm": "moref=vm-1"}
