"""Text from the disk, the library or a client made safe for log lines.

A client chooses its export name, which the plugin prints (the "access
denied" line; the file name in VDDK's messages with export=); a VMDK's
descriptor gives the parent file name and uuid that ``-D vddk.diskinfo=1``
prints; VDDK's log messages and error texts quote both.  Printed as is, a
newline would forge log lines and an ESC or BEL would drive the reader's
terminal.  ``printable`` is the one way all of them are shown: every
character that is not printable (Python's ``str.isprintable``: C0
controls, DEL, C1 controls, Unicode separators other than the space,
format characters such as bidi overrides) is written as in a Python string
literal: ``\\n``, ``\\r``, ``\\t``, ``\\xNN``, ``\\uNNNN``,
``\\UNNNNNNNN``; a byte that is not UTF-8 is ``\\xNN``; and a backslash is
``\\\\``, so that an escape always stands for what it says (``a\\nb``
typed with a backslash prints ``a\\\\nb``, a real newline ``a\\nb``).
Printable text without a backslash, such as every ordinary file name, is
unchanged.
"""

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(char):
    if char in _NAMED:
        return _NAMED[char]
    if char.isprintable():
        return char
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:        # a byte kept by surrogateescape
        return "\\x%02x" % (code - 0xDC00)
    if code < 0x100:
        return "\\x%02x" % code
    if code < 0x10000:
        return "\\u%04x" % code
    return "\\U%08x" % code


def printable(text):
    """``text`` with backslashes and non-printable characters escaped."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(map(_escape, text))


def quoted(text):
    """``text`` as a double-quoted Python string literal: where it ends
    is certain, and the escapes show that it is escaped."""
    return '"%s"' % printable(text).replace('"', '\\"')
