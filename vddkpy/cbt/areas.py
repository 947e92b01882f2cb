"""Changed block tracking: the areas vSphere reports, and the map served.

changed-since=CHANGEID serves the delta since CHANGEID: the changed areas
read as the disk (as of snapshot=) and are data; everything else reads as
zeros and is a hole.  Copying only the data onto the copy made at CHANGEID
updates it, so nothing that reads as zeros here may be written there:
nbdcopy copies whole requests of at least 256 KiB (its default request
size, or the preferred block size if larger) as soon as one byte of them
is data, so the changed areas are widened to DELTA_ALIGNMENT and that is
the preferred block size; the widening reads the disk's own bytes, which
the copy already holds.  changed-since=* (every area ever written) only
replaces QueryAllocatedBlocks as the source of the map.

The areas are asked for from offset 0, each next question at the end of
the range the previous answer covered, until the disk's capacity: an
answer without areas is one range without changes, not the end.
"""

from .. import extents
from ..vddk.abi import SECTOR_SIZE
from ..errors import PluginError
from ..nbdkit.compat import debug, debug_flags

ALL = "*"
DELTA_ALIGNMENT = 256 * 1024


def validate(change_id):
    """The problem with changed-since=``change_id``, or None."""
    if not change_id.strip():
        return ("changed-since: expected a changeId (from the last copy) or "
                "* (the whole disk), not an empty string")
    return None


def collect(query, capacity):
    """Every changed (start, length) of a disk of ``capacity`` bytes, as
    vSphere reports them: ``query(offset)`` returns one answer
    (startOffset, length, [(start, length), ...])."""
    areas = []
    offset = 0
    while offset < capacity:
        start, length, page = query(offset)
        if start + length <= offset:
            raise PluginError("vSphere answered QueryChangedDiskAreas at "
                              "offset %d with a range ending at %d: no "
                              "progress" % (offset, start + length))
        areas.extend(page)
        offset = start + length
    return areas


def merged(areas, size, alignment=SECTOR_SIZE):
    """``areas`` sorted, widened to ``alignment``, clipped to [0, size)
    and merged where they touch or overlap."""
    result = []
    for start, length in sorted(areas):
        begin = max(0, start // alignment * alignment)
        end = min(size, -(-(start + length) // alignment) * alignment)
        if begin >= end:
            continue
        if result and begin <= result[-1][1]:
            result[-1][1] = max(result[-1][1], end)
        else:
            result.append([begin, end])
    return [(begin, end - begin) for begin, end in result]


def disk_map(areas, size):
    """The DiskMap of a disk whose data are exactly ``areas`` (merged)."""
    builder = extents.ExtentBuilder(0, extents.HOLE | extents.ZERO)
    for start, length in areas:
        if debug_flags.extents:
            debug("changed area at [%d...%d] (length %d)"
                  % (start, start + length - 1, length))
        builder.add(start, is_hole=True)
        builder.add(start + length, is_hole=False)
    builder.add(size, is_hole=True)
    return extents.DiskMap(builder.result())
