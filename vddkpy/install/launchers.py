"""The scripts through which vddkpy runs: the plugin scripts nbdkit runs
(``nbdkit-NAME-plugin``) and the commands ``vddkpy`` and
``vddkpy-thumbprint`` (its old spelling of ``vddkpy thumbprint``), as the
installer (``vddkpy install``) and the
Debian package (scripts/build-deb.sh) write them.

Each imports vddkpy from the one directory it was installed in, and says
in one line, not a traceback, when vddkpy or a part of it is missing there.
"""

from .nbdkit_host import PACKAGE

PACKAGE_HOME = "/usr/lib/python3/dist-packages"     # the Debian package's
MARKER = "# Installed by vddkpy (python3 -m vddkpy.install)."
PACKAGE_MARKER = "# Installed by the Debian package %s." % PACKAGE

# Every script starts with this loader: it imports vddkpy from HOME only
# (another copy on sys.path, an older manual install or a pip install, must
# not run in its place), and when vddkpy, or a part of it, is missing there
# it reports that in one line through REPORT, since vddkpy is not there to.
LOADER = """\
import importlib.machinery
import importlib.util
import sys


def _missing(text):
%(report)s


_spec = importlib.machinery.PathFinder.find_spec("vddkpy", [%(home)r])
if _spec is None:
    _missing("vddkpy is not installed for Python %%d.%%d, %(which)s%(where)s: "
             "%(remedy)s" %% sys.version_info[:2])
sys.modules["vddkpy"] = importlib.util.module_from_spec(_spec)
try:
    _spec.loader.exec_module(sys.modules["vddkpy"])
    %(imports)s
except ModuleNotFoundError as _error:
    if not (_error.name or "").startswith("vddkpy."):
        raise
    _missing("vddkpy in %%s is incomplete (no module %%s): %(remedy)s"
             %% (%(home)r, _error.name))
"""

# Inside nbdkit: its error line, and nbdkit's exit status for a bad start.
PLUGIN_REPORT = """\
    import ctypes
    process = ctypes.CDLL(None)
    process.nbdkit_error(b"%s", text.encode("utf-8", "surrogateescape"))
    sys.stderr.flush()
    process.exit(1)"""

COMMAND_REPORT = """\
    sys.exit("%s: error: %%s" %% text)"""

PLUGIN_HEAD = """#!%(nbdkit)s python
%(marker)s
# nbdkit-%(name)s-plugin: VMware disks over NBD through VDDK, in Python
# (vddkpy).  Manual: man nbdkit-vddk-plugin.
"""

COMMAND_HEAD = """#!/usr/bin/python3
%(marker)s
# %(name)s: see man nbdkit-vddk-plugin.
"""

MANUAL_REMEDY = "run 'python3 -m vddkpy install' again as root"
PACKAGE_REMEDY = "apt install --reinstall %s" % PACKAGE
PACKAGE_WHERE = " (no %s/vddkpy)" % PACKAGE_HOME


def _loader(home, report, imports, which, where, remedy):
    return LOADER % {"home": home, "report": report, "imports": imports,
                     "which": which, "where": where, "remedy": remedy}


def _plugin(nbdkit, marker, name, home, where, remedy):
    return PLUGIN_HEAD % {"nbdkit": nbdkit, "marker": marker,
                          "name": name} + _loader(
        home, PLUGIN_REPORT,
        "from vddkpy.callbacks import *  # noqa: F401,F403",
        "the Python nbdkit embeds", where, remedy)


def script_text(nbdkit, name, site_packages):
    return _plugin(nbdkit, MARKER, name, site_packages,
                   " (it was installed in %s)" % site_packages, MANUAL_REMEDY)


def package_script(name="vddk"):
    """The plugin script the Debian package installs."""
    return _plugin("/usr/bin/nbdkit", PACKAGE_MARKER, name, PACKAGE_HOME,
                   PACKAGE_WHERE, PACKAGE_REMEDY)


def package_command(name, module):
    """The command NAME (running ``MODULE.main``) the Debian package
    installs."""
    return COMMAND_HEAD % {"marker": PACKAGE_MARKER, "name": name} + _loader(
        PACKAGE_HOME, COMMAND_REPORT % name, "from %s import main" % module,
        "/usr/bin/python3", PACKAGE_WHERE, PACKAGE_REMEDY) + \
        "\nsys.exit(main())\n"
