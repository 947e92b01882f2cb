"""After an opaque VDDK error on a remote disk, the plugin prints one
``hint:`` line saying what to do; which hint depends on the error's low
16 bits, where it happened (connect, open, data) and the parameters.
Local disks get none."""

from types import SimpleNamespace

import pytest

from vddkpy import hints

HIGH_BITS = 0x1234 << 32        # VDDK's extra information above the code


def remote(thumbprint="AA:BB", snapshot=None):
    return SimpleNamespace(is_remote=True, thumbprint=thumbprint,
                           snapshot=snapshot, transports=None)


@pytest.mark.parametrize("where", ["connect", "open", "data"])
@pytest.mark.parametrize("code", [1, 2, 13, 4000, 13003, 14009])
def test_local_disks_get_no_hint(code, where):
    local = SimpleNamespace(is_remote=False, thumbprint=None, snapshot=None,
                            transports=None)
    assert hints.for_error(code, local, where, "AA:BB") == []


@pytest.mark.parametrize("code", [14009, 14009 | HIGH_BITS])
@pytest.mark.parametrize("where", ["connect", "open"])
def test_refused_connection_names_both_ports(code, where):
    (line,) = hints.for_error(code, remote(), where)
    assert line == hints.REFUSED
    assert "443" in line and "902" in line


def test_refused_during_data_transfer_is_not_a_set_up_problem():
    assert hints.for_error(14009, remote(), "data") == []


@pytest.mark.parametrize("code, hint", [
    (4000, hints.VM_NOT_FOUND), (13003, hints.SNAPSHOT_NOT_FOUND),
    (4000 | HIGH_BITS, hints.VM_NOT_FOUND)])
def test_unknown_moref_at_connect(code, hint):
    assert hints.for_error(code, remote(), "connect") == [hint]


@pytest.mark.parametrize("where", ["open", "data"])
def test_unknown_moref_hints_only_at_connect(where):
    assert hints.for_error(4000, remote(), where) == []


def test_error_1_at_open_gives_upstreams_hint_and_the_thumbprint():
    lines = hints.for_error(1, remote(thumbprint="AA:BB"), "open", "CC:DD")
    assert lines == [hints.OPEN_HINT,
                     "hint: the server's certificate has thumbprint CC:DD, "
                     "not AA:BB: use thumbprint=CC:DD"]
    assert lines[0].startswith('VDDK "Unknown error" can be caused by')


def test_error_1_without_thumbprint_says_to_add_one():
    lines = hints.for_error(1, remote(thumbprint=None), "open", "CC:DD")
    assert lines[1] == ("hint: no thumbprint= was given; the server's "
                        "certificate has CC:DD: add thumbprint=CC:DD")


@pytest.mark.parametrize("actual", [None, "", "aa:bb", "AA:BB"])
def test_error_1_with_the_right_or_unknown_thumbprint(actual):
    assert hints.for_error(1, remote("AA:BB"), "open", actual) == \
        [hints.OPEN_HINT]


def test_error_1_with_more_bits_is_not_upstreams_case():
    # Upstream compares the whole 64-bit value for its Error 1 hint.
    assert hints.for_error(1 | HIGH_BITS, remote(), "open", "CC:DD") == []


@pytest.mark.parametrize("snapshot, hint", [
    (None, hints.RUNNING_VM), ("snapshot-1", hints.NO_TRANSPORT)])
def test_error_13_at_open_depends_on_snapshot(snapshot, hint):
    assert hints.for_error(13, remote(snapshot=snapshot), "open") == [hint]
    assert hints.for_error(13 | HIGH_BITS, remote(snapshot=snapshot),
                           "open") == [hint]


@pytest.mark.parametrize("where, expected", [
    ("data", [hints.NFC_MEMORY]), ("open", []), ("connect", [])])
def test_out_of_memory_hints_only_on_data(where, expected):
    assert hints.for_error(2, remote(), where) == expected


def test_every_hint_of_ours_is_marked():
    for line in (hints.REFUSED, hints.RUNNING_VM, hints.NO_TRANSPORT,
                 hints.NFC_MEMORY, hints.VM_NOT_FOUND,
                 hints.SNAPSHOT_NOT_FOUND, hints.thumbprint_hint("A", None),
                 hints.thumbprint_hint("A", "B")):
        assert line.startswith("hint: ") and "\n" not in line
