"""Reading vSphere's answer to QueryChangedDiskAreas as it arrives.

A busy disk's answer holds thousands of areas: rather than building them
all as objects (pyvmomi) before looking at one, the SOAP document is fed
to ElementTree's pull parser (expat, its tree built in C) piece by piece,
each area goes to the ``Pass`` as soon as its element ends and every
element is dropped once read, so memory stays flat and a bad answer is
refused at its first bad element.  A document that is not a SOAP
envelope with either a DiskChangeInfo or a fault, malformed XML, a
missing or non-numeric field: one BadAnswer saying what, never a
traceback.

The usual answer is read faster (``_read_plain``): one of at most
WHOLE_BYTES (a page of 2000 areas is about 150 KB) is kept whole until it
ends; if it is written in the plain form vSphere and the bed write (no
attributes, namespace prefixes, comments or spaces inside the
DiskChangeInfo, numbers of ASCII digits: a regular expression says so)
and is well-formed XML (expat, with no handler, checks what is not its
run of areas), its numbers are taken with a regular expression and
handed to the pass as one page (``Pass.page``), in a fifth of the time.
Anything else (a fault, another form, more bytes) goes through the pull
parser, which reads every answer.  On a plain answer both leave the pass
in the same state, or make the same refusal, which
tests/unit/test_cbt_paging.py checks on generated and damaged answers.
"""

import re
from xml.etree.ElementTree import ParseError, XMLPullParser
from xml.parsers import expat

from ..printable import printable

_SHOWN = 60       # characters of a bad value quoted in a message
WHOLE_BYTES = 512 * 1024    # the most of an answer kept whole (see above)

_SPACE = rb"[ \t\r\n]*"
_PLAIN_ANSWER = re.compile(
    rb'(?:<\?xml version="1\.0" encoding="UTF-8"\?>)?' + _SPACE
    + rb"<soapenv:Envelope[^<>]*>" + _SPACE + rb"<soapenv:Body>" + _SPACE
    + rb'<QueryChangedDiskAreasResponse xmlns="urn:vim25">' + _SPACE
    + rb"<returnval><startOffset>([0-9]{1,20})</startOffset>"
    rb"<length>([0-9]{1,20})</length>"
    rb"((?:<changedArea><start>[0-9]{1,20}</start>"
    rb"<length>[0-9]{1,20}</length></changedArea>)*)"
    rb"</returnval>" + _SPACE + rb"</QueryChangedDiskAreasResponse>" + _SPACE
    + rb"</soapenv:Body>" + _SPACE + rb"</soapenv:Envelope>" + _SPACE)
_PLAIN_AREA = re.compile(rb"<start>([0-9]+)</start><length>([0-9]+)</length>")


class Fault:
    """A SOAP fault: vSphere's fault type (``InvalidArgument``,
    ``FileFault``, ...), its message and its faultMessage keys."""

    def __init__(self, name, message, keys):
        self.name = name
        self.message = message
        self.keys = keys

    def text(self):
        return "%s: %s" % (self.name, self.message) if self.message \
            else self.name


class _Malformed(Exception):
    """What is wrong with the document (the pass says where)."""


def _local(name):
    """An element or attribute name (or a type) without its namespace."""
    return name.rpartition("}")[2].rpartition(":")[2]


def _number(field, text):
    text = text or ""
    if text.isdigit() and text.isascii():       # the usual case, quickly
        return int(text)
    value = text.strip()
    digits = value[1:] if value.startswith("-") else value
    if not (digits.isascii() and digits.isdigit()):
        raise _Malformed("%s is not a number: %s" % (
            field, "empty" if not value else
            '"%s"' % printable(value[:_SHOWN])))
    return int(value)


