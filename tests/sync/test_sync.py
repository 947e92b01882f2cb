"""vddkpy sync end to end on the bed: rounds of a running VM's disks
copied onto images in a directory, each image equal to the disk as of the
round's snapshot, only the changed areas read, no snapshot left behind."""

import json

from . import guest


def test_first_round_copies_the_disk_and_leaves_no_snapshot(
        vcsim, syncer, libdir, tmp_path):
    bed = vcsim(size=4 << 20, seed=11, lock_running_disks=True)
    bed.enable_cbt()
    run = syncer(bed)
    to = tmp_path / "copy"
    to.mkdir()
    result = run.ok(to)
    assert (to / "vm.raw").read_bytes() == bed.data_path.read_bytes()
    assert bed.snapshot_morefs() == []
    state = json.loads((to / "vddkpy-sync.json").read_text())
    print(result.stdout, result.stderr)
    assert state["disks"]["[datastore1] vm/vm.vmdk"]["change_id"]
