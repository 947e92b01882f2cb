"""One command surface: ``vddkpy SUBCOMMAND``.  ``vddkpy --help`` lists
the subcommands, one line each; a subcommand's module is imported only
when it runs; ``vddkpy sync`` says in one line when this build lacks it.
The old spellings (``vddkpy --check``, ``vddkpy-thumbprint``, ``python3 -m
vddkpy.thumbprint``, ``python3 -m vddkpy.install [--uninstall]``, pip's
``vddkpy-install``, ``scripts/install-plugin.sh [--uninstall]``) do what
the new one does, print the same, and then name the new one in one line
on stderr."""

import shutil
import subprocess
from pathlib import Path

import pytest

from bed import ROOT, TIMEOUT
from bed.embedded import EMBEDDED, PLUGINDIR
from bed.tls import tls_server

PYTHON = "/usr/bin/python3"
SITE = EMBEDDED.site_packages       # where vddkpy install puts vddkpy
SUBCOMMANDS = ["check", "sync", "changed-areas", "thumbprint", "install",
               "uninstall", "status"]


def run(command, cwd=ROOT):
    return subprocess.run([str(c) for c in command], cwd=cwd,
                          capture_output=True, text=True, timeout=TIMEOUT)


def vddkpy(*args):
    return run([PYTHON, "-m", "vddkpy"] + list(args))


def as_script(module, argv):
    """What an installed command script runs: MODULE's main(argv)."""
    return run([PYTHON, "-c", "import sys; from %s import main; "
                "sys.exit(main(%r))" % (module, argv)])


def note(old, new):
    return "vddkpy: note: '%s' is now '%s'\n" % (old, new)


def assert_same_then_note(old, new, note_line):
    assert (old.returncode, old.stdout) == (new.returncode, new.stdout)
    assert old.stderr == new.stderr + note_line


# -- the subcommands ---------------------------------------------------------