class AnswerReader:
    """Feeds one QueryChangedDiskAreas answer to ``pass_``; ``feed``
    the bytes as they come, then ``close`` returns None, or the Fault
    the server answered with."""

    def __init__(self, pass_, whole_bytes=WHOLE_BYTES):
        self.pass_ = pass_
        self._whole = []            # the answer so far, while it may be plain
        self._whole_left = whole_bytes
        self._parser = XMLPullParser(events=("start", "end"))
        self._path = []             # local names of the open elements
        self._elements = []         # and the elements
        self._names = {}            # tag -> local name
        self._fields = {}           # of the returnval
        self._began = False
        self._answered = False
        self._fault = None          # [type, faultstring, keys]
        self._inside = 0            # depth inside a changedArea

    def _name(self, tag):
        local = self._names.get(tag)
        if local is None:
            local = self._names[tag] = _local(tag)
        return local

    def _read(self):
        """The events parsed so far: each element looked at when it
        starts and when it ends, then dropped; an area's own elements
        only counted (``_inside``), and read from the area when it
        ends."""
        path, elements = self._path, self._elements
        for event, element in self._parser.read_events():
            if self._inside:
                self._inside += 1 if event == "start" else -1
                if self._inside:
                    continue
                self._end_area(element)
            elif event == "start":
                name = self._name(element.tag)
                self._start(name, element)
                path.append(name)
                elements.append(element)
                continue
            elif self._fault is not None:
                self._fault_field(path, element)
            elif len(path) >= 4 and path[1] == "Body" and \
                    path[3] == "returnval":
                self._returnval_field(path[4:], element)
            path.pop()
            elements.pop()
            if elements:
                elements[-1].remove(element)

    # -- the elements ------------------------------------------------------

    def _start(self, name, element):
        depth = len(self._path)
        if depth == 0 and name != "Envelope":
            raise _Malformed("is not a SOAP document (its root element is "
                             "<%s>)" % printable(name[:_SHOWN]))
        if depth == 2 and name == "Fault":
            self._fault = ["", "", []]
        if self._fault is not None and depth == 4:      # the detail's fault
            kind = next((v for k, v in element.attrib.items()
                         if _local(k) == "type"), name)
            self._fault[0] = _local(kind)
        if depth == 4 and name == "changedArea" and self._fault is None \
                and self._path[1] == "Body" and self._path[3] == "returnval":
            self._begin()
            self._inside = 1

    def _fault_field(self, path, element):
        text = element.text or ""
        if len(path) == 4 and path[3] == "faultstring":
            self._fault[1] = text
        elif path[-1] == "key" and "faultMessage" in path:
            self._fault[2].append(text)

    def _returnval_field(self, inner, element):
        if not inner:                       # </returnval>
            self._begin()
            self._answered = True
        elif inner == ["startOffset"] or inner == ["length"]:
            self._fields[inner[0]] = _number(inner[0], element.text)

    def _begin(self):
        if self._began:
            return
        missing = [f for f in ("startOffset", "length")
                   if f not in self._fields]
        if missing:
            raise _Malformed("has no %s before its areas" % missing[0])
        self.pass_.begin(self._fields["startOffset"], self._fields["length"])
        self._began = True

    def _end_area(self, element):
        area = {}
        for field in element:
            name = self._name(field.tag)
            if name == "start" or name == "length":
                area[name] = _number(name, field.text)
        if "start" not in area or "length" not in area:
            raise _Malformed("has an area without %s" % (
                "start" if "start" not in area else "length"))
        self.pass_.area(area["start"], area["length"])

    # -- use ---------------------------------------------------------------

    def feed(self, data):
        if self._whole is not None:
            self._whole_left -= len(data)
            self._whole.append(data)
            if self._whole_left >= 0:
                return
            kept, self._whole = self._whole, None   # too long to be plain
            for data in kept:
                self._parse(self._parser.feed, data)
            return
        self._parse(self._parser.feed, data)

    def _parse(self, function, *args):
        try:
            function(*args)
            self._read()
        except ParseError as e:
            self.pass_.refuse("is not well-formed XML (%s)"
                              % expat.ErrorString(e.code))
        except _Malformed as e:
            self.pass_.refuse(str(e))

    def close(self):
        """None once a complete DiskChangeInfo went to the pass (``end``
        called), or the Fault answered."""
        if self._whole is not None:
            document, self._whole = b"".join(self._whole), None
            if _read_plain(document, self.pass_):
                return None
            self._parse(self._parser.feed, document)
        self._parse(self._parser.close)
        if self._fault is not None:
            name, message, keys = self._fault
            return Fault(name or "an unnamed fault", message, keys)
        if not self._answered:
            self.pass_.refuse("holds no returnval (DiskChangeInfo)")
        self.pass_.end()
        return None


def _read_plain(document, pass_):
    """True once a plain answer (see the module's text) went to
    ``pass_``; False, with nothing done, for any other document."""
    plain = _PLAIN_ANSWER.fullmatch(document)
    if plain is None:
        return False
    # The run of areas is well-formed (fixed tags around digits): expat
    # checks the rest, the envelope.
    areas_start, areas_end = plain.span(3)
    try:
        expat.ParserCreate(namespace_separator="}").Parse(
            document[:areas_start] + document[areas_end:], True)
    except expat.ExpatError:
        return False
    pairs = _PLAIN_AREA.findall(document, areas_start, areas_end)
    pass_.begin(int(plain[1]), int(plain[2]))
    pass_.page([int(start) for start, _ in pairs],
               [int(length) for _, length in pairs])
    pass_.end()
    return True
