"""The capacity a changeId was taken at, against the disk's in snapshot=:
given as changed-since-capacity= (what stats-file= recorded) or found in
the VM's snapshot that has the changeId.  A disk that grew serves its new
part as changed (read from the snapshot), one that shrank is one error
line saying a full copy is needed, never an empty delta."""

import json

import pytest

from bed import assert_no_traceback, error_lines
from test_changed_since import data_extents, write_through_nbdkit

MiB = 1 << 20


def grown_bed(vcsim, nbdkit):
    """An 8 MiB disk whose last 4 MiB hold data written outside change
    tracking (as ESXi may leave a grown disk's new part unreported), one
    tracked write, and snapshots before and after it."""
    bed = vcsim(size=8 * MiB)
    bed.enable_cbt()
    _, before = bed.create_snapshot("s0")
    with open(bed.data_path, "r+b") as f:
        f.seek(6 * MiB)
        f.write(b"\3" * 4096)
    write_through_nbdkit(nbdkit, bed, [(MiB, b"\5" * 4096)], None)
    snapshot, _ = bed.create_snapshot("s1")
    bed.reset()
    return bed, snapshot, before


def test_a_grown_disk_serves_its_new_part_as_changed(vcsim, nbdkit,
                                                     tmp_path):
    bed, snapshot, before = grown_bed(vcsim, nbdkit)
    stats = tmp_path / "stats.json"
    server = nbdkit(*bed.plugin_args(), "changed-since=" + before,
                    "changed-since-capacity=%d" % (4 * MiB),
                    "snapshot=" + snapshot, "stats-file=%s" % stats,
                    config=bed.standin_config(), readonly=True)
    assert data_extents(server) == [(MiB, 256 * 1024), (4 * MiB, 4 * MiB)]
    h = server.connect()
    assert h.pread(4096, 6 * MiB) == b"\3" * 4096
    assert h.pread(4096, MiB) == b"\5" * 4096
    h.shutdown()
    server.stop()
    document = json.loads(stats.read_text())
    assert document["complete"] is True
    assert document["change_tracking"]["connections"][0][
        "capacity_at_changed_since"] == 4 * MiB
    assert error_lines(server.stderr) == []


@pytest.mark.parametrize("given", [None, 8 * MiB])
def test_the_same_capacity_serves_only_the_changes(vcsim, nbdkit, given):
    """Without changed-since-capacity= the capacity comes from the
    snapshot that has the changeId (s0, 8 MiB): nothing is added."""
    bed, snapshot, before = grown_bed(vcsim, nbdkit)
    extra = [] if given is None else ["changed-since-capacity=%d" % given]
    server = nbdkit(*bed.plugin_args(), "changed-since=" + before,
                    "snapshot=" + snapshot, *extra,
                    config=bed.standin_config(), readonly=True)
    assert data_extents(server) == [(MiB, 256 * 1024)]


def test_a_shrunk_disk_needs_a_full_copy(vcsim, nbdkit):
    import nbd
    bed, snapshot, before = grown_bed(vcsim, nbdkit)
    server = nbdkit(*bed.plugin_args(), "changed-since=" + before,
                    "changed-since-capacity=%d" % (16 * MiB),
                    "snapshot=" + snapshot, config=bed.standin_config(),
                    readonly=True)
    with pytest.raises(nbd.Error):
        server.connect()
    server.stop()
    assert_no_traceback(server.stderr)
    lines = error_lines(server.stderr)
    assert len(lines) == 1, server.stderr
    assert lines[0].split(": open: error: ", 1)[1] == (
        "changed-since=%s: the disk has shrunk from 16777216 to 8388608 "
        "bytes since this changeId: a full copy is needed: make one with "
        "changed-since=* and use the changeId it reports" % before)
