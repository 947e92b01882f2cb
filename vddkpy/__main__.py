"""The ``vddkpy`` command (also ``python3 -m vddkpy``):

    vddkpy SUBCOMMAND [ARGUMENT ...]

``vddkpy`` alone or ``vddkpy --help`` lists the subcommands and the
plugin's parameters, since nbdkit's --help cannot show a Python plugin's.
Each subcommand's module is imported only when it runs (``vddkpy
thumbprint`` loads neither cffi nor the VDDK binding).  ``vddkpy --check``,
the old spelling of ``vddkpy status``, still works and names the new one.
"""

import importlib
import sys
from collections import namedtuple

from . import __version__, incomplete, run_renamed

MANUAL = "man nbdkit-vddk-plugin"

Subcommand = namedtuple("Subcommand", "name module function summary")

SUBCOMMANDS = (
    Subcommand("check", ".preflight", "main",
               "check a VDDK set-up step by step (the plugin's parameters)"),
    Subcommand("sync", ".sync.command", "main",
               "copy a VM's disks, then what changed (warm migration, "
               "backup)"),
    Subcommand("changed-areas", ".cbt.command", "main",
               "print the areas changed since a changeId, as JSON"),
    Subcommand("thumbprint", ".vsphere.thumbprint", "main",
               "print a server's certificate thumbprint, for thumbprint="),
    Subcommand("install", ".install.installer", "install_command",
               "install vddkpy as nbdkit's vddk plugin (no package)"),
    Subcommand("uninstall", ".install.installer", "uninstall_command",
               "remove what 'vddkpy install' wrote"),
    Subcommand("status", ".install.status", "main",
               "whether 'nbdkit vddk' runs vddkpy here, or what is missing"),
)
_BY_NAME = {subcommand.name: subcommand for subcommand in SUBCOMMANDS}

USAGE_HEAD = """\
usage: vddkpy SUBCOMMAND [ARGUMENT ...]     (or python3 -m vddkpy ...)
       nbdkit vddk [libdir=DIR] file=FILENAME [PARAMETER=VALUE ...]
       nbdkit python plugin/plugin.py ...    (from a checkout)

Subcommands:
"""


def subcommand_lines():
    return "".join("  %-15s%s\n" % (subcommand.name, subcommand.summary)
                   for subcommand in SUBCOMMANDS)


def parameter_lines():
    """The plugin's parameters, or None (and the error line printed)
    when cffi, which their parsers need, is missing."""
    try:
        from .nbdkit.prerequisites import cffi_missing, \
            cffi_missing_message, running_version
    except ModuleNotFoundError as missing:     # a partial copy
        sys.exit(incomplete(missing, "vddkpy"))
    if cffi_missing():
        print("vddkpy: error: %s" % cffi_missing_message(
            running_version(), sys.executable), file=sys.stderr)
        return None
    from .params import usage       # imports cffi
    return usage()


def print_help():
    """The subcommands, then the parameters; False if cffi is missing."""
    print(USAGE_HEAD + subcommand_lines())
    parameters = parameter_lines()
    if parameters is None:
        return False
    print("Parameters of the plugin (nbdkit vddk KEY=VALUE ...):")
    print(parameters)
    print("\nThe manual: %s (vddkpy %s)." % (MANUAL, __version__))
    return True


def run(name, argv):
    """Run subcommand ``name`` with its arguments; its exit status."""
    subcommand = _BY_NAME[name]
    try:
        module = importlib.import_module(subcommand.module, __package__)
    except ModuleNotFoundError as missing:
        module_name = missing.name or ""
        if name == "sync" and module_name in ("vddkpy.sync",
                                              "vddkpy.sync.command"):
            print("vddkpy sync is not available in this build",
                  file=sys.stderr)
            return 1
        if module_name.split(".")[0] == "vddkpy":
            sys.exit(incomplete(missing, "vddkpy"))     # a partial copy
        sys.exit("vddkpy: error: vddkpy %s needs the Python module %s, "
                 "which is not installed" % (name, module_name))
    except ImportError as broken:   # e.g. a module built for another Python
        from .printable import printable
        sys.exit("vddkpy: error: vddkpy %s cannot start: %s"
                 % (name, printable(str(broken))))
    return getattr(module, subcommand.function)(argv)


def main(argv=None, program="vddkpy"):
    """``program`` is how the user started it, for the old spellings'
    note (``vddkpy`` or ``python3 -m vddkpy``)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in _BY_NAME:
        return run(argv[0], argv[1:])
    if argv == ["--check"]:
        return run_renamed("%s --check" % program, "%s status" % program,
                           lambda: run("status", []))
    if not print_help():
        return 1
    return 0 if not argv or argv[0] in ("-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main(program="python3 -m vddkpy"))
