"""Paging through QueryChangedDiskAreas without a server: every answer is
checked before it is used (a range nobody reported on counts as changed,
areas must lie inside their answer and the disk, each answer must advance
far enough, the areas of a disk are bounded by its capacity), areas merge
in any order, and a SOAP answer is read as it streams, malformed ones
refused in one line, with flat memory for a huge answer."""

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vddkpy.cbt import answer
from vddkpy.cbt.answer import WHOLE_BYTES, AnswerReader
from vddkpy import extents
from vddkpy.cbt.areas import (MIN_ADVANCE, BadAnswer, Pass, collect,
                              disk_map, with_tail)

MiB = 1 << 20
GRAIN = 64 * 1024


def refusal(pass_, *answer):
    with pytest.raises(BadAnswer) as e:
        pass_.answer(*answer)
    return str(e.value)


# -- the checks of one answer --------------------------------------------------

def test_a_full_answer():
    p = Pass(8 * MiB)
    p.answer(0, 8 * MiB, [(GRAIN, GRAIN), (3 * GRAIN, 512)])
    assert p.complete
    assert p.merged() == [(GRAIN, GRAIN), (3 * GRAIN, 512)]
    assert p.coverage() == {
        "calls": 1, "answered": [0, 8 * MiB], "areas": 2,
        "reported_bytes": GRAIN + 512, "unreported_bytes": 0,
        "changed_bytes": GRAIN + 512, "complete": True}


def test_an_answer_starting_later_leaves_a_gap_that_counts_as_changed():
    p = Pass(8 * MiB)
    p.answer(0, 2 * MiB, [])
    p.answer(3 * MiB, 5 * MiB, [(4 * MiB, GRAIN)])
    assert p.merged() == [(2 * MiB, MiB), (4 * MiB, GRAIN)]
    assert p.coverage()["unreported_bytes"] == MiB
    assert p.calls == 2


def test_an_answer_starting_earlier_is_used_from_the_offset_asked():
    p = Pass(8 * MiB)
    p.answer(0, 2 * MiB, [(0, GRAIN)])
    p.answer(MiB, 7 * MiB, [(MiB, 2 * MiB), (5 * MiB, GRAIN)])
    assert p.merged() == [(0, GRAIN), (2 * MiB, MiB), (5 * MiB, GRAIN)]


def test_unsorted_and_overlapping_areas_are_merged():
    p = Pass(8 * MiB)
    p.answer(0, 8 * MiB, [(5 * MiB, GRAIN), (MiB, GRAIN), (MiB + GRAIN, 512),
                          (0, 512), (MiB, 3 * GRAIN), (7 * MiB, 512),
                          (4 * MiB, 2 * MiB)])
    assert p.merged() == [(0, 512), (MiB, 3 * GRAIN), (4 * MiB, 2 * MiB),
                          (7 * MiB, 512)]


def test_areas_widened_to_the_alignment_and_clipped_to_the_disk():
    p = Pass(MiB + 4096, alignment=256 * 1024)
    p.answer(0, MiB + 4096, [(1000 * 512, 512), (MiB, 4096)])
    assert p.merged() == [(256 * 1024, 256 * 1024), (MiB, 4096)]


@pytest.mark.parametrize("answer, problem", [
    ((0, 8 * MiB, [(7 * MiB, 2 * MiB)]),
     "has the area [7340032, 9437184) outside the range it covers, "
     "[0, 8388608)"),
    ((0, 16 * MiB, [(7 * MiB, 2 * MiB)]),
     "has the area [7340032, 9437184) past the end of the disk (8388608 "
     "bytes)"),
    ((MiB, 7 * MiB, [(0, 512)]),
     "has the area [0, 512) outside the range it covers, [1048576, "
     "8388608)"),
    ((0, 8 * MiB, [(0, 0)]), "has an area of 0 bytes at 0"),
    ((0, 8 * MiB, [(4096, -512)]), "has an area of -512 bytes at 4096"),
    ((-512, 8 * MiB, []), "covers [-512, 8388096), a negative range"),
    ((0, 512, []),
     "covers [0, 512): it must end at 65536 or later (at least 65536 bytes "
     "further, or the end of the disk: no disk of 8388608 bytes needs more "
     "than 128 calls)"),
    ((0, 0, []),
     "covers [0, 0): it must end at 65536 or later (at least 65536 bytes "
     "further, or the end of the disk: no disk of 8388608 bytes needs more "
     "than 128 calls)"),
])
def test_bad_answers_are_refused(answer, problem):
    assert refusal(Pass(8 * MiB), *answer) == (
        "vSphere's answer to QueryChangedDiskAreas at offset 0 " + problem)


