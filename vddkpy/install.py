"""Install vddkpy as one of nbdkit's plugins, by default ``vddk``.

    python3 -m vddkpy.install [--name vddk] [--force]
    python3 -m vddkpy.install --uninstall [--name vddk]

nbdkit runs ``$plugindir/nbdkit-NAME-plugin`` when it is an executable
script whose first line is ``#!NBDKIT python`` (in preference to a C
``nbdkit-NAME-plugin.so``); after installing, ``nbdkit vddk file=…
libdir=…`` works as with the C plugin (except that ``file=`` must be
written out).  The package is copied where the Python that nbdkit embeds
finds it, its cffi module generated there afresh (``ffibuild``).  The
installer refuses, with one line saying what to do, when
the result would not work for nbdkit started by other programs.  A C
plugin of the same name is kept aside only with ``--force``, and restored
by ``--uninstall``.  The Debian package (scripts/build-deb.sh) installs
the same script, from ``package_script``.
"""

import argparse
import os
import shutil
import sys

from . import ffibuild
from .host import PACKAGE, EmbeddedPython, Missing, nbdkit_path, plugindir, \
    plugin_script

MARKER = "# Installed by vddkpy (python3 -m vddkpy.install)."
PACKAGE_MARKER = "# Installed by the Debian package %s." % PACKAGE
SAVED_SUFFIX = ".vddkpy-saved"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

# The plugin script.  Its fallback runs when the Python that nbdkit embeds
# cannot import vddkpy at all (typically: Python was upgraded after an
# install into the old version's site-packages), so it cannot use vddkpy;
# it prints the one nbdkit error line itself.
SCRIPT = """#!%(nbdkit)s python
%(marker)s
# nbdkit-%(name)s-plugin: VMware disks over NBD through VDDK, in Python
# (vddkpy).  Manual: man nbdkit-vddk-plugin.
try:
    from vddkpy.callbacks import *  # noqa: F401,F403
except ModuleNotFoundError as missing:
    if missing.name != "vddkpy":
        raise
    import ctypes
    import sys
    message = ("vddkpy is not installed for Python %%d.%%d, the Python nbdkit "
               "embeds%(where)s: %(remedy)s" %% sys.version_info[:2])
    process = ctypes.CDLL(None)
    process.nbdkit_error(b"%%s", message.encode())
    sys.stderr.flush()
    process.exit(1)
"""


def script_text(nbdkit, name, site_packages):
    return SCRIPT % {
        "nbdkit": nbdkit, "marker": MARKER, "name": name,
        "where": " (it was installed in %s)" % site_packages,
        "remedy": "run 'python3 -m vddkpy.install' again as root"}


def package_script(name="vddk"):
    """The script the Debian package installs."""
    return SCRIPT % {
        "nbdkit": "/usr/bin/nbdkit", "marker": PACKAGE_MARKER, "name": name,
        "where": "", "remedy": "apt install --reinstall %s" % PACKAGE}


def _first_lines(path):
    try:
        with open(path, errors="replace") as f:
            return f.read(4096)
    except OSError:
        return ""


def _ours(path):
    return MARKER in _first_lines(path)


def _set_aside(path, force):
    """Keep a plugin that is not ours, if allowed."""
    if not os.path.lexists(path) or _ours(path):
        return
    if PACKAGE_MARKER in _first_lines(path):
        raise Missing("%s belongs to the Debian package %s, which already "
                      "installs vddkpy" % (path, PACKAGE))
    if not force:
        raise Missing("%s exists and is not vddkpy's; use --force to set it "
                      "aside (--uninstall puts it back)" % path)
    os.rename(path, path + SAVED_SUFFIX)


def _locations(name):
    """(nbdkit, its plugin directory, the path of plugin NAME's script)."""
    nbdkit = nbdkit_path()
    directory = plugindir(nbdkit)
    return nbdkit, directory, plugin_script(directory, name)


def install(name, force):
    nbdkit, directory, script = _locations(name)
    python = EmbeddedPython(nbdkit, directory).check()
    # nbdkit would run our script instead of the C plugin: say so first.
    _set_aside(script + ".so", force)
    _set_aside(script, force)
    os.makedirs(python.site_packages, exist_ok=True)
    target = os.path.join(python.site_packages, "vddkpy")
    if os.path.realpath(target) != PACKAGE_DIR:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(PACKAGE_DIR, target,
                        ignore=shutil.ignore_patterns("__pycache__"))
    ffibuild.generate(target)       # whatever the source directory held
    with open(script, "w") as f:
        f.write(script_text(nbdkit, name, python.site_packages))
    os.chmod(script, 0o755)
    return script


def uninstall(name):
    nbdkit, directory, script = _locations(name)
    if not _ours(script):
        raise Missing("%s is not installed by vddkpy" % script)
    os.unlink(script)
    for path in (script, script + ".so"):
        if os.path.lexists(path + SAVED_SUFFIX):
            os.rename(path + SAVED_SUFFIX, path)
    still_used = any(_ours(os.path.join(directory, entry))
                     for entry in os.listdir(directory))
    if not still_used:
        site_packages = EmbeddedPython(nbdkit, directory).site_packages
        target = os.path.join(site_packages, "vddkpy")
        if os.path.realpath(target) != PACKAGE_DIR:
            shutil.rmtree(target, ignore_errors=True)
    return script


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python3 -m vddkpy.install",
        description="Install vddkpy as nbdkit's vddk plugin.")
    parser.add_argument("--name", default="vddk",
                        help="plugin name (default: vddk)")
    parser.add_argument("--force", action="store_true",
                        help="set aside an existing plugin of that name")
    parser.add_argument("--uninstall", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.uninstall:
            print("removed %s" % uninstall(args.name))
        else:
            print("installed %s" % install(args.name, args.force))
    except (Missing, OSError) as e:
        print("vddkpy.install: error: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
