"""Install vddkpy as one of nbdkit's plugins, by default ``vddk``.

    vddkpy install [--name vddk] [--force]
    vddkpy uninstall [--name vddk]

(From a checkout: ``python3 -m vddkpy install``.  The old spellings,
``python3 -m vddkpy.install [--uninstall]``, pip's ``vddkpy-install`` and
scripts/install-plugin.sh, still work and name the new one.)

nbdkit runs ``$plugindir/nbdkit-NAME-plugin`` when it is an executable
script whose first line is ``#!NBDKIT python`` (in preference to a C
``nbdkit-NAME-plugin.so``); after installing, ``nbdkit vddk file=…
libdir=…`` works as with the C plugin (except that ``file=`` must be
written out).  The package is copied where the Python that nbdkit embeds
finds it, its cffi module generated there afresh (``ffibuild``).  The
installer refuses, with one line saying what to do, when
the result would not work for nbdkit started by other programs, or when
the Debian package is installed (one copy of vddkpy).  A C plugin of the
same name is kept aside only with ``--force``, and restored by
``--uninstall``.  What it writes is listed in ``RECORD_NAME`` in the
plugin directory; ``--uninstall`` removes exactly that, even after the
Debian package has replaced the script.  The scripts themselves, the
same for the Debian package (scripts/build-deb.sh), are in
``launchers.py``.
"""

import argparse
import json
import os
import shutil
import sys

from .. import run_renamed
from .nbdkit_host import PACKAGE, EmbeddedPython, Missing, nbdkit_path, \
    plugindir, plugin_script
from .launchers import MARKER, PACKAGE_MARKER, script_text
from ..vddk import ffibuild

SAVED_SUFFIX = ".vddkpy-saved"
PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD_NAME = "vddkpy-install.record"
RECORD_ABOUT = ("What vddkpy install wrote (scripts: the package "
                "copy each one runs) and set aside; --uninstall removes it.")


def _first_lines(path):
    try:
        with open(path, errors="replace") as f:
            return f.read(4096)
    except OSError:
        return ""


def _ours(path):
    return MARKER in _first_lines(path)


def _packaged(path):
    return PACKAGE_MARKER in _first_lines(path)


class Record:
    """What the installer wrote (and set aside), kept in the plugin
    directory: {"scripts": {script: package directory}, "saved": [path]}."""

    def __init__(self, directory):
        self.path = os.path.join(directory, RECORD_NAME)
        try:
            with open(self.path) as f:
                self.data = json.load(f)
            self.data.pop("about", None)
        except FileNotFoundError:
            self.data = {"scripts": {}, "saved": []}
        except (OSError, ValueError) as e:
            raise Missing("cannot read %s: %s" % (self.path, e)) from None

    def save(self):
        if not self.data["scripts"] and not self.data["saved"]:
            if os.path.lexists(self.path):
                os.unlink(self.path)
            return
        temporary = self.path + ".new"
        with open(temporary, "w") as f:
            json.dump(dict(self.data, about=RECORD_ABOUT), f, indent=1,
                      sort_keys=True)
            f.write("\n")
        os.replace(temporary, self.path)


def _set_aside(path, force, record):
    """Keep a plugin that is not ours, if allowed."""
    if not os.path.lexists(path) or _ours(path):
        return
    if not force:
        raise Missing("%s exists and is not vddkpy's; use --force to set it "
                      "aside (--uninstall puts it back)" % path)
    os.rename(path, path + SAVED_SUFFIX)
    record.data["saved"].append(path)


def _refuse_beside_the_package(directory):
    """One copy of vddkpy: the Debian package's, when it is installed."""
    for name in ("vddk", "vddkpy"):
        script = plugin_script(directory, name)
        if _packaged(script):
            raise Missing("%s belongs to the Debian package %s, which already "
                          "installs vddkpy (one copy runs: apt remove %s "
                          "first to install another)"
                          % (script, PACKAGE, PACKAGE))


def _locations(name):
    """(nbdkit, its plugin directory, the path of plugin NAME's script)."""
    nbdkit = nbdkit_path()
    directory = plugindir(nbdkit)
    return nbdkit, directory, plugin_script(directory, name)


def install(name, force):
    nbdkit, directory, script = _locations(name)
    python = EmbeddedPython(nbdkit, directory).check()
    _refuse_beside_the_package(directory)
    record = Record(directory)
    # nbdkit would run our script instead of the C plugin: say so first.
    _set_aside(script + ".so", force, record)
    _set_aside(script, force, record)
    os.makedirs(python.site_packages, exist_ok=True)
    target = os.path.join(python.site_packages, "vddkpy")
    if os.path.realpath(target) != PACKAGE_DIR:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(PACKAGE_DIR, target,
                        ignore=shutil.ignore_patterns("__pycache__"))
    ffibuild.generate(os.path.join(target, "vddk"))  # whatever the source held
    python.compile(target)
    record.data["scripts"][script] = target
    record.save()
    with open(script, "w") as f:
        f.write(script_text(nbdkit, name, python.site_packages))
    os.chmod(script, 0o755)
    return script


