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
answer without areas is one range without changes, not the end.  Every
answer is checked before it is used (``Pass``), because a map that calls
a changed area unchanged silently leaves a stale copy:

* an answer starting after the offset asked for leaves a range nobody
  reported on: it counts as changed (unknown is never unchanged); one
  starting before it is used from the offset asked for on;
* each answer must end at least MIN_ADVANCE bytes further (or at the end
  of the disk), so a disk of C bytes takes at most C / MIN_ADVANCE calls;
* every area must be inside the range its answer covers and inside the
  disk, with a positive length; areas may come in any order;
* a disk of C bytes has at most C / 512 distinct areas: more is an error.

Areas are merged into the map as they arrive, so memory follows the map,
not the answers.
"""

import bisect
from array import array

from .. import extents
from ..vddk.abi import SECTOR_SIZE
from ..errors import PluginError
from ..nbdkit.compat import debug, debug_flags

ALL = "*"
DELTA_ALIGNMENT = 256 * 1024
# The least an answer that does not reach the end of the disk must cover.
# vSphere answers up to 2000 areas of at least one change-tracking block
# each, far more than this.
MIN_ADVANCE = 64 * 1024
CALL = "QueryChangedDiskAreas"


def validate(change_id):
    """The problem with changed-since=``change_id``, or None."""
    if not change_id.strip():
        return ("changed-since: expected a changeId (from the last copy) or "
                "* (the whole disk), not an empty string")
    return None


class BadAnswer(PluginError):
    """An answer of vSphere that cannot be used (the message says why)."""


class Pass:
    """One pass of QueryChangedDiskAreas answers over a disk of
    ``capacity`` bytes: where to ask next (``offset``), every answer
    checked, the areas merged (widened to ``alignment``) as they come.

    An answer is ``begin(start, length)``, ``area(start, length)`` for
    each area, ``end()``; ``answer()`` does all three."""

    def __init__(self, capacity, alignment=SECTOR_SIZE):
        self.capacity = capacity
        self.alignment = alignment
        self.offset = 0             # where the next answer must start
        self.calls = 0
        self.areas = 0              # as reported, before merging
        self.reported_bytes = 0     # their lengths added up
        self.gap_bytes = 0          # not reported on: counted as changed
        self.max_areas = capacity // SECTOR_SIZE
        self._begins = array("Q")   # the merged map: sorted, disjoint
        self._ends = array("Q")
        self._range = None          # the current answer's [start, end)

    @property
    def complete(self):
        return self.offset >= self.capacity

    def refuse(self, problem):
        raise BadAnswer("vSphere's answer to %s at offset %d %s"
                        % (CALL, self.offset, problem)) from None

    def begin(self, start, length):
        """The range the answer covers: [start, start + length)."""
        end = start + length
        needed = min(self.offset + MIN_ADVANCE, self.capacity)
        if start < 0 or length < 0:
            self.refuse("covers [%d, %d), a negative range" % (start, end))
        if end < needed:
            self.refuse("covers [%d, %d): it must end at %d or later (at "
                         "least %d bytes further, or the end of the disk: "
                         "no disk of %d bytes needs more than %d calls)"
                         % (start, end, needed, MIN_ADVANCE, self.capacity,
                            -(-self.capacity // MIN_ADVANCE)))
        if start > self.offset:
            gap_end = min(start, self.capacity)
            self.gap_bytes += gap_end - self.offset
            if debug_flags.verbose:
                debug("changed-since: vSphere answered from offset %d when "
                      "asked for %d: [%d, %d) counts as changed"
                      % (start, self.offset, self.offset, gap_end))
            self._add(self.offset, gap_end)
        self._range = (start, end)

    def area(self, start, length):
        """One changed area of the current answer."""
        first, last = self._range
        end = start + length
        if length <= 0:
            self.refuse("has an area of %d bytes at %d" % (length, start))
        if start < first or end > last:
            self.refuse("has the area [%d, %d) outside the range it "
                         "covers, [%d, %d)" % (start, end, first, last))
        if end > self.capacity:
            self.refuse("has the area [%d, %d) past the end of the disk "
                         "(%d bytes)" % (start, end, self.capacity))
        self.areas += 1
        if self.areas > self.max_areas:
            self.refuse("makes %d areas: a disk of %d bytes has at most %d"
                         % (self.areas, self.capacity, self.max_areas))
        self.reported_bytes += length
        start = max(start, self.offset)     # before it: answered already
        if start < end:
            self._add(start, end)

    def end(self):
        """The answer is over: the next one starts where it ended."""
        self.offset = self._range[1]
        self._range = None
        self.calls += 1

    def answer(self, start, length, areas):
        self.begin(start, length)
        for area in areas:
            self.area(*area)
        self.end()

    def _add(self, start, end):
        """Merge [start, end), widened to the alignment and clipped to the
        disk, into the map."""
        alignment = self.alignment
        start = start // alignment * alignment
        end = min(self.capacity, -(-end // alignment) * alignment)
        begins, ends = self._begins, self._ends
        if not ends or start > ends[-1]:            # the usual case
            begins.append(start)
            ends.append(end)
        elif start >= begins[-1]:
            ends[-1] = max(ends[-1], end)
        else:                                       # out of order
            i = bisect.bisect_left(ends, start)
            j = bisect.bisect_right(begins, end)
            if i < j:
                start = min(start, begins[i])
                end = max(end, ends[j - 1])
            begins[i:j] = array("Q", (start,))
            ends[i:j] = array("Q", (end,))

    @property
    def changed_bytes(self):
        """What the map serves as changed."""
        return sum(self._ends) - sum(self._begins)

    def merged(self):
        """The map: sorted, disjoint (start, length) areas."""
        return [(b, e - b) for b, e in zip(self._begins, self._ends)]

    def coverage(self):
        """What this pass asked and was told, for the statistics."""
        return {"calls": self.calls, "answered": [0, min(self.offset,
                                                         self.capacity)],
                "areas": self.areas, "reported_bytes": self.reported_bytes,
                "unreported_bytes": self.gap_bytes,
                "changed_bytes": self.changed_bytes,
                "complete": self.complete}


def collect(ask, capacity, alignment=SECTOR_SIZE):
    """A complete ``Pass`` over a disk of ``capacity`` bytes: ``ask(pass_)``
    makes one call at ``pass_.offset`` and feeds its answer to the pass."""
    pass_ = Pass(capacity, alignment)
    while not pass_.complete:
        ask(pass_)
    return pass_


def with_tail(areas, start, end):
    """Merged ``areas`` with [start, end) (past what vSphere reported on:
    a grown disk's new part) changed too."""
    areas = [a for a in areas if a[0] < start]
    if areas and areas[-1][0] + areas[-1][1] >= start:
        start = areas.pop()[0]
    return areas + [(start, end - start)]


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
