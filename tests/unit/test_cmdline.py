"""nbdkit's command line read as each server version reads it: which
long options exist and take an argument, prefixes resolved with the
running version, the -D vddk.FLAG=N debug flags and -v, with nbdkit's
first-occurrence-wins rule."""

import pytest

from vddkpy.nbdkit import cmdline
from vddkpy.nbdkit.compat import _c_int, parse_debug_flags

V1_32, V1_38, V1_42, V1_45 = (1, 32, 5), (1, 38, 0), (1, 42, 3), (1, 45, 1)


def flags(args, version=V1_42, **kw):
    argv = ["nbdkit"] + args + ["python", "plugin.py", "file=/d"]
    return parse_debug_flags(argv, lambda: version, **kw)


def test_long_options_of_each_version():
    names = {v: set(cmdline.long_options(v)) for v in (V1_32, V1_38, V1_42)}
    assert not {"keepalive", "timeout", "no-mc", "print-uri"} & names[V1_32]
    assert {"no-mc", "no-structured-replies"} <= names[V1_38]
    assert "print-uri" not in names[V1_38]
    assert {"keepalive", "keep-alive", "timeout", "time-out",
            "print-uri"} <= names[V1_42]
    assert cmdline.long_options(V1_42)["keepalive"] == (False, "keepalive")
    assert cmdline.long_options(V1_42)["time-out"] == (True, "timeout")


@pytest.mark.parametrize("version", [V1_42, V1_45])
def test_keepalive_takes_no_argument(version):
    verbose, found = flags(["--keepalive", "-D", "vddk.stats=1", "-v"],
                           version)
    assert verbose and found["stats"] == 1


@pytest.mark.parametrize("option", ["--timeout", "--time-out", "--tim"])
def test_timeout_takes_an_argument(option):
    # "-v" here is the time-out's value, not an option.
    verbose, found = flags([option, "-v", "-D", "vddk.stats=1"])
    assert not verbose and found["stats"] == 1


@pytest.mark.parametrize("version", [V1_32, V1_42, V1_45])
@pytest.mark.parametrize("spelling", [
    ["--deb", "vddk.stats=1"], ["--debu=vddk.stats=1"],
    ["--debug", "vddk.stats=1"], ["-vDvddk.stats=1"],
    ["-fvD", "vddk.stats=1"]])
def test_debug_spellings(version, spelling):
    verbose, found = flags(spelling + ["--verb"], version)
    assert verbose and found["stats"] == 1


def test_prefix_resolved_with_the_running_version():
    # "--ke" is --keepalive (no argument) from 1.41.6; "--no-" names one
    # option in 1.32 (--no-sr) and several different ones from 1.37.9.
    assert flags(["--ke", "-v"], V1_42)[0]
    assert flags(["--no-", "-v"], V1_32)[0]
    assert flags(["--no-", "-v"], V1_42)[0]


def test_ambiguous_prefix_is_not_an_option():
    # --ver: --verbose or --version (nbdkit refuses it).
    assert not flags(["--ver"])[0]


def test_exact_names_never_ask_the_version():
    def no_version():
        raise AssertionError("version asked for an exact option name")
    argv = ["nbdkit", "--keepalive", "--timeout", "5", "--verbose",
            "-D", "vddk.stats=1", "python", "p.py"]
    verbose, found = parse_debug_flags(argv, no_version)
    assert verbose and found["stats"] == 1


def test_option_values_are_not_options():
    verbose, found = flags(["-U", "-", "--run", "nbdinfo -v", "-e", "-v",
                            "--filter", "-D"])
    assert not verbose and found["stats"] == 0


def test_double_dash_ends_the_options():
    argv = ["nbdkit", "python", "p.py", "--", "-v", "-Dvddk.stats=1"]
    assert parse_debug_flags(argv, lambda: V1_42) == flags([])


def test_options_after_the_plugin_unless_posixly_correct():
    argv = ["nbdkit", "python", "p.py", "file=/d", "-v"]
    assert list(cmdline.options(argv, lambda: V1_42, permute=True)) \
        == [("v", None)]
    assert list(cmdline.options(argv, lambda: V1_42, permute=False)) == []


def test_first_occurrence_wins():
    found = flags(["-D", "vddk.stats=0", "-D", "vddk.stats=1",
                   "-D", "vddk.datapath=0x0"])[1]
    assert found["stats"] == 0 and found["datapath"] == 0


def test_server_version_from_the_executable(tmp_path):
    fake = tmp_path / "nbdkit"
    fake.write_text("#!/bin/sh\necho 'nbdkit 1.42.3 (nbdkit-1.42.3-2)'\n")
    fake.chmod(0o755)
    assert cmdline.server_version(str(fake)) == (1, 42, 3)
    newest = max(since for *_, since in cmdline.LONG_OPTIONS)
    assert cmdline.server_version(str(tmp_path / "absent")) == newest




def test_defaults_without_flags():
    assert flags([]) == (False, {"datapath": 1, "diskinfo": 0,
                                 "extents": 0, "stats": 0})


def test_other_plugins_flags_are_not_ours():
    verbose, found = flags(["-D", "file.stats=1", "-D", "vddkx.stats=1",
                            "-D", "vddk.stats"])
    assert found["stats"] == 0


def test_flags_of_another_plugin_name():
    assert flags(["-D", "vddkpy.stats=1"], plugin="vddkpy")[1]["stats"] == 1


@pytest.mark.parametrize("text, value", [
    ("1", 1), ("0", 0), ("0x10", 16), ("0X1f", 31), ("010", 8), ("-2", -2),
    ("+3", 3), (" 7 ", 7), ("", 0)])
def test_flag_values_read_as_strtol_base_0(text, value):
    assert _c_int(text) == value
