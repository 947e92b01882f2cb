"""Text from NBD clients made safe for log lines.

A client chooses its export name, which the plugin prints (the "access
denied" line; the file name in VDDK's messages with export=).  Printed as
is, a newline would let the client forge log lines and an ESC would drive
the reader's terminal.  Every character that is not printable (Python's
``str.isprintable``: C0 controls, DEL, C1 controls, Unicode separators
other than the space, format characters such as bidi overrides) is shown
as in a Python string literal: ``\\n``, ``\\r``, ``\\t``, ``\\xNN``,
``\\uNNNN``, ``\\UNNNNNNNN``; a byte that is not UTF-8 is ``\\xNN``.
"""

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char):
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:        # a byte kept by surrogateescape
        return "\\x%02x" % (code - 0xDC00)
    if code < 0x100:
        return "\\x%02x" % code
    if code < 0x10000:
        return "\\u%04x" % code
    return "\\U%08x" % code


def escape_unprintable(text):
    """``text`` with its non-printable characters escaped (printable
    text, such as every ordinary file name, is returned unchanged)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def quoted(text):
    """``text`` as a double-quoted Python string literal: where it ends
    is certain, and the escapes show that it is escaped."""
    return '"%s"' % escape_unprintable(
        text.replace("\\", "\\\\").replace('"', '\\"'))