def test_help_lists_every_subcommand_in_one_line():
    result = vddkpy("--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("Subcommands:") + 1
    listed = lines[start:start + len(SUBCOMMANDS)]
    assert [line.split()[0] for line in listed] == SUBCOMMANDS
    assert all(line.startswith("  ") and len(line.split()) > 2
               for line in listed)
    assert lines[start + len(SUBCOMMANDS)] == ""
    assert all(len(line) <= 79 for line in lines)
    assert "file=<FILENAME>" in result.stdout       # and the parameters
    assert vddkpy().stdout == result.stdout
    unknown = vddkpy("frobnicate")
    assert (unknown.returncode, unknown.stdout) == (2, result.stdout)


@pytest.mark.parametrize("argv", [["thumbprint", "--help"],
                                  ["status", "--help"],
                                  ["install", "--help"]])
def test_subcommand_imports_only_its_own_modules(argv):
    probe = run([PYTHON, "-c", "import sys; from vddkpy.__main__ import main\n"
                 "try:\n    main(%r)\nexcept SystemExit:\n    pass\n"
                 "print(' '.join(sorted(m for m in sys.modules if m.split('.')"
                 "[0] in ('vddkpy', 'cffi', '_cffi_backend'))))" % argv])
    assert probe.returncode == 0, probe.stderr
    loaded = set(probe.stdout.split())
    expected = {"thumbprint": {"vddkpy.vsphere", "vddkpy.vsphere.thumbprint"},
                "status": {"vddkpy.install", "vddkpy.install.status",
                           "vddkpy.install.nbdkit_host", "vddkpy.nbdkit",
                           "vddkpy.nbdkit.prerequisites"}}
    assert "cffi" not in loaded and "_cffi_backend" not in loaded
    assert "vddkpy.params" not in loaded and "vddkpy.preflight" not in loaded
    if argv[0] in expected:
        assert loaded == {"vddkpy", "vddkpy.__main__"} | expected[argv[0]]


def test_sync_missing_from_the_build(tmp_path):
    """A build without vddkpy/sync (this copy has none, whatever the
    checkout holds)."""
    shutil.copytree(ROOT / "vddkpy", tmp_path / "vddkpy",
                    ignore=shutil.ignore_patterns("__pycache__", "sync"))
    result = run([PYTHON, "-m", "vddkpy", "sync", "--help"], cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", "vddkpy sync is not available in this build\n")


def sync_whose_command_is(tmp_path, source):
    """``vddkpy sync`` run from a copy whose sync command is ``source``."""
    shutil.copytree(ROOT / "vddkpy", tmp_path / "vddkpy",
                    ignore=shutil.ignore_patterns("__pycache__", "sync"))
    (tmp_path / "vddkpy" / "sync").mkdir()
    (tmp_path / "vddkpy" / "sync" / "__init__.py").write_text("")
    (tmp_path / "vddkpy" / "sync" / "command.py").write_text(source)
    return run([PYTHON, "-m", "vddkpy", "sync"], cwd=tmp_path)


def test_subcommand_needing_a_missing_module(tmp_path):
    """A subcommand whose module imports one that is not installed: one
    line naming it (not "incomplete", not a traceback)."""
    result = sync_whose_command_is(tmp_path, "import "
                                   "vddkpy_test_absent_module\n")
    assert (result.returncode, result.stdout, result.stderr) == (
        1, "", "vddkpy: error: vddkpy sync needs the Python module "
        "vddkpy_test_absent_module, which is not installed\n")


def test_subcommand_whose_import_fails_otherwise(tmp_path):
    """A subcommand whose module cannot be imported for another reason (a
    name missing from an installed module, a library built for another
    Python): one line with the reason, not a traceback."""
    result = sync_whose_command_is(tmp_path, "from os import no_such_name\n")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(
        "vddkpy: error: vddkpy sync cannot start: cannot import name "
        "'no_such_name' from 'os'")
    assert result.stderr.count("\n") == 1


# -- the old spellings ------------------------------------------------------

def test_check_option_is_status_then_a_note():
    """Whatever this machine has (installed or not), --check says what
    status says."""
    status = vddkpy("status")
    assert_same_then_note(vddkpy("--check"), status, note(
        "python3 -m vddkpy --check", "python3 -m vddkpy status"))
    assert_same_then_note(as_script("vddkpy.__main__", ["--check"]), status,
                          note("vddkpy --check", "vddkpy status"))


def thumbprint_of(cert):
    line = run(["openssl", "x509", "-in", cert, "-noout", "-fingerprint",
                "-sha1"]).stdout
    return line.strip().split("=", 1)[1] + "\n"


@pytest.mark.parametrize("spelling", ["new", "module", "script"])
def test_thumbprint_spellings(tmp_path, spelling):
    with tls_server(tmp_path) as server:
        address = "127.0.0.1:%d" % server.port
        result = {"new": lambda: vddkpy("thumbprint", address),
                  "module": lambda: run([PYTHON, "-m", "vddkpy.thumbprint",
                                         address]),
                  "script": lambda: as_script("vddkpy.thumbprint",
                                              [address])}[spelling]()
    assert (result.returncode, result.stdout) == (0,
                                                  thumbprint_of(server.cert))
    assert result.stderr == {
        "new": "",
        "module": note("python3 -m vddkpy.thumbprint",
                       "python3 -m vddkpy thumbprint"),
        "script": note("vddkpy-thumbprint", "vddkpy thumbprint")}[spelling]


SCRIPT = PLUGINDIR + "/nbdkit-vddk-plugin"
INSTALLED = "installed %s\n" % SCRIPT
UNINSTALLED = "removed %s\nremoved %s/vddkpy\n" % (SCRIPT, SITE)
OLD_INSTALLS = {
    "module": ([PYTHON, "-m", "vddkpy.install"], "python3 -m vddkpy.install",
               "python3 -m vddkpy"),
    "script": ([ROOT / "scripts" / "install-plugin.sh"],
               "scripts/install-plugin.sh", "python3 -m vddkpy"),
    "pip": ([PYTHON, "-c", "import sys; from vddkpy.install.installer "
             "import main; sys.exit(main())"], "vddkpy-install", "vddkpy"),
}


@pytest.mark.parametrize("spelling", sorted(OLD_INSTALLS))
def test_install_spellings(private_system, spelling):
    """Each old spelling installs and uninstalls as ``vddkpy install`` and
    ``vddkpy uninstall`` do, with the note after."""
    command, old, new = OLD_INSTALLS[spelling]
    for args, output, subcommand in (([], INSTALLED, "install"),
                                     (["--uninstall"], UNINSTALLED,
                                      "uninstall")):
        result = run(command + args)
        assert (result.returncode, result.stdout) == (0, output), \
            result.stderr
        assert result.stderr == note(" ".join([old] + args),
                                     "%s %s" % (new, subcommand))
    assert not Path(SCRIPT).exists()


def test_install_and_uninstall_subcommands(private_system):
    installed = vddkpy("install")
    assert (installed.returncode, installed.stdout, installed.stderr) == (
        0, INSTALLED, "")
    status = vddkpy("status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.endswith("(%s)\n" % SCRIPT)
    removed = vddkpy("uninstall")
    assert (removed.returncode, removed.stdout, removed.stderr) == (
        0, UNINSTALLED, "")
    assert vddkpy("status").returncode == 1
