"""python3 -m vddkpy (the ``vddkpy`` command): how to run the plugin,
since nbdkit's --help cannot show a Python plugin's parameters; with
``--check``, whether ``nbdkit vddk`` works on this host, or the one thing
missing."""

import importlib
import os
import re
import subprocess
import sys

from . import __version__, incomplete

try:
    from .install.nbdkit_host import PACKAGE, EmbeddedPython, Missing, nbdkit_path, \
        plugindir, plugin_script, version_of
    from .nbdkit.prerequisites import cffi_missing, cffi_missing_message, \
        running_version
except ModuleNotFoundError as missing:     # a partial copy
    sys.exit(incomplete(missing, "vddkpy"))

MANUAL = "man nbdkit-vddk-plugin"

USAGE_HEAD = """\
usage: nbdkit vddk [libdir=DIR] file=FILENAME [PARAMETER=VALUE ...]
       nbdkit python plugin/plugin.py ...    (from a checkout)
       vddkpy --check                        (is nbdkit vddk ready?)
       vddkpy changed-areas KEY=VALUE ...    (changed-since= areas, JSON)
       vddkpy check [--json] KEY=VALUE ...   (preflight of a VDDK set-up)

"""


def usage():
    if cffi_missing():
        raise Missing(cffi_missing_message(running_version(),
                                           sys.executable))
    from .params import usage as parameters       # imports cffi
    return "%s%s\n\nThe manual: %s (vddkpy %s)." % (
        USAGE_HEAD, parameters(), MANUAL, __version__)


def _last_line(text):
    return (text.strip().splitlines() or ["(no message)"])[-1]


def check():
    """The script nbdkit runs as ``vddk``, once every piece is there, and
    the copy of vddkpy it runs; warnings about other copies."""
    nbdkit = nbdkit_path()
    directory = plugindir(nbdkit)
    embedded = EmbeddedPython(nbdkit, directory)
    script = plugin_script(directory, "vddk")
    if not os.access(script, os.X_OK):
        raise Missing("nbdkit has no vddk plugin from vddkpy (no %s): apt "
                      "install ./%s_%s_amd64.deb, or python3 -m "
                      "vddkpy.install" % (script, PACKAGE, __version__))
    dump = subprocess.run([nbdkit, "vddk", "--dump-plugin"],
                          capture_output=True, text=True, timeout=60)
    if dump.returncode != 0:
        raise Missing("nbdkit vddk --dump-plugin failed: %s"
                      % _last_line(dump.stderr))
    said = dict(re.findall(r"^vddkpy_(version|module)=(.*)$", dump.stdout,
                           re.M))
    module = said.get("module", "an unknown file")
    ok = "nbdkit vddk runs vddkpy %s from %s (%s)" % (
        said.get("version", "of unknown version"), module, script)
    return ok, _shadowing(embedded.copies, os.path.dirname(module))


def _shadowing(copies, running):
    """One line when ``import vddkpy`` in nbdkit's Python finds another
    copy than the one ``nbdkit vddk`` runs, or None."""
    copies = [os.path.realpath(copy) for copy in copies]
    running = os.path.realpath(running)
    first = copies[:copies.index(running)] if running in copies else copies
    if not first:
        return None
    return ("%s (vddkpy %s) shadows %s for Python programs that import "
            "vddkpy (python3 -m vddkpy, nbdkit python plugin/plugin.py): "
            "remove it (scripts/install-plugin.sh --uninstall, if that "
            "installed it)" % (first[0], version_of(first[0]), running))

# Imported only when asked for: their modules are not needed elsewhere.
SUBCOMMANDS = {"changed-areas": ".cbt.command", "check": ".preflight"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in SUBCOMMANDS:
        try:
            command = importlib.import_module(SUBCOMMANDS[argv[0]],
                                              __package__)
        except ModuleNotFoundError as missing:     # a partial copy
            sys.exit(incomplete(missing, "vddkpy"))
        return command.main(argv[1:])
    try:
        if argv == ["--check"]:
            ok, warning = check()
            print(ok)
            if warning:
                print("vddkpy: warning: %s" % warning, file=sys.stderr)
            return 0
        print(usage())
    except Missing as e:
        print("vddkpy: error: %s" % e, file=sys.stderr)
        return 1
    return 0 if not argv or argv[0] in ("-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main())
