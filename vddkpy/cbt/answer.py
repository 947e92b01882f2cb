"""Reading vSphere's answer to QueryChangedDiskAreas as it arrives.

A busy disk's answer holds thousands of areas: rather than building them
all as objects (pyvmomi) before looking at one, the SOAP document is fed
to expat piece by piece and each area goes to the ``Pass`` as soon as its
element ends, so memory stays flat and a bad answer is refused at its
first bad element.  A document that is not a SOAP envelope with either a
DiskChangeInfo or a fault, malformed XML, a missing or non-numeric field:
one BadAnswer saying what, never a traceback.
"""

from xml.parsers import expat

from ..printable import printable

_NUMBERS = ("startOffset", "length", "start")
_SHOWN = 60       # characters of a bad value quoted in a message


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
    """An element or attribute name without its namespace prefix."""
    return name.rpartition(":")[2]


def _number(field, text):
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

    def __init__(self, pass_):
        self.pass_ = pass_
        self._parser = expat.ParserCreate()
        self._parser.buffer_text = True
        self._parser.StartElementHandler = self._start
        self._parser.EndElementHandler = self._end
        self._path = []
        self._chars = []
        self._parser.CharacterDataHandler = self._chars.append
        self._names = {}            # element name -> without its prefix
        self._fields = {}           # of the returnval, then of an area
        self._area = {}
        self._began = False
        self._answered = False
        self._fault = None          # [type, faultstring, keys]

    # -- expat's callbacks -------------------------------------------------

    def _start(self, name, attributes):
        local = self._names.get(name)
        if local is None:
            local = self._names[name] = _local(name)
        name = local
        depth = len(self._path)
        if depth == 0 and name != "Envelope":
            raise _Malformed("is not a SOAP document (its root element is "
                            "<%s>)" % printable(name[:_SHOWN]))
        if depth == 2 and name == "Fault":
            self._fault = ["", "", []]
        if self._fault is not None and depth == 4:      # the detail's fault
            kind = next((v for k, v in attributes.items()
                         if _local(k) == "type"), name)
            self._fault[0] = _local(kind)
        self._path.append(name)
        self._chars.clear()

    def _end(self, name):
        path = self._path
        text = "".join(self._chars)
        self._chars.clear()
        if len(path) == 6 and path[4] == "changedArea" and \
                path[3] == "returnval" and path[1] == "Body" and \
                self._began and self._fault is None:    # the usual case
            if path[5] in ("start", "length"):
                self._area[path[5]] = _number(path[5], text)
        elif self._fault is not None:
            self._fault_field(path, text)
        elif len(path) >= 4 and path[1] == "Body" and path[3] == "returnval":
            self._returnval_field(path[4:], text)
        path.pop()

    # -- the fields --------------------------------------------------------

    def _fault_field(self, path, text):
        if len(path) == 4 and path[3] == "faultstring":
            self._fault[1] = text
        elif path[-1] == "key" and "faultMessage" in path:
            self._fault[2].append(text)

    def _returnval_field(self, inner, text):
        if not inner:                       # </returnval>
            self._begin()
            self._answered = True
        elif inner == ["startOffset"] or inner == ["length"]:
            self._fields[inner[0]] = _number(inner[0], text)
        elif inner[0] == "changedArea":
            self._begin()
            if len(inner) == 2 and inner[1] in ("start", "length"):
                self._area[inner[1]] = _number(inner[1], text)
            elif len(inner) == 1:
                self._end_area()

    def _begin(self):
        if self._began:
            return
        missing = [f for f in ("startOffset", "length")
                   if f not in self._fields]
        if missing:
            raise _Malformed("has no %s before its areas" % missing[0])
        self.pass_.begin(self._fields["startOffset"], self._fields["length"])
        self._began = True

    def _end_area(self):
        area, self._area = self._area, {}
        if "start" not in area or "length" not in area:
            raise _Malformed("has an area without %s" % (
                "start" if "start" not in area else "length"))
        self.pass_.area(area["start"], area["length"])

    # -- use ---------------------------------------------------------------

    def feed(self, data):
        self._parse(data, False)

    def _parse(self, data, final):
        try:
            self._parser.Parse(data, final)
        except expat.ExpatError as e:
            self.pass_.refuse("is not well-formed XML (%s)"
                              % expat.ErrorString(e.code))
        except _Malformed as e:
            self.pass_.refuse(str(e))

    def close(self):
        """None once a complete DiskChangeInfo went to the pass (``end``
        called), or the Fault answered."""
        self._parse(b"", True)
        if self._fault is not None:
            name, message, keys = self._fault
            return Fault(name or "an unnamed fault", message, keys)
        if not self._answered:
            self.pass_.refuse("holds no returnval (DiskChangeInfo)")
        self.pass_.end()
        return None
