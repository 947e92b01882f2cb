"""The extent builder's two ways of adding VDDK's allocated blocks (block
by block with upstream's debug lines, or in one loop when nothing is
printed) build the same extents."""

import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bed import ROOT
from vddkpy import extents  # noqa: E402
from vddkpy.errors import PluginError               # noqa: E402

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
