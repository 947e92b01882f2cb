"""Text from disks, VDDK and clients is escaped one way for log lines:
printable text without a backslash is unchanged; every other character is
written as in a Python string literal, so a newline cannot forge a line,
an ESC cannot drive a terminal, and a typed backslash-n differs from a
newline."""

import ast

import pytest

from vddkpy.printable import printable, quoted

UNDECODABLE = b"\xff\x80".decode("utf-8", "surrogateescape")


@pytest.mark.parametrize("text", [
    "", "/vm/disk.vmdk", "[datastore1] Fedora/Fedora.vmdk", "é ü 日本",
    "a b", "quote\"'", "60 00 c2 9a"])
def test_ordinary_text_is_unchanged(text):
    assert printable(text) == text


@pytest.mark.parametrize("text, shown", [
    ("a\nb", r"a\nb"),
    ("a\\nb", r"a\\nb"),
    ("\r", r"\r"),
    ("\t", r"\t"),
    ("\x1b[2J", r"\x1b[2J"),
    ("\x07", r"\x07"),
    ("\x00", r"\x00"),
    ("\x7f", r"\x7f"),
    ("\x9b", r"\x9b"),                  # C1 CSI
    ("\u202e", r"\u202e"),              # bidi override
    ("\u2028", r"\u2028"),              # line separator
    ("\U000e0001", r"\U000e0001"),      # language tag (format character)
    (UNDECODABLE, r"\xff\x80"),
    ("x\\", r"x\\"),
])
def test_what_is_escaped(text, shown):
    assert printable(text) == shown


@pytest.mark.parametrize("text", [
    "a\nb", "a\\nb", "\x1b]0;t\x07\r\t\x7f\x9b\u202e", "\\\\\n", "\U000e0001"])
def test_escapes_read_back_as_the_text(text):
    assert ast.literal_eval('"%s"' % printable(text).replace('"', '\\"')) \
        == text


def test_undecodable_bytes_read_back_as_the_bytes():
    shown = printable(UNDECODABLE)
    assert ast.literal_eval('b"%s"' % shown) == b"\xff\x80"


def test_output_is_always_printable():
    everything = "".join(map(chr, range(0x2100))) + UNDECODABLE
    assert printable(everything).isprintable()


def test_quoted_escapes_quotes_and_backslashes():
    assert quoted('say "\\"\n') == r'"say \"\\\"\n"'
    assert quoted("plain") == '"plain"'
    assert ast.literal_eval(quoted('a"b\\c\n')) == 'a"b\\c\n'
