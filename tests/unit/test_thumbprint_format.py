"""The thumbprint tool's pure parts: an address is HOST, HOST:PORT or a
bracketed IPv6 address with an optional port (443 by default), anything
else one clear error; a certificate's thumbprint is its SHA-1 as 20
upper-case hex pairs joined by colons, the form thumbprint= takes."""

import hashlib

import pytest

from vddkpy.vsphere.thumbprint import (ThumbprintError, format_thumbprint,
                                       parse_address)


@pytest.mark.parametrize("text, address", [
    ("esxi.example.com", ("esxi.example.com", 443)),
    ("esxi.example.com:8443", ("esxi.example.com", 8443)),
    ("10.0.0.1:1", ("10.0.0.1", 1)),
    ("[::1]", ("::1", 443)),
    ("[fe80::1]:65535", ("fe80::1", 65535)),
    ("fe80::1", ("fe80::1", 443)),        # bare IPv6: no port to take
    ("host:", ("host", 443)),
])
def test_addresses(text, address):
    assert parse_address(text) == address


@pytest.mark.parametrize("text, message", [
    ("", "no host name in ''"),
    (":443", "no host name in ':443'"),
    ("[]:443", "no host name in '[]:443'"),
    ("host:0", "invalid port '0'"),
    ("host:65536", "invalid port '65536'"),
    ("host:https", "invalid port 'https'"),
    ("host:-1", "invalid port '-1'"),
    ("[::1]:x", "invalid port 'x'"),
])
def test_bad_addresses(text, message):
    with pytest.raises(ThumbprintError) as refused:
        parse_address(text)
    assert str(refused.value) == message


def test_empty_input_has_sha1s_known_thumbprint():
    assert format_thumbprint(b"") == \
        "DA:39:A3:EE:5E:6B:4B:0D:32:55:BF:EF:95:60:18:90:AF:D8:07:09"


@pytest.mark.parametrize("der", [b"\x30\x82", bytes(range(256)) * 7])
def test_form_is_twenty_upper_case_pairs(der):
    shown = format_thumbprint(der)
    pairs = shown.split(":")
    assert len(pairs) == 20 and all(len(p) == 2 for p in pairs)
    assert shown == shown.upper()
    assert bytes.fromhex("".join(pairs)) == hashlib.sha1(der).digest()
