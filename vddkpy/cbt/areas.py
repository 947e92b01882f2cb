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

vSphere answers a question at offset X from X on, so a large disk is cut
into a few ranges (``split``) asked at once, each paged and checked as
above on its own (an answer reaching past its range is used up to the
range's end), then their maps joined in order (``collect``).
"""

import _thread
import bisect
from itertools import repeat
from operator import add, lt, mod, sub

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
# A disk is asked for in ranges of at least RANGE_BYTES (whole GiB, so
# that every alignment keeps to its range), at most RANGES of them, all
# at once (RANGES calls in flight at most): each range costs a call, worth
# it only where the answers of a busy disk need several pages.
RANGE_BYTES = 8 << 30
RANGES = 8


def validate(change_id):
    """The problem with changed-since=``change_id``, or None."""
    if not change_id.strip():
        return ("changed-since: expected a changeId (from the last copy) or "
                "* (the whole disk), not an empty string")
    return None


class BadAnswer(PluginError):
    """An answer of vSphere that cannot be used (the message says why)."""


class Pass:
    """One pass of QueryChangedDiskAreas answers over the range [first,
    last) of a disk of ``capacity`` bytes (default: the whole disk): where
    to ask next (``offset``), every answer checked, the areas within the
    range merged (widened to ``alignment``) as they come.

    An answer is ``begin(start, length)``, ``area(start, length)`` for
    each area, ``end()``; ``answer()`` does all three."""

    def __init__(self, capacity, alignment=SECTOR_SIZE, first=0, last=None):
        self.capacity = capacity
        self.alignment = alignment
        self.first = first
        self.last = capacity if last is None else last
        self.offset = first         # where the next answer must start
        self.calls = 0
        self.areas = 0              # as reported, before merging
        self.reported_bytes = 0     # their lengths in the range added up
        self.gap_bytes = 0          # not reported on: counted as changed
        # Every answer of the pass lies in [first, capacity).
        self.max_areas = (capacity - first) // SECTOR_SIZE
        # Imported here: array imports collections (2 ms), which a start
        # without changed-since= does not need.
        from array import array
        self._begins = array("Q")   # the merged map: sorted, disjoint
        self._ends = array("Q")
        self._range = None          # the current answer's [start, end)

    @property
    def complete(self):
        return self.offset >= self.last

    def refuse(self, problem):
        raise BadAnswer("vSphere's answer to %s at offset %d %s"
                        % (CALL, self.offset, problem)) from None

    def begin(self, start, length):
        """The range the answer covers: [start, start + length)."""
        end = start + length
        needed = min(self.offset + MIN_ADVANCE, self.last)
        if start < 0 or length < 0:
            self.refuse("covers [%d, %d), a negative range" % (start, end))
        if end < needed:
            whole = self.first == 0 and self.last == self.capacity
            self.refuse("covers [%d, %d): it must end at %d or later (at "
                        "least %d bytes further, or the end of the %s: no "
                        "%s of %d bytes needs more than %d calls)"
                        % (start, end, needed, MIN_ADVANCE,
                           "disk" if whole else "range it was asked for",
                           "disk" if whole else "range",
                           self.last - self.first,
                           -(-(self.last - self.first) // MIN_ADVANCE)))
        if start > self.offset:
            gap_end = min(start, self.last)
            self.gap_bytes += gap_end - self.offset
            if debug_flags.verbose:
                debug("changed-since: vSphere answered from offset %d when "
                      "asked for %d: [%d, %d) counts as changed"
                      % (start, self.offset, self.offset, gap_end))
            self._add(self.offset, gap_end)
        self._range = (start, end)

    def area(self, start, length):
        """One changed area of the current answer."""
        self.areas_of(((start, length),))

    def areas_of(self, areas):
        """Changed areas of the current answer: (start, length) pairs (a
        page's thousands in one loop, its lookups made once)."""
        first, last = self._range                  # the answer's range
        low, high = self.first, self.last           # and this pass's
        capacity, offset, add, count = (self.capacity, self.offset,
                                        self._add, self.areas)
        reported = 0
        try:
            for start, length in areas:
                end = start + length
                if length <= 0:
                    self.refuse("has an area of %d bytes at %d"
                                % (length, start))
                if start < first or end > last:
                    self.refuse("has the area [%d, %d) outside the range it "
                                "covers, [%d, %d)" % (start, end, first, last))
                if end > capacity:
                    self.refuse("has the area [%d, %d) past the end of the "
                                "disk (%d bytes)" % (start, end, capacity))
                count += 1
                if count > self.max_areas:
                    self.refuse("makes %d areas: a disk of %d bytes has at "
                                "most %d" % (count, capacity, self.max_areas))
                if end > high:              # after it: another range's
                    end = high
                inside = start if start > low else low
                if end > inside:
                    reported += end - inside
                if start < offset:          # before it: answered already
                    start = offset
                if start < end:
                    add(start, end)
        finally:
            self.areas = count
            self.reported_bytes += reported

    def page(self, starts, lengths):
        """Changed areas of the current answer as two lists (a plain
        answer's): joined to the map in bulk, by C loops, when they are
        what vSphere sends (sorted and apart, on the alignment, inside the
        answer's range, this pass's and the part not answered yet, after
        the map), else one by one (``areas_of``); the same map and counts,
        or the same refusal, either way."""
        ends = list(map(add, starts, lengths))
        if not self._in_bulk(starts, lengths, ends):
            return self.areas_of(zip(starts, lengths))
        self._begins.extend(starts)
        self._ends.extend(ends)
        self.areas += len(starts)
        self.reported_bytes += sum(lengths)
        return None

    def _in_bulk(self, starts, lengths, ends):
        if not starts:
            return False
        first, last = self._range
        after = max(first, self.offset, self.first,
                    self._ends[-1] + 1 if self._ends else 0)
        alignment = self.alignment
        return (min(lengths) > 0 and starts[0] >= after
                and ends[-1] <= min(last, self.last, self.capacity)
                and self.areas + len(starts) <= self.max_areas
                and all(map(lt, ends, starts[1:]))
                and (alignment == 1 or not (
                    any(map(mod, starts, repeat(alignment)))
                    or any(map(mod, ends, repeat(alignment))))))

    def end(self):
        """The answer is over: the next one starts where it ended."""
        self.offset = self._range[1]
        self._range = None
        self.calls += 1

    def answer(self, start, length, areas):
        self.begin(start, length)
        self.areas_of(areas)
        self.end()

    def _add(self, start, end):
        """Merge [start, end), widened to the alignment and clipped to the
        range, into the map."""
        alignment = self.alignment
        start = max(self.first, start // alignment * alignment)
        end = min(self.last, -(-end // alignment) * alignment)
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
            del begins[i:j], ends[i:j]
            begins.insert(i, start)
            ends.insert(i, end)

    def extend(self, after):
        """Take over the complete pass ``after``, over the range that
        follows this one's: its areas join this map, its counts these."""
        if after._begins and self._ends and after._begins[0] <= \
                self._ends[-1]:
            self._ends[-1] = after._ends[0]
            after._begins, after._ends = after._begins[1:], after._ends[1:]
        self._begins.extend(after._begins)
        self._ends.extend(after._ends)
        self.last = after.last
        self.offset = after.offset
        self.calls += after.calls
        self.areas += after.areas
        self.reported_bytes += after.reported_bytes
        self.gap_bytes += after.gap_bytes

    @property
    def changed_bytes(self):
        """What the map serves as changed."""
        return sum(self._ends) - sum(self._begins)

    def merged(self):
        """The map: sorted, disjoint (start, length) areas."""
        return [(b, e - b) for b, e in zip(self._begins, self._ends)]

    def bounds(self):
        """The map as two lists: where each area begins, where it ends
        (sorted, with room between one area and the next)."""
        return self._begins.tolist(), self._ends.tolist()

    def coverage(self):
        """What this pass asked and was told, for the statistics."""
        return {"calls": self.calls,
                "answered": [self.first, min(self.offset, self.last)],
                "areas": self.areas, "reported_bytes": self.reported_bytes,
                "unreported_bytes": self.gap_bytes,
                "changed_bytes": self.changed_bytes,
                "complete": self.complete}


def split(capacity, range_bytes=RANGE_BYTES, ranges=RANGES):
    """[first, last) of each range a disk of ``capacity`` bytes is asked
    in: at most ``ranges``, each at least ``range_bytes`` (a whole number
    of GiB) but the last."""
    count = max(1, min(ranges, capacity // range_bytes))
    size = -(-capacity // count // range_bytes) * range_bytes
    bounds = [min(capacity, i * size) for i in range(count)] + [capacity]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if a < b]


def collect(ask, capacity, alignment=SECTOR_SIZE, range_bytes=RANGE_BYTES,
            ranges=RANGES):
    """A complete ``Pass`` over a disk of ``capacity`` bytes: ``ask(pass_)``
    makes one call at ``pass_.offset`` and feeds its answer to the pass
    (from several threads at once for a disk cut in ranges)."""
    passes = [Pass(capacity, alignment, first, last)
              for first, last in split(capacity, range_bytes, ranges)]

    def finish(pass_, stopped):
        while not pass_.complete and not stopped():
            ask(pass_)

    if len(passes) == 1:
        finish(passes[0], lambda: False)
    else:
        _all_at_once(finish, passes)
    whole = passes[0]
    for after in passes[1:]:
        whole.extend(after)
    return whole


def _all_at_once(function, items):
    """function(item, stopped) for every item, each on a thread of its
    own; the first exception raised is raised here once its thread has
    ended, after which ``stopped()`` tells the others to make no new
    call (their calls are bounded by the session; nothing waits for
    them)."""
    done = _thread.allocate_lock()
    done.acquire()
    state = {"running": len(items), "failure": None}
    lock = _thread.allocate_lock()

    def stopped():
        return state["failure"] is not None

    def run(item):
        failure = None
        try:
            function(item, stopped)
        except BaseException as e:      # handed to the waiting thread
            failure = e
        with lock:
            state["running"] -= 1
            if failure is not None and state["failure"] is None:
                state["failure"] = failure
            if state["running"] == 0 or failure is not None:
                if done.locked():
                    done.release()

    for item in items:
        _thread.start_new_thread(run, (item,))
    done.acquire()
    if state["failure"] is not None:
        raise state["failure"]


def with_tail(begins, ends, start, end):
    """The map ``begins``, ``ends`` (``Pass.bounds``) with [start, end)
    (past what vSphere reported on: a grown disk's new part) changed too."""
    kept = bisect.bisect_left(begins, start)   # the areas before ``start``
    begins, ends = begins[:kept], ends[:kept]
    if ends and ends[-1] >= start:
        start = begins.pop()
        ends.pop()
    return begins + [start], ends + [end]


def disk_map(begins, ends, size):
    """The DiskMap of a disk of ``size`` bytes whose data are exactly the
    areas [begins[i], ends[i]) (``Pass.bounds``: sorted, apart, inside the
    disk).  A busy disk has tens of thousands of them: its extents are
    made by zip and slice assignment, data and holes taking turns, not by
    a Python step each."""
    if debug_flags.extents:
        for start, end in zip(begins, ends):
            debug("changed area at [%d...%d] (length %d)"
                  % (start, end - 1, end - start))
    hole = extents.HOLE | extents.ZERO
    if not begins:
        return extents.DiskMap([(0, size, hole)] if size else [])
    gaps = list(map(sub, begins[1:], ends))
    if gaps and min(gaps) <= 0:
        raise ValueError("changed areas that are not apart")
    made = [None] * (2 * len(begins) - 1)
    made[0::2] = zip(begins, map(sub, ends, begins), repeat(extents.DATA))
    made[1::2] = zip(ends, gaps, repeat(hole))
    starts = [None] * len(made)
    starts[0::2] = begins
    starts[1::2] = ends[:-1]
    if begins[0] > 0:
        made.insert(0, (0, begins[0], hole))
        starts.insert(0, 0)
    if ends[-1] < size:
        made.append((ends[-1], size - ends[-1], hole))
        starts.append(ends[-1])
    return extents.DiskMap(made, starts)
