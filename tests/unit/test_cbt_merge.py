"""Changed block tracking's areas become the served map: sorted, widened
to the alignment, clipped to the disk, merged where they touch; the map
reports them as data and everything else as holes that read as zeros."""

import pytest

from vddkpy import extents
from vddkpy.cbt import areas

KiB = 1024
BLOCK = areas.DELTA_ALIGNMENT
HOLE = extents.HOLE | extents.ZERO


@pytest.mark.parametrize("reported, size, alignment, expected", [
    ([], 10 * BLOCK, BLOCK, []),
    ([(BLOCK, 1)], 10 * BLOCK, BLOCK, [(BLOCK, BLOCK)]),
    ([(BLOCK - 1, 2)], 10 * BLOCK, BLOCK, [(0, 2 * BLOCK)]),
    # Out of order, overlapping, touching: one area.
    ([(3 * BLOCK, 10), (0, BLOCK), (BLOCK, 5)], 10 * BLOCK, BLOCK,
     [(0, 2 * BLOCK), (3 * BLOCK, BLOCK)]),
    ([(0, BLOCK), (2 * BLOCK, BLOCK), (BLOCK, BLOCK)], 10 * BLOCK, BLOCK,
     [(0, 3 * BLOCK)]),
    # Clipped to the disk, which need not be a multiple of the alignment.
    ([(9 * BLOCK, 4 * BLOCK)], 9 * BLOCK + 512, BLOCK,
     [(9 * BLOCK, 512)]),
    ([(20 * BLOCK, BLOCK)], 10 * BLOCK, BLOCK, []),
    ([(0, 0), (5 * KiB, 0)], 10 * BLOCK, 512, []),
    # Sector alignment (vddkpy changed-areas: not widened to blocks).
    ([(700, 100), (1000, 100)], 10 * BLOCK, 512, [(512, 1024)]),
])
def test_merged(reported, size, alignment, expected):
    assert areas.merged(reported, size, alignment) == expected


def test_disk_map_of_areas():
    size = 8 * BLOCK + 512
    merged = areas.merged([(BLOCK, 1), (7 * BLOCK, 3 * BLOCK)], size, BLOCK)
    assert areas.disk_map(merged, size).extents == [
        (0, BLOCK, HOLE), (BLOCK, BLOCK, extents.DATA),
        (2 * BLOCK, 5 * BLOCK, HOLE), (7 * BLOCK, BLOCK + 512, extents.DATA)]


def test_disk_map_without_changes_is_one_hole():
    assert areas.disk_map([], 3 * BLOCK).extents == [(0, 3 * BLOCK, HOLE)]


@pytest.mark.parametrize("change_id", ["", " ", "\t\n"])
def test_an_empty_change_id_is_refused(change_id):
    assert areas.validate(change_id).startswith(
        "changed-since: expected a changeId")


@pytest.mark.parametrize("change_id", ["*", "52 de 2c 48 c9 95 0b 9f/42"])
def test_change_ids_accepted(change_id):
    assert areas.validate(change_id) is None
