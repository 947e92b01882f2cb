"""QueryAllocatedBlocks answers become NBD extents: the builder's two ways
of adding blocks (block by block with upstream's debug lines, or in one
loop when nothing is printed) build the same extents; a request is
answered from the chunks it touches, cut to the request; a whole-disk map
answers as the disk does."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vddkpy import extents
from vddkpy.errors import PluginError

SECTOR = 512


@st.composite
def block_lists(draw):
    """Allocated (offset, length) blocks in sectors, in order, some
    adjacent, some empty, starting at or after ``start``."""
    start = draw(st.integers(0, 1000))
    blocks, position = [], start
    for _ in range(draw(st.integers(0, 30))):
        position += draw(st.sampled_from([0, 0, 1, 128, 4096]))
        length = draw(st.sampled_from([0, 1, 128, 256]))
        blocks.append((position, length))
        position += length
    return start, blocks


def one_by_one(builder, blocks):
    for offset, length in blocks:
        builder.add(offset * SECTOR, is_hole=True)
        builder.add((offset + length) * SECTOR, is_hole=False)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(block_lists(), st.sampled_from([extents.HOLE,
                                       extents.HOLE | extents.ZERO]))
def test_add_allocated_matches_add(case, hole_type):
    start, blocks = case
    slow = extents.ExtentBuilder(start * SECTOR, hole_type)
    fast = extents.ExtentBuilder(start * SECTOR, hole_type)
    one_by_one(slow, blocks)
    fast.add_allocated(blocks)
    assert fast.result() == slow.result()
    assert fast.position == slow.position
    end = slow.position + 7 * SECTOR
    for builder in (slow, fast):
        builder.add(end, is_hole=True)
    assert fast.result() == slow.result()


def test_blocks_out_of_order_are_refused_alike():
    blocks = [(256, 128), (128, 128)]
    for add in (one_by_one, lambda b, blocks: b.add_allocated(blocks)):
        with pytest.raises(PluginError) as refused:
            add(extents.ExtentBuilder(0, extents.HOLE), blocks)
        assert str(refused.value) == ("VDDK returned allocated blocks out "
                                      "of order (block ending at 65536 "
                                      "before 196608)")


# -- requests, whole-disk maps, cutting ---------------------------------------

CHUNK = extents.CHUNK_BYTES


class FakeDisk:
    """QueryAllocatedBlocks of a disk whose allocated (offset, length)
    blocks, in sectors, are ``blocks``; every question is counted."""

    def __init__(self, blocks):
        self.blocks = blocks
        self.questions = []

    def query(self, start_sector, nr_sectors):
        assert start_sector % extents.MIN_CHUNK_SIZE == 0
        assert nr_sectors % extents.MIN_CHUNK_SIZE == 0
        assert nr_sectors <= extents.MAX_CHUNK_NUMBER * extents.MIN_CHUNK_SIZE
        self.questions.append((start_sector, nr_sectors))
        end = start_sector + nr_sectors
        return [(max(o, start_sector), min(o + n, end) - max(o, start_sector))
                for o, n in self.blocks if o < end and o + n > start_sector]


# Chunks 1 and 3 allocated of a 6-chunk disk with a 1000-byte tail.
BLOCKS = [(128, 128), (384, 128)]
SIZE = 6 * CHUNK + 1000


def test_whole_disk_map_reports_the_unqueryable_tail_as_data():
    disk = FakeDisk(BLOCKS)
    whole = extents.whole_disk(disk.query, SIZE, extents.HOLE)
    assert whole.extents == [
        (0, CHUNK, extents.HOLE), (CHUNK, CHUNK, extents.DATA),
        (2 * CHUNK, CHUNK, extents.HOLE), (3 * CHUNK, CHUNK, extents.DATA),
        (4 * CHUNK, 2 * CHUNK, extents.HOLE), (6 * CHUNK, 1000, extents.DATA)]
    assert disk.questions == [(0, 6 * 128)]


def test_whole_disk_map_asks_in_the_largest_pieces_allowed():
    most = extents.MAX_CHUNK_NUMBER
    disk = FakeDisk([])
    extents.whole_disk(disk.query, (2 * most + 3) * CHUNK, extents.HOLE)
    assert [n // 128 for _, n in disk.questions] == [most, most, 3]


@pytest.mark.parametrize("offset, count, expected, questions", [
    # Inside one chunk: only that chunk is asked about, the answer cut.
    (CHUNK + 512, 1024, [(CHUNK + 512, 1024, extents.DATA)], [(128, 128)]),
    (0, 2 * CHUNK, [(0, CHUNK, extents.HOLE), (CHUNK, CHUNK, extents.DATA)],
     [(0, 256)]),
    # The tail past the last whole chunk is data, without a question.
    (6 * CHUNK, 1000, [(6 * CHUNK, 1000, extents.DATA)], []),
    (5 * CHUNK + 10, CHUNK, [(5 * CHUNK + 10, CHUNK - 10, extents.HOLE),
                             (6 * CHUNK, 10, extents.DATA)], [(640, 128)]),
])
def test_for_request(offset, count, expected, questions):
    disk = FakeDisk(BLOCKS)
    assert extents.for_request(disk.query, SIZE, offset, count, False,
                               extents.HOLE) == expected
    assert disk.questions == questions


def test_for_request_with_req_one_stops_after_the_first_answer():
    most = extents.MAX_CHUNK_NUMBER
    disk = FakeDisk([])
    size = 3 * most * CHUNK
    found = extents.for_request(disk.query, size, 0, size, True, extents.HOLE)
    assert disk.questions == [(0, most * 128)]
    assert found == [(0, most * CHUNK, extents.HOLE)]


@pytest.mark.parametrize("offset, count", [
    (0, SIZE), (1, 1), (CHUNK - 1, 2), (3 * CHUNK, CHUNK), (SIZE - 1, 1)])
def test_disk_map_answers_as_the_disk_does(offset, count):
    whole = extents.whole_disk(FakeDisk(BLOCKS).query, SIZE, extents.HOLE)
    asked = extents.for_request(FakeDisk(BLOCKS).query, SIZE, offset, count,
                                False, extents.HOLE)
    assert whole.within(offset, count) == asked
    assert sum(length for _, length, _ in asked) == count
    assert asked[0][0] == offset


def test_cut_keeps_only_the_request():
    given = [[0, 10, 0], [10, 10, 1], [20, 10, 0]]
    assert extents.cut(given, 5, 20) == [(5, 5, 0), (10, 10, 1), (20, 5, 0)]
    assert extents.cut(given, 10, 10) == [(10, 10, 1)]
    assert extents.cut(given, 30, 5) == []


def test_adjacent_extents_of_one_type_merge():
    builder = extents.ExtentBuilder(0, extents.HOLE | extents.ZERO)
    for end, is_hole in ((512, True), (1024, True), (2048, False),
                         (2048, True), (4096, False)):
        builder.add(end, is_hole)
    assert builder.result() == [(0, 1024, extents.HOLE | extents.ZERO),
                                (1024, 3072, extents.DATA)]
