"""Install vddkpy as one of nbdkit's plugins, by default ``vddk``.

    python3 -m vddkpy.install [--name vddk] [--force]
    python3 -m vddkpy.install --uninstall [--name vddk]

nbdkit runs ``$plugindir/nbdkit-NAME-plugin`` when it is an executable
script whose first line is ``#!NBDKIT python``; after installing,
``nbdkit vddk file=… libdir=…`` works as with the C plugin (except that
``file=`` must be written out).  The package is copied where the Python
that nbdkit embeds finds it.  A C plugin of the same name is kept aside
only with ``--force``, and restored by ``--uninstall``.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

MARKER = "# Installed by vddkpy (python3 -m vddkpy.install)."
SAVED_SUFFIX = ".vddkpy-saved"
SCRIPT = """#!%(nbdkit)s python
%(marker)s
# nbdkit-%(name)s-plugin: VMware VDDK plugin written in Python.
from vddkpy.callbacks import *  # noqa: F401,F403
"""
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


class InstallError(Exception):
    pass


def _output(command):
    try:
        return subprocess.run(command, capture_output=True, text=True,
                              check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise InstallError("%s failed: %s" % (" ".join(command), e)) from None


def _nbdkit_path():
    path = shutil.which("nbdkit")
    if path is None:
        raise InstallError("nbdkit is not installed (not found on PATH)")
    return os.path.realpath(path)


def _plugindir(nbdkit):
    match = re.search(r"^plugindir=(.*)$",
                      _output([nbdkit, "--dump-config"]), re.M)
    if not match:
        raise InstallError("nbdkit --dump-config printed no plugindir")
    return match.group(1)


_PROBE = """
import sys
def dump_plugin():
    sys.stdout.flush()
    for entry in sys.path:
        if entry.endswith(("site-packages", "dist-packages")):
            print("vddkpy_site_packages=" + entry)
    sys.stdout.flush()
def open(readonly): pass
def get_size(h): pass
def pread(h, buf, offset, flags): pass
"""


def _embedded_site_packages(nbdkit):
    """The first package directory of the Python that nbdkit embeds
    (asked of that interpreter itself, through a probe script)."""
    with tempfile.NamedTemporaryFile("w", suffix=".py") as probe:
        probe.write(_PROBE)
        probe.flush()
        found = re.findall(r"^vddkpy_site_packages=(.*)$",
                           _output([nbdkit, "python", probe.name,
                                    "--dump-plugin"]), re.M)
    if not found:
        raise InstallError("nbdkit's python plugin does not work "
                           "(apt install nbdkit-plugin-python)")
    return found[0]


def _ours(path):
    try:
        with open(path, errors="replace") as f:
            return MARKER in f.read(4096)
    except OSError:
        return False


def _set_aside(path, force):
    """Keep a plugin that is not ours, if allowed."""
    if not os.path.lexists(path) or _ours(path):
        return
    if not force:
        raise InstallError("%s exists and is not vddkpy's; use --force to "
                           "set it aside (--uninstall puts it back)" % path)
    os.rename(path, path + SAVED_SUFFIX)


def _locations(name):
    """(nbdkit, its plugin directory, the path of plugin NAME's script)."""
    nbdkit = _nbdkit_path()
    plugindir = _plugindir(nbdkit)
    return nbdkit, plugindir, os.path.join(plugindir,
                                           "nbdkit-%s-plugin" % name)


def install(name, force):
    nbdkit, _, script = _locations(name)
    c_plugin = script + ".so"
    _set_aside(c_plugin, force)     # nbdkit would load the .so first
    _set_aside(script, force)
    site_packages = _embedded_site_packages(nbdkit)
    os.makedirs(site_packages, exist_ok=True)
    target = os.path.join(site_packages, "vddkpy")
    if os.path.realpath(target) != PACKAGE_DIR:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(PACKAGE_DIR, target,
                        ignore=shutil.ignore_patterns("__pycache__"))
    with open(script, "w") as f:
        f.write(SCRIPT % {"nbdkit": nbdkit, "marker": MARKER, "name": name})
    os.chmod(script, 0o755)
    return script


def uninstall(name):
    nbdkit, plugindir, script = _locations(name)
    if not _ours(script):
        raise InstallError("%s is not installed by vddkpy" % script)
    os.unlink(script)
    for path in (script, script + ".so"):
        if os.path.lexists(path + SAVED_SUFFIX):
            os.rename(path + SAVED_SUFFIX, path)
    still_used = any(_ours(os.path.join(plugindir, entry))
                     for entry in os.listdir(plugindir))
    if not still_used:
        target = os.path.join(_embedded_site_packages(nbdkit), "vddkpy")
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
    except (InstallError, OSError) as e:
        print("vddkpy.install: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
