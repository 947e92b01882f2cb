"""Turning QueryAllocatedBlocks answers into NBD extents.

VDDK can only be asked about whole chunks (128 sectors) inside the disk
and at most MAX_CHUNK_NUMBER chunks at a time.  A disk whose size is not a
multiple of the chunk has an unqueryable tail, reported as data, as
VMware's own sample program does.  ``query(start_sector, nr_sectors)``
returns the allocated blocks as (offset, length) pairs in sectors.
"""

import bisect

from .vddk.abi import MAX_CHUNK_NUMBER, MIN_CHUNK_SIZE, SECTOR_SIZE
from .errors import PluginError
from .nbdkit.compat import debug, debug_flags

CHUNK_BYTES = MIN_CHUNK_SIZE * SECTOR_SIZE
DATA = 0
HOLE = 1
ZERO = 2


class ExtentBuilder:
    """Contiguous extents from ``start`` onwards, same types merged."""

    def __init__(self, start, hole_type):
        self.position = start
        self.hole_type = hole_type
        self.extents = []           # [offset, length, type]

    def add(self, end, is_hole):
        if end == self.position:
            return
        if end < self.position:
            raise _out_of_order(end, self.position)
        if debug_flags.extents:
            debug("adding extent type %s at [%d...%d] (length %d)"
                  % ("hole" if is_hole else "allocated data", self.position,
                     end - 1, end - self.position))
        kind = self.hole_type if is_hole else DATA
        last = self.extents[-1] if self.extents else None
        if last is not None and last[2] == kind:
            last[1] += end - self.position
        else:
            self.extents.append([self.position, end - self.position, kind])
        self.position = end

    def add_allocated(self, blocks):
        """add() the hole before and the data of each allocated (offset,
        length) block, in sectors, without debug lines: one tight loop for
        the tens of thousands of blocks of a whole-disk map."""
        extents, hole, position = self.extents, self.hole_type, self.position
        last = extents[-1] if extents else _NO_EXTENT
        for offset, length in blocks:
            start = offset * SECTOR_SIZE
            if start < position:
                raise _out_of_order(start, position)
            if start > position:
                if last[2] == hole:
                    last[1] += start - position
                else:
                    last = [position, start - position, hole]
                    extents.append(last)
            position = start + length * SECTOR_SIZE
            if position > start:
                if last[2] == DATA:
                    last[1] += position - start
                else:
                    last = [start, position - start, DATA]
                    extents.append(last)
        self.position = position

    def result(self):
        return [tuple(e) for e in self.extents]


_NO_EXTENT = (None, 0, None)       # merges with nothing


def _out_of_order(end, position):
    return PluginError("VDDK returned allocated blocks out of order (block "
                       "ending at %d before %d)" % (end, position))


def _scan(query, start_sector, nr_sectors, builder):
    blocks = query(start_sector, nr_sectors)
    if debug_flags.verbose:
        # Upstream's debug lines, block by block.
        for offset, length in blocks:
            block_start = offset * SECTOR_SIZE
            block_end = block_start + length * SECTOR_SIZE
            debug("QueryAllocatedBlocks returned allocated block at %d-%d "
                  "(length %d)" % (block_start, block_end - 1,
                                   block_end - block_start))
            builder.add(block_start, is_hole=True)
            builder.add(block_end, is_hole=False)
    else:
        builder.add_allocated(blocks)
    builder.add((start_sector + nr_sectors) * SECTOR_SIZE, is_hole=True)


def _queryable_end(size):
    return size // CHUNK_BYTES * CHUNK_BYTES


def for_request(query, size, offset, count, req_one, hole_type):
    """The extents of [offset, offset+count), querying only that range
    (VDDK answers for whole chunks: what lies outside is cut off)."""
    start_sector = offset // CHUNK_BYTES * MIN_CHUNK_SIZE
    builder = ExtentBuilder(start_sector * SECTOR_SIZE, hole_type)
    end = min(offset + count, _queryable_end(size))
    while start_sector * SECTOR_SIZE < end:
        remaining = end - start_sector * SECTOR_SIZE
        nr_chunks = min(-(-remaining // CHUNK_BYTES), MAX_CHUNK_NUMBER)
        nr_sectors = nr_chunks * MIN_CHUNK_SIZE
        _scan(query, start_sector, nr_sectors, builder)
        start_sector += nr_sectors
        if req_one and builder.position > offset:
            break
    else:
        if end < offset + count:
            builder.add(offset + count, is_hole=False)
    return cut(builder.extents, offset, count)


def whole_disk(query, size, hole_type):
    """The map of the whole disk, in as few queries as VDDK allows."""
    builder = ExtentBuilder(0, hole_type)
    chunks_left = size // CHUNK_BYTES
    start_sector = 0
    while chunks_left:
        nr_chunks = min(chunks_left, MAX_CHUNK_NUMBER)
        _scan(query, start_sector, nr_chunks * MIN_CHUNK_SIZE, builder)
        start_sector += nr_chunks * MIN_CHUNK_SIZE
        chunks_left -= nr_chunks
    builder.add(size, is_hole=False)
    return DiskMap(builder.result())


class DiskMap:
    """A whole-disk extent list that answers requests without VDDK."""

    def __init__(self, extents, starts=None):
        """``extents`` sorted and disjoint; ``starts``, if given, where
        each begins (a maker that has them saves a pass over them)."""
        self.extents = extents
        self._starts = [e[0] for e in extents] if starts is None else starts

    def covering(self, offset, count):
        """The extents that overlap [offset, offset+count)."""
        first = bisect.bisect_right(self._starts, offset) - 1
        last = bisect.bisect_left(self._starts, offset + count)
        return self.extents[max(first, 0):max(last, first + 1)]

    def within(self, offset, count):
        """The extents of [offset, offset+count): only the first and the
        last can reach past it (the extents are sorted and disjoint), so
        only they are cut; the rest (thousands on a busy disk's map) are
        handed on as they are."""
        found = self.covering(offset, count)
        if len(found) <= 2:
            return cut(found, offset, count)
        return (cut(found[:1], offset, count) + found[1:-1]
                + cut(found[-1:], offset, count))


def cut(extents, offset, count):
    """``extents`` (sequences of offset, length, type) as tuples, cut to
    [offset, offset+count): one past the request
    would be cut by nbdkit instead, and nbdkit 1.32 cuts one of 4 GiB or
    more at 4 GiB - 1 bytes, which strict clients refuse as unaligned."""
    end = offset + count
    result = []
    append = result.append          # (tens of thousands of extents)
    for start, length, kind in extents:
        finish = start + length
        if finish <= offset or start >= end:
            continue
        if start < offset:
            start = offset
        if finish > end:
            finish = end
        append((start, finish - start, kind))
    return result