def _legacy_package(nbdkit, directory):
    """Where an install made before the record put the package."""
    site_packages = EmbeddedPython(nbdkit, directory).site_packages
    return os.path.join(site_packages, "vddkpy")


def _legacy_copy(nbdkit, directory):
    """The copy an install made before the record left behind once the
    Debian package replaced its script, or None.  (pip's copies carry
    metadata beside them; the installer's never did.)"""
    target = _legacy_package(nbdkit, directory)
    parent = os.path.dirname(target)
    pip = [entry for entry in os.listdir(parent) if entry.startswith(
        "vddkpy-") and entry.endswith((".dist-info", ".egg-info"))] \
        if os.path.isdir(parent) else []
    if os.path.isfile(os.path.join(target, "__init__.py")) and not pip:
        return target
    return None


def _installed_copy(nbdkit, directory, script, record):
    """The copy of vddkpy that ``script``'s install wrote (taken out of
    the record)."""
    if script in record.data["scripts"]:
        return record.data["scripts"].pop(script)
    if _ours(script):
        return _legacy_package(nbdkit, directory)
    copy = _legacy_copy(nbdkit, directory) if _packaged(script) else None
    if copy is None:
        raise Missing("%s is not installed by vddkpy" % script)
    return copy


def uninstall(name):
    """Remove what the record says ``install(name)`` wrote, and put back
    what it set aside.  Returns the lines to print."""
    nbdkit, directory, script = _locations(name)
    record = Record(directory)
    said = []
    target = _installed_copy(nbdkit, directory, script, record)
    if _ours(script):
        os.unlink(script)
        said.append("removed %s" % script)
    elif _packaged(script):
        said.append("left %s: it belongs to the Debian package %s now"
                    % (script, PACKAGE))
    elif os.path.lexists(script):
        said.append("left %s: it is no longer the one vddkpy.install wrote"
                    % script)
    for path in (script, script + ".so"):
        if path in record.data["saved"] or os.path.lexists(
                path + SAVED_SUFFIX):
            if not os.path.lexists(path):
                os.rename(path + SAVED_SUFFIX, path)
                said.append("restored %s" % path)
            if path in record.data["saved"]:
                record.data["saved"].remove(path)
    still_used = target in record.data["scripts"].values() or any(
        _ours(os.path.join(directory, entry))
        for entry in os.listdir(directory))
    if not still_used and os.path.realpath(target) != PACKAGE_DIR \
            and os.path.isdir(target):
        shutil.rmtree(target)
        said.append("removed %s" % target)
    record.save()
    return said


def _parser(command, installing):
    parser = argparse.ArgumentParser(
        prog=command, description="Install vddkpy as nbdkit's vddk plugin."
        if installing else "Remove what vddkpy install wrote.")
    parser.add_argument("--name", default="vddk",
                        help="plugin name (default: vddk)")
    if installing:
        parser.add_argument("--force", action="store_true",
                            help="set aside an existing plugin of that name")
    return parser


def _report(action, program):
    """Print what ``action()`` returns, or its error line; exit status."""
    try:
        print(action())
    except (Missing, OSError) as e:
        print("%s: error: %s" % (program, e), file=sys.stderr)
        return 1
    return 0


def install_command(argv, program="vddkpy", command="vddkpy install"):
    args = _parser(command, True).parse_args(argv)
    return _report(lambda: "installed %s" % install(args.name, args.force),
                   program)


def uninstall_command(argv, program="vddkpy", command="vddkpy uninstall"):
    args = _parser(command, False).parse_args(argv)
    return _report(lambda: "\n".join(uninstall(args.name)), program)


def main(argv=None, old="vddkpy-install", new="vddkpy"):
    """The old spellings ``vddkpy-install [--uninstall] ...`` (pip's
    script) and ``python3 -m vddkpy.install ...`` (``__main__``): install
    or uninstall as before (errors start ``vddkpy.install:``), then the
    note naming ``NEW install`` or ``NEW uninstall``."""
    argv = sys.argv[1:] if argv is None else argv
    uninstalling = "--uninstall" in argv
    # (--force meant nothing with --uninstall; vddkpy uninstall refuses it.)
    dropped = ("--uninstall", "--force") if uninstalling else ()
    rest = [arg for arg in argv if arg not in dropped]
    if uninstalling:
        return run_renamed(old + " --uninstall", new + " uninstall",
                           lambda: uninstall_command(rest, "vddkpy.install",
                                                     old + " --uninstall"))
    return run_renamed(old, new + " install",
                       lambda: install_command(rest, "vddkpy.install", old))
