"""A large disk's changed areas are asked for in ranges at once
(vddkpy/cbt/areas.py, ``split``): on a 32 GiB disk, four ranges of
8 GiB, each paged from its own start, their maps joined in order; an
answer that starts later than asked leaves a gap in every range, and
each gap is served as changed."""

import json

from test_changed_since import data_extents, grains_of, write_through_nbdkit
from test_hostile_vsphere import served

GiB = 1 << 30
MiB = 1 << 20
SIZE = 32 * GiB

# Two areas in each 8 GiB range, one across the first boundary.
WRITES = [(MiB, b"\1" * 4096), (5 * GiB, b"\2" * 8192),
          (8 * GiB - 4096, b"\3" * 8192), (12 * GiB, b"\4" * 512),
          (16 * GiB + 3 * MiB, b"\5" * 4096), (23 * GiB, b"\6" * 4096),
          (24 * GiB, b"\7" * 4096), (SIZE - 512, b"\10" * 512)]


def tracked_large_disk(vcsim, nbdkit, tmp_path):
    bed = vcsim(size=SIZE)
    bed.enable_cbt()
    write_through_nbdkit(nbdkit, bed, WRITES, tmp_path)
    snapshot, _ = bed.create_snapshot("s1")
    bed.reset()
    bed.set_page_size(1)
    return bed, snapshot


def coverage(stats):
    connection, = json.loads(stats.read_text())["change_tracking"][
        "connections"]
    return connection["coverage"]


def test_a_large_disk_is_mapped_in_ranges(vcsim, nbdkit, tmp_path):
    """One area a page: each range asks once per area in it, and once
    more where its last page ends before the range does."""
    bed, snapshot = tracked_large_disk(vcsim, nbdkit, tmp_path)
    stats = tmp_path / "stats.json"
    server = served(nbdkit, bed, "changed-since=*", "snapshot=" + snapshot,
                    "stats-file=%s" % stats)
    assert data_extents(server) == grains_of(WRITES)
    server.stop()
    # Ranges [0, 8), [8, 16), [16, 24), [24, 32) GiB; the area across 8 GiB
    # ends the first range's last page and begins the second's.
    assert bed.calls("QueryChangedDiskAreas") == 3 + 3 + 3 + 2
    assert coverage(stats)["complete"] is True
    assert coverage(stats)["answered"] == [0, SIZE]
    assert coverage(stats)["calls"] == 11


def test_each_range_with_a_gap_serves_it_as_changed(vcsim, nbdkit,
                                                   tmp_path):
    """Every answer starts 1 MiB after the offset asked: in each range,
    the MiB after each offset asked is served as changed."""
    bed, snapshot = tracked_large_disk(vcsim, nbdkit, tmp_path)
    bed.set_page_size(2000)
    bed.set_hostile("shift", shift=MiB)
    stats = tmp_path / "stats.json"
    server = served(nbdkit, bed, "changed-since=*", "snapshot=" + snapshot,
                    "stats-file=%s" % stats)
    extents = data_extents(server)
    server.stop()
    for first in (0, 8 * GiB, 16 * GiB, 24 * GiB):
        assert any(start <= first and first + MiB <= start + length
                   for start, length in extents), (first, extents)
    assert bed.calls("QueryChangedDiskAreas") == 4
    assert coverage(stats)["unreported_bytes"] == 4 * MiB