def test_no_progress_after_the_first_answer():
    p = Pass(8 * MiB)
    p.answer(0, MiB, [])
    assert refusal(p, 0, MiB, []) == (
        "vSphere's answer to QueryChangedDiskAreas at offset 1048576 covers "
        "[0, 1048576): it must end at 1114112 or later (at least 65536 bytes "
        "further, or the end of the disk: no disk of 8388608 bytes needs "
        "more than 128 calls)")


def test_the_last_answer_may_be_short():
    p = Pass(MiB + 512)
    p.answer(0, MiB, [])
    p.answer(MiB, 512, [(MiB, 512)])
    assert p.complete and p.merged() == [(MiB, 512)]


def test_tiny_pages_stop_at_the_first_answer():
    calls = []

    def ask(pass_):
        calls.append(pass_.offset)
        pass_.answer(pass_.offset, 512, [])

    with pytest.raises(BadAnswer):
        collect(ask, 8 * MiB)
    assert calls == [0]


def test_areas_are_bounded_by_the_capacity():
    p = Pass(64 * 512)
    p.begin(0, 64 * 512)
    for _ in range(64):
        p.area(0, 512)
    with pytest.raises(BadAnswer) as e:
        p.area(0, 512)
    assert str(e.value) == (
        "vSphere's answer to QueryChangedDiskAreas at offset 0 makes 65 "
        "areas: a disk of 32768 bytes has at most 64")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.integers(0, 200), unique=True, max_size=40),
       st.sampled_from([1, 512, 4096]), st.integers(0, 2),
       st.sampled_from([0, 512, 4096, -4096]), st.booleans())
def test_a_page_in_bulk_is_the_same_as_area_by_area(
        cuts, alignment, earlier, shift, sort):
    """Pass.page (a plain answer's areas, joined in bulk when they are
    what vSphere sends) leaves the pass as areas_of does, or refuses the
    same way, for pages that qualify and pages that do not (unsorted,
    touching the map, before the part not answered yet, past the pass's
    range or the disk, off the alignment)."""
    unit, size = 512, 256 * 1024
    first, last = 4096, size - 4096
    base = first + MIN_ADVANCE + shift      # where the second answer starts
    cuts = sorted(cuts)
    areas = [(base + a * unit, (b - a) * unit)
             for a, b in zip(cuts[0::2], cuts[1::2])]
    if not sort:
        areas.reverse()

    def state(bulk):
        p = Pass(size, alignment, first=first, last=last)
        try:
            p.answer(first, MIN_ADVANCE,
                     [(first + MIN_ADVANCE - 4096, 4096)] * earlier)
            p.begin(p.offset, size - p.offset)
            if bulk:
                p.page([s for s, _ in areas], [n for _, n in areas])
            else:
                p.areas_of(areas)
            p.end()
        except BadAnswer as e:
            return str(e)
        return p.coverage(), p.merged()
    assert state(bulk=True) == state(bulk=False)


def test_with_tail():
    assert with_tail([0, MiB], [512, 3 * MiB], 2 * MiB, 4 * MiB) == (
        [0, MiB], [512, 4 * MiB])
    assert with_tail([0], [512], 2 * MiB, 4 * MiB) == (
        [0, 2 * MiB], [512, 4 * MiB])
    assert with_tail([0, 3 * MiB], [512, 3 * MiB + 512], 2 * MiB,
                     4 * MiB) == ([0, 2 * MiB], [512, 4 * MiB])
    assert with_tail([], [], 0, MiB) == ([0], [MiB])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 63), unique=True, max_size=30),
       st.integers(0, 2))
