"""``vddkpy status``: whether ``nbdkit vddk`` works on this host, or the
one thing missing (nbdkit, its python plugin, python3-cffi, the plugin)."""

import os
import re
import subprocess
import sys

from .. import __version__
from .nbdkit_host import PACKAGE, EmbeddedPython, Missing, nbdkit_path, \
    plugindir, plugin_script, version_of

USAGE = "usage: vddkpy status  (is nbdkit vddk vddkpy, and ready?)"


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
                      "install ./%s_%s_amd64.deb, or python3 -m vddkpy "
                      "install" % (script, PACKAGE, __version__))
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
            "remove it (python3 -m vddkpy uninstall, if that installed it)"
            % (first[0], version_of(first[0]), running))


def main(argv):
    if argv:
        print(USAGE, file=sys.stderr)
        return 0 if argv[0] in ("-h", "--help") else 2
    try:
        ok, warning = check()
    except Missing as e:
        print("vddkpy: error: %s" % e, file=sys.stderr)
        return 1
    print(ok)
    if warning:
        print("vddkpy: warning: %s" % warning, file=sys.stderr)
    return 0
