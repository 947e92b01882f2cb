"""python3 -m vddkpy (the ``vddkpy`` command): how to run the plugin,
since nbdkit's --help cannot show a Python plugin's parameters; with
``--check``, whether ``nbdkit vddk`` works on this host, or the one thing
missing."""

import os
import subprocess
import sys

from . import __version__
from .host import PACKAGE, EmbeddedPython, Missing, nbdkit_path, plugindir, \
    plugin_script
from .prerequisites import cffi_missing, cffi_missing_message, \
    running_version

MANUAL = "man nbdkit-vddk-plugin"

USAGE_HEAD = """\
usage: nbdkit vddk [libdir=DIR] file=FILENAME [PARAMETER=VALUE ...]
       nbdkit python plugin/plugin.py ...    (from a checkout)
       vddkpy --check                        (is nbdkit vddk ready?)
       vddkpy check [--json] KEY=VALUE ...   (preflight of a VDDK set-up)

"""


def usage():
    if cffi_missing():
        raise Missing(cffi_missing_message(running_version(),
                                           sys.executable))
    from .params import USAGE       # imports cffi
    return "%s%s\n\nThe manual: %s (vddkpy %s)." % (USAGE_HEAD, USAGE,
                                                    MANUAL, __version__)


def _last_line(text):
    return (text.strip().splitlines() or ["(no message)"])[-1]


def check():
    """The script nbdkit runs as ``vddk``, once every piece is there."""
    nbdkit = nbdkit_path()
    directory = plugindir(nbdkit)
    EmbeddedPython(nbdkit, directory).check()
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
    return script


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        from .preflight import main as preflight
        return preflight(argv[1:])
    try:
        if argv == ["--check"]:
            print("nbdkit vddk runs vddkpy (%s)" % check())
            return 0
        print(usage())
    except Missing as e:
        print("vddkpy: error: %s" % e, file=sys.stderr)
        return 1
    return 0 if not argv or argv[0] in ("-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main())