def test_disk_map_is_the_areas_as_data_and_the_rest_as_holes(cuts, tail):
    """Areas from any set of boundaries (data and room taking turns):
    the extents tile the disk in order, data exactly the areas, holes
    between, and every request is answered from them."""
    unit, size = 512, 64 * 512 + tail * 512
    cuts = sorted(cuts)
    areas = [(a * unit, b * unit) for a, b in zip(cuts[0::2], cuts[1::2])
             if a < b]
    begins, ends = [a for a, _ in areas], [b for _, b in areas]
    made = disk_map(begins, ends, size)
    position, kinds = 0, []
    for start, length, kind in made.extents:
        assert start == position and length > 0
        position += length
        kinds.append(kind)
    assert position == size
    assert all(a != b for a, b in zip(kinds, kinds[1:]))
    assert [(s, s + n) for s, n, k in made.extents
            if k == extents.DATA] == areas
    assert all(k == extents.HOLE | extents.ZERO for k in kinds
               if k != extents.DATA)
    for offset in range(0, size, 3 * unit):
        assert made.within(offset, 5 * unit) == extents.cut(
            made.extents, offset, 5 * unit)


def test_disk_map_refuses_areas_that_touch():
    with pytest.raises(ValueError):
        disk_map([0, 512], [512, 1024], 4096)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.integers(1, 16)),
                max_size=60), st.sampled_from([1, 512, 4096]))
