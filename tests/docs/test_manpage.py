"""Every example of the manual (doc/nbdkit-vddk-plugin.md) runs,
against the VDDK stand-in, in test_readme.py's sandbox and with its
checks; the manual renders; the usage text names it."""

import subprocess

import pytest

from bed import ROOT
from bed.shexamples import sh_examples
from bed.docs import run_example, sandbox  # noqa: F401 (the fixture)

MANUAL = ROOT / "doc" / "nbdkit-vddk-plugin.md"


def runnable(command):
    # The Debian package's command; from a checkout it is the module.
    return command.replace("vddkpy thumbprint ",
                           "python3 -m vddkpy thumbprint ") \
        .replace("vddkpy check ", "python3 -m vddkpy check ")


@pytest.mark.parametrize("command", sh_examples(MANUAL.read_text()))
def test_manual_example(sandbox, command):  # noqa: F811
    run_example(sandbox, runnable(command))


def test_manual_has_examples_of_each_kind():
    text = " ".join(sh_examples(MANUAL.read_text()))
    for kind in ("create=true", "export=", "thumbprint=", "stats-file=",
                 "--filter=blocksize", "nbdkit -r", "--dump-plugin",
                 "vddkpy thumbprint", "vddkpy check"):
        assert kind in text, kind


def test_manual_renders_without_warnings():
    page = subprocess.run(["pandoc", "--standalone", "--to", "man",
                           str(MANUAL)], capture_output=True, text=True,
                          check=True).stdout
    rendered = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z"], input=page,
        capture_output=True, text=True)
    assert rendered.returncode == 0
    assert rendered.stderr == ""
    for section in ("PARAMETERS", "DEBUG FLAGS AND STATISTICS",
                    "LIBRARY LOCATION", "DIFFERENCES FROM THE C PLUGIN",
                    "TROUBLESHOOTING"):
        assert ".SH %s" % section in page


def test_usage_names_the_manual():
    result = subprocess.run(["/usr/bin/python3", "-m", "vddkpy"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0
    assert "The manual: man nbdkit-vddk-plugin (vddkpy " in result.stdout