def test_merging_in_any_order_is_the_union(areas, alignment):
    unit = 512
    size = 300 * unit
    p = Pass(size, alignment)
    p.answer(0, size, [(s * unit, n * unit) for s, n in areas
                       if (s + n) * unit <= size])
    covered = set()
    for s, n in areas:
        if (s + n) * unit <= size:
            first = s * unit // alignment * alignment
            last = min(size, -(-(s + n) * unit // alignment) * alignment)
            covered.update(range(first, last, unit))
    merged = p.merged()
    assert {b for start, length in merged
            for b in range(start, start + length, unit)} == covered
    assert all(a[0] + a[1] < b[0] for a, b in zip(merged, merged[1:]))


# -- reading the SOAP answer ---------------------------------------------------

HEAD = (b'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        b'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        b'<soapenv:Body>')
TAIL = b"</soapenv:Body></soapenv:Envelope>"


def result(inner):
    return (HEAD + b'<QueryChangedDiskAreasResponse xmlns="urn:vim25">'
            b"<returnval>" + inner + b"</returnval>"
            b"</QueryChangedDiskAreasResponse>" + TAIL)


def area(start, length):
    return b"<changedArea><start>%d</start><length>%d</length></changedArea>" \
        % (start, length)


def read(document, pass_=None, piece=7):
    pass_ = pass_ or Pass(8 * MiB)
    reader = AnswerReader(pass_)
    for i in range(0, len(document), piece):
        reader.feed(document[i:i + piece])
    return pass_, reader.close()


def malformed(document):
    with pytest.raises(BadAnswer) as e:
        read(document)
    return str(e.value).replace("vSphere's answer to QueryChangedDiskAreas "
                                "at offset 0 ", "")


def test_an_answer_read_in_pieces():
    p, fault = read(result(b"<startOffset>0</startOffset><length>8388608"
                           b"</length>" + area(MiB, GRAIN) + area(0, 512)))
    assert fault is None
    assert p.complete and p.merged() == [(0, 512), (MiB, GRAIN)]


@pytest.mark.parametrize("document, problem", [
    (b"<html><body>Service unavailable</body></html>",
     "is not a SOAP document (its root element is <html>)"),
    (b"not xml at all", "is not well-formed XML (syntax error)"),
    (HEAD + b"<QueryChangedDiskAreasResponse>", "is not well-formed XML "
     "(no element found)"),
    (HEAD + b"<QueryChangedDiskAreasResponse/>" + TAIL,
     "holds no returnval (DiskChangeInfo)"),
    (result(b"<startOffset>zero</startOffset><length>1</length>"),
     'startOffset is not a number: "zero"'),
    (result(b"<startOffset>0</startOffset><length></length>"),
     "length is not a number: empty"),
    (result(b"<startOffset>0</startOffset><length>\xd9\xa1</length>"),
     'length is not a number: "\u0661"'),
    (result(b"<startOffset>0</startOffset>" + area(0, 512)),
     "has no length before its areas"),
    (result(b"<startOffset>0</startOffset><length>8388608</length>"
            b"<changedArea><start>0</start></changedArea>"),
     "has an area without length"),
    (result(b"<startOffset>0</startOffset><length>8388608</length>"
            b"<changedArea><start>0</start><length>1\nnbdkit: error: x"
            b"</length></changedArea>"),
     'length is not a number: "1\\nnbdkit: error: x"'),
])
def test_malformed_answers(document, problem):
    assert malformed(document) == problem


def test_a_fault():
    document = (HEAD + b"<soapenv:Fault><faultcode>ServerFaultCode</faultcode>"
                b"<faultstring>Error caused by file x</faultstring><detail>"
                b'<FileFaultFault xmlns="urn:vim25" xsi:type="FileFault">'
                b"<faultMessage><key>vim.hostd.vmsvc.cbt.noTrack</key>"
                b"</faultMessage><file>x</file></FileFaultFault></detail>"
                b"</soapenv:Fault>" + TAIL)
    p, fault = read(document)
    assert (fault.name, fault.message, fault.keys) == (
        "FileFault", "Error caused by file x", ["vim.hostd.vmsvc.cbt.noTrack"])
    assert p.calls == 0


def test_a_huge_answer_streams_in_flat_memory():
    """400 000 areas in one answer of a 1 GiB disk: read in 64 KiB pieces,
    the memory used stays far below what the areas would take as
    objects."""
    count = 400000
    body = b"".join(area(i * 2048, 512) for i in range(count))
    document = result(b"<startOffset>0</startOffset><length>%d</length>"
                      % (1 << 30) + body)
    tracemalloc.start()
    try:
        p, fault = read(document, Pass(1 << 30, alignment=256 * 1024),
                        piece=64 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fault is None and p.areas == count
    assert p.merged() == [(0, (count * 2048 + 256 * 1024 - 1)
                           // (256 * 1024) * 256 * 1024)]
    assert peak < 2 * MiB, peak


def outcome(document, whole_bytes):
    """What reading ``document`` (in 7-byte pieces) does to a pass of a
    8 MiB disk: its state, or the refusal."""
    pass_ = Pass(8 * MiB, alignment=512)
    reader = AnswerReader(pass_, whole_bytes=whole_bytes)
    try:
        for i in range(0, len(document), 7):
            reader.feed(document[i:i + 7])
        fault = reader.close()
    except BadAnswer as e:
        return str(e)
    return (fault, pass_.merged(), pass_.offset, pass_.calls, pass_.areas,
            pass_.reported_bytes, pass_.gap_bytes)


def plain_answer(start, length, areas):
    return result(b"<startOffset>%d</startOffset><length>%d</length>"
                  % (start, length) + b"".join(area(*a) for a in areas))


NUMBERS = st.integers(0, 9 * MiB) | st.integers(0, 1 << 64)
AREAS = st.lists(st.tuples(NUMBERS, NUMBERS), max_size=20)
# Ways of writing the same answer that are not plain, and damage.
VARIANTS = [
    (b"<returnval>", b"<returnval >"),
    (b"<startOffset>", b"<startOffset>\n"),
    (b"</length><changedArea>", b"</length> <changedArea>"),
    (b"<changedArea>", b"<vim:changedArea xmlns:vim='urn:vim25'>"),
    (b"</changedArea>", b"</changedArea><!-- -->"),
    (b"<start>", b"<start>0"),
    (b"<start>", b"<start>-"),
    (b"<length>", b"<length>&#48;"),
    (b"</start>", b"</start><x/>"),
    (b"</returnval>", b"<changedArea><start>1</start></changedArea>"
     b"</returnval>"),
    (b"soapenv:Body", b"soap:Body"),
    (b"</soapenv:Envelope>", b"</soapenv:Envelope><x/>"),
    (b"</soapenv:Envelope>", b""),
    (b"xmlns:soapenv=", b"xmlns:soap="),          # an unbound prefix
    (b"<soapenv:Envelope ", b'<soapenv:Envelope a="1" a="2" '),
]


@settings(max_examples=300, deadline=None)
@given(NUMBERS, NUMBERS, AREAS, st.sampled_from([None] + VARIANTS),
       st.integers(0, 20))
def test_plain_and_streamed_reading_agree(start, length, areas, variant,
                                          where):
    """An answer kept whole (and read as plain if it is), or streamed
    through the pull parser: the same pass, or the same refusal."""
    document = written = plain_answer(start, length, areas)
    if variant is not None and variant[0] in written:
        old, new = variant
        parts = written.split(old)
        where = 1 + where % (len(parts) - 1)
        document = old.join(parts[:where]) + new + old.join(parts[where:])
    streamed = outcome(document, whole_bytes=0)
    assert outcome(document, whole_bytes=WHOLE_BYTES) == streamed
    if document == written and isinstance(streamed, tuple):
        assert answer._read_plain(document, Pass(8 * MiB))


def test_the_bed_s_answer_is_plain():
    """The form vSphere and the bed write (whitespace between the SOAP
    elements, the response's own namespace) is read as plain."""
    document = (b'<?xml version="1.0" encoding="UTF-8"?>\n<soapenv:Envelope '
                b'xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" '
                b'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
                b'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
                b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\n'
                b'<soapenv:Body><QueryChangedDiskAreasResponse '
                b'xmlns="urn:vim25"><returnval><startOffset>0</startOffset>'
                b"<length>8388608</length>" + area(MiB, GRAIN)
                + b"</returnval></QueryChangedDiskAreasResponse>"
                b"</soapenv:Body>\n</soapenv:Envelope>")
    pass_ = Pass(8 * MiB)
    assert answer._read_plain(document, pass_)
    assert pass_.merged() == [(MiB, GRAIN)] and pass_.complete


def test_an_answer_longer_than_kept_whole_is_streamed():
    document = plain_answer(0, 8 * MiB, [(i * 512, 512) for i in range(
        WHOLE_BYTES // len(area(0, 512)) + 1)])
    assert len(document) > WHOLE_BYTES
    assert outcome(document, WHOLE_BYTES) == outcome(document, 0)
    assert outcome(document, WHOLE_BYTES)[4] > 7000


# -- the capacity the changeId was taken at ------------------------------------

class Params:
    vm = "moref=vm-1"
    snapshot = "snapshot-2"

    def __init__(self, changed_since):
        self.changed_since = changed_since


class AnsweringVsphere:
    """Answers every QueryChangedDiskAreas with ``areas`` over the rest
    of the disk."""

    def __init__(self, areas):
        self.areas = areas

    def call(self, function, pass_, change_id):
        pass_.answer(pass_.offset, pass_.capacity - pass_.offset, self.areas)


def Disk(changed_since, capacity, base_capacity, areas):
    """A TrackedDisk as look_up leaves it."""
    from vddkpy.cbt.tracked import TrackedDisk
    disk = TrackedDisk(AnsweringVsphere(areas), Params(changed_since),
                       "[datastore1] vm/vm.vmdk")
    disk.capacity, disk.base_capacity = capacity, base_capacity
    disk.device_key = 2000
    return disk


def map_of(disk, size):
    """The map a connection serves for ``disk`` on VDDK's ``size``."""
    from vddkpy.cbt.tracked import changed_pass, served_map
    return served_map(disk, changed_pass(disk), size)


def data_of(disk_map, size):
    from vddkpy import extents
    return [(start, length) for start, length, kind
            in disk_map.within(0, size) if kind == extents.DATA]


def test_a_grown_disk_serves_its_new_tail_as_changed():
    disk = Disk("52 a/3", 12 * MiB, 8 * MiB, [(MiB, 512)])
    disk_map = map_of(disk, 12 * MiB)
    assert data_of(disk_map, 12 * MiB) == [(MiB, 256 * 1024),
                                           (8 * MiB, 4 * MiB)]


def test_a_tail_vsphere_does_not_report_on_is_changed():
    """VDDK's size above vSphere's capacity: the rest is changed."""
    disk = Disk("*", 8 * MiB, None, [(8 * MiB - 512, 512)])
    disk_map = map_of(disk, 9 * MiB)
    assert data_of(disk_map, 9 * MiB) == [(8 * MiB - 512, MiB + 512)]


def test_a_shrunk_disk_needs_a_full_copy():
    from vddkpy.errors import PluginError
    disk = Disk("52 a/3", 8 * MiB, 12 * MiB, [])
    with pytest.raises(PluginError) as e:
        map_of(disk, 8 * MiB)
    assert str(e.value) == (
        "changed-since=52 a/3: the disk has shrunk from 12582912 to 8388608 "
        "bytes since this changeId: a full copy is needed: make one with "
        "changed-since=* and use the changeId it reports")


# -- a large disk asked in ranges at once --------------------------------------

RANGE = 2 * MiB     # the ranges of the 8 MiB disk below: 4 of them


class PagingVsphere:
    """Answers each call from the offset asked with at most ``page`` of
    the disk's ``areas`` (as vSphere pages at 2000), the answer reaching
    the end of the disk when they are all in it; ``lie(offset)`` may
    replace the answer at an offset.  The first call of each range waits
    until every range has made one: the ranges are asked at once, or the
    barrier breaks."""

    def __init__(self, areas, page=2, lie=None, ranges=4):
        import threading
        self.areas = sorted(areas)
        self.page = page
        self.lie = lie or (lambda offset: None)
        self.calls = []
        self.barrier = threading.Barrier(ranges, timeout=30)

    def ask(self, pass_):
        offset = pass_.offset
        self.calls.append(offset)
        if offset % RANGE == 0 and self.barrier is not None:
            self.barrier.wait()
        answer = self.lie(offset)
        if answer is None:
            areas = [a for a in self.areas if a[0] + a[1] > offset]
            areas = [(max(s, offset), s + n - max(s, offset))
                     for s, n in areas][:self.page]
            end = pass_.capacity if len(areas) < self.page \
                else max(s + n for s, n in areas)
            answer = (offset, end - offset, areas)
        pass_.answer(*answer)


def in_ranges(vsphere, capacity=8 * MiB, alignment=512):
    return collect(vsphere.ask, capacity, alignment, range_bytes=RANGE)


def test_split():
    from vddkpy.cbt.areas import split
    GiB = 1 << 30
    assert split(64 * GiB) == [(i * 8 * GiB, (i + 1) * 8 * GiB)
                               for i in range(8)]
    assert split(1024 * GiB) == [(i * 128 * GiB, (i + 1) * 128 * GiB)
                                 for i in range(8)]
    assert split(20 * GiB) == [(0, 16 * GiB), (16 * GiB, 20 * GiB)]
    assert split(16 * MiB) == [(0, 16 * MiB)]
    assert split(8 * MiB, RANGE) == [(0, RANGE), (RANGE, 2 * RANGE),
                                     (2 * RANGE, 3 * RANGE),
                                     (3 * RANGE, 4 * RANGE)]


AREAS = [(GRAIN, GRAIN), (MiB, 512), (2 * MiB - 512, 1024),
         (3 * MiB, GRAIN), (3 * MiB + 4 * GRAIN, GRAIN), (5 * MiB, 512),
         (7 * MiB, GRAIN), (8 * MiB - 512, 512)]


def test_the_ranges_are_asked_at_once_and_joined_in_order():
    """Each range pages on its own from its start; an answer reaching
    past its range is used up to the range's end only; an area across a
    boundary is one area again."""
    vsphere = PagingVsphere(AREAS)
    p = in_ranges(vsphere)
    assert p.merged() == [(GRAIN, GRAIN), (MiB, 512), (2 * MiB - 512, 1024),
                          (3 * MiB, GRAIN), (3 * MiB + 4 * GRAIN, GRAIN),
                          (5 * MiB, 512), (7 * MiB, GRAIN),
                          (8 * MiB - 512, 512)]
    assert sorted(vsphere.calls) == [0, MiB + 512, 2 * MiB, 3 * MiB + GRAIN,
                                     4 * MiB, 6 * MiB]
    assert p.coverage() == {
        "calls": 6, "answered": [0, 8 * MiB], "areas": 12,
        "reported_bytes": 4 * GRAIN + 3 * 512 + 1024, "unreported_bytes": 0,
        "changed_bytes": 4 * GRAIN + 3 * 512 + 1024, "complete": True}


def test_a_gap_inside_the_second_range_counts_as_changed():
    """The second page of the second range starts 256 KiB after the
    offset asked for."""
    asked = 3 * MiB + GRAIN
    vsphere = PagingVsphere(AREAS, lie=lambda offset: (
        offset + 3 * GRAIN, 8 * MiB - offset - 3 * GRAIN,
        [(3 * MiB + 4 * GRAIN, GRAIN)]) if offset == asked else None)
    p = in_ranges(vsphere)
    assert (3 * MiB, 5 * GRAIN) in p.merged()
    assert p.coverage()["unreported_bytes"] == 3 * GRAIN
    assert p.complete


def test_a_lying_start_offset_in_the_third_range():
    """The third range's answer says it starts 1 MiB later than asked:
    that MiB counts as changed (not the rest of the disk), and the
    fourth range is asked all the same."""
    vsphere = PagingVsphere(AREAS, lie=lambda offset: (
        offset + MiB, 8 * MiB - offset - MiB, []) if offset == 4 * MiB
        else None)
    p = in_ranges(vsphere)
    assert (4 * MiB, MiB) in p.merged()
    assert (5 * MiB, 512) not in p.merged()     # inside the MiB
    assert (7 * MiB, GRAIN) in p.merged()
    assert p.coverage()["unreported_bytes"] == MiB


def test_an_answer_earlier_than_asked_adds_nothing_before_its_range():
    """The fourth range's answer starts at 0 and lists an area of the
    first range that is not there: it is not taken (each range's map
    holds only what lies inside it, from the offset asked on)."""
    vsphere = PagingVsphere(AREAS, lie=lambda offset: (
        0, 8 * MiB, [(4 * GRAIN, GRAIN), (7 * MiB, GRAIN)])
        if offset == 6 * MiB else None)
    p = in_ranges(vsphere)
    assert (4 * GRAIN, GRAIN) not in p.merged()
    assert (7 * MiB, GRAIN) in p.merged() and (8 * MiB - 512, 512) \
        not in p.merged()


def test_a_bad_answer_in_the_last_range_is_refused_with_its_offset():
    vsphere = PagingVsphere(AREAS, lie=lambda offset: (
        offset, GRAIN, [(offset + GRAIN, 512)]) if offset == 6 * MiB
        else None)
    with pytest.raises(BadAnswer) as e:
        in_ranges(vsphere)
    assert str(e.value) == (
        "vSphere's answer to QueryChangedDiskAreas at offset 6291456 has "
        "the area [6356992, 6357504) outside the range it covers, "
        "[6291456, 6356992)")


def test_a_short_page_in_a_range_is_refused():
    vsphere = PagingVsphere(AREAS, lie=lambda offset: (
        offset, 512, []) if offset == 2 * MiB else None)
    with pytest.raises(BadAnswer) as e:
        in_ranges(vsphere)
    assert str(e.value) == (
        "vSphere's answer to QueryChangedDiskAreas at offset 2097152 covers "
        "[2097152, 2097664): it must end at 2162688 or later (at least "
        "65536 bytes further, or the end of the range it was asked for: no "
        "range of 2097152 bytes needs more than 32 calls)")


def test_a_failed_range_is_raised_without_waiting_for_the_others():
    """The second range's answer is bad while the other ranges' calls are
    still waiting for vSphere: the failure comes out at once, and once
    their answers come they ask no more."""
    import threading
    answering = threading.Event()
    vsphere = PagingVsphere(AREAS, page=1, ranges=1)

    def ask(pass_):
        if pass_.offset == 2 * MiB:
            vsphere.calls.append(pass_.offset)
            pass_.answer(pass_.offset, 512, [])
        else:
            assert answering.wait(30)
            vsphere.ask(pass_)

    with pytest.raises(BadAnswer):
        collect(ask, 8 * MiB, range_bytes=RANGE)
    assert vsphere.calls == [2 * MiB]
    answering.set()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 127), st.integers(1, 40)),
                max_size=40), st.integers(1, 5),
       st.sampled_from([1, 512, 256 * 1024]))
def test_ranges_joined_are_the_whole_disk_map(areas, page, alignment):
    """Whatever the areas (in change-tracking blocks of 64 KiB) and the
    page size, the ranges' maps joined are the map of one pass over the
    whole disk."""
    unit = GRAIN
    areas = [(s * unit, min(n * unit, 8 * MiB - s * unit)) for s, n in areas]
    vsphere = PagingVsphere(areas, page=page, ranges=1)
    vsphere.barrier = None          # (not what this test is about)

    whole = Pass(8 * MiB, alignment)
    whole.answer(0, 8 * MiB, areas)
    joined = collect(lambda p: vsphere.ask(p), 8 * MiB, alignment,
                     range_bytes=RANGE)
    assert joined.merged() == whole.merged()
    assert joined.complete
