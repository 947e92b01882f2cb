"""Installed like an nbdkit plugin.

Each missing piece gives one exact line and a non-zero exit, never a
traceback: python3-cffi, nbdkit's python plugin, the vddkpy package for
the Python nbdkit embeds, an install from a virtual environment.  The
installer is tried only in a private mount namespace, where nbdkit's plugin
directory and the embedded Python's site-packages are temporary
directories, so nothing is written to the system.  The Debian package is
built and checked with lintian; ``pip install .`` still works in a venv.
Installing the package itself (one copy of vddkpy runs, a file
of the user's is not replaced, advice in a virtual environment) happens in
a scratch system whose every directory dpkg writes is an overlay.
"""

import os
import re
import shutil
import subprocess

import pytest

from bed import (ROOT, TIMEOUT, fresh_socket, install_standin, random_file,
                 standin_env)
from vddkpy import __version__
from vddkpy.vddk import ffibuild
from vddkpy.install.nbdkit_host import EmbeddedPython
from vddkpy.install.launchers import package_script

from bed.embedded import CFFI_LINE, EMBEDDED, NBDKIT, PLUGINDIR, PYTHON

SITE = EMBEDDED.site_packages       # where the installer puts vddkpy
PYTHON_PLUGIN = "nbdkit-python-plugin.so"
DEB = ROOT / "build" / ("nbdkit-plugin-vddkpy_%s_amd64.deb" % __version__)
# Where the package puts its plugin scripts: Debian's nbdkit's directory,
# whichever nbdkit the suite runs.
DEB_PLUGINDIR = "/usr/lib/x86_64-linux-gnu/nbdkit/plugins"


def private(mounts, command, env=None, cwd=None):
    """Run ``command`` in a private mount namespace in which each target
    directory of ``mounts`` ({target: source}) shows the source instead."""
    pairs = [str(p) for target, source in mounts.items()
             for p in (source, target)]
    script = ('set -e; while [ "$1" != -- ]; do mount --bind "$1" "$2"; '
              'shift 2; done; shift; exec "$@"')
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         script, "sh"] + pairs + ["--"] + [str(c) for c in command],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture
def system(tmp_path):
    """Empty stand-ins for nbdkit's plugin directory (holding only the
    python plugin, or nothing with ``python_plugin=False``) and the
    embedded Python's site-packages."""
    # Hiding /usr/lib/python3/dist-packages would hide cffi too.
    assert SITE.startswith("/usr/local/"), SITE

    def make(python_plugin=True):
        plugins = tmp_path / "plugins"
        site = tmp_path / "site-packages"
        plugins.mkdir(exist_ok=True)
        site.mkdir(exist_ok=True)
        if python_plugin:
            shutil.copy2("%s/%s" % (PLUGINDIR, PYTHON_PLUGIN), plugins)
        return {PLUGINDIR: plugins, SITE: site}
    return make


def installer(*args, command="install"):
    return ["/usr/bin/python3", "-m", "vddkpy", command] + list(args)


def assert_one_line(result, line):
    assert result.returncode != 0
    assert result.stderr == line + "\n", result.stderr


# -- no python3-cffi ---------------------------------------------------------

@pytest.fixture
def no_cffi(tmp_path):
    """An environment in which ``import cffi`` and ``import _cffi_backend``
    fail as when python3-cffi (and python3-cffi-backend, which it pulls in)
    is not installed (nbdkit's Python reads PYTHONPATH)."""
    shadow = tmp_path / "no-cffi"
    shadow.mkdir()
    for module in ("cffi", "_cffi_backend"):
        (shadow / ("%s.py" % module)).write_text(
            "raise ModuleNotFoundError(\"No module named '%s'\", name='%s')\n"
            % (module, module))
    return standin_env(tmp_path, extra={"PYTHONPATH": str(shadow)})


def test_plugin_without_cffi(tmp_path, no_cffi):
    for mode in (["--run", "true", "file=/dev/null"], ["--dump-plugin"]):
        result = subprocess.run(
            ["nbdkit", "-U", fresh_socket(tmp_path), "python",
             str(ROOT / "plugin" / "plugin.py")] + mode,
            env=no_cffi, capture_output=True, text=True, timeout=TIMEOUT)
        assert result.returncode == 1
        assert result.stderr == "nbdkit: error: %s\n" % CFFI_LINE


def test_installer_without_cffi(system, no_cffi):
    mounts = system()
    result = private(mounts, installer(), env=no_cffi, cwd=ROOT)
    assert_one_line(result, "vddkpy: error: " + CFFI_LINE)
    assert not any(mounts[PLUGINDIR].glob("nbdkit-vddk*"))
    assert not any(mounts[SITE].iterdir())


def test_usage_without_cffi(no_cffi):
    result = subprocess.run(["/usr/bin/python3", "-m", "vddkpy"], cwd=ROOT,
                            env=no_cffi, capture_output=True, text=True)
    assert_one_line(result, "vddkpy: error: vddkpy needs python3-cffi, which "
                    "is not installed for Python %s (/usr/bin/python3): apt "
                    "install python3-cffi" % PYTHON)


# -- no nbdkit-plugin-python ---------------------------------------------------

def test_installer_and_check_without_python_plugin(system):
    mounts = system(python_plugin=False)
    missing = ("error: nbdkit's python plugin is not installed (no %s/%s): "
               "apt install nbdkit-plugin-python" % (PLUGINDIR, PYTHON_PLUGIN))
    result = private(mounts, installer(), cwd=ROOT)
    assert_one_line(result, "vddkpy: " + missing)
    assert not any(mounts[PLUGINDIR].iterdir())
    # With the plugin script there (e.g. dpkg --force-depends), nbdkit
    # itself names the missing python plugin; status still says what to do.
    script = mounts[PLUGINDIR] / "nbdkit-vddk-plugin"
    # Run by the nbdkit under test (the package names Debian's).
    script.write_text(package_script().replace(
        "#!/usr/bin/nbdkit ", "#!%s " % NBDKIT, 1))
    script.chmod(0o755)
    result = private(mounts, ["nbdkit", "vddk", "--dump-plugin"])
    assert result.returncode == 1
    # The server's own words for a missing python plugin (they changed
    # between versions), from the server under test.
    server_says = private(mounts, ["nbdkit", "python", "--dump-plugin"])
    assert "nbdkit-python-plugin.so" in server_says.stderr
    assert result.stderr.splitlines()[0] == \
        server_says.stderr.splitlines()[0]
    result = private(mounts, ["/usr/bin/python3", "-m", "vddkpy", "status"],
                     cwd=ROOT)
    assert_one_line(result, "vddkpy: " + missing)


def test_installer_leaves_the_packages_plugin_alone(system):
    mounts = system()
    script = mounts[PLUGINDIR] / "nbdkit-vddk-plugin"
    script.write_text(package_script())
    result = private(mounts, installer("--force"), cwd=ROOT)
    assert_one_line(result, "vddkpy: error: %s/nbdkit-vddk-plugin "
                    "belongs to the Debian package nbdkit-plugin-vddkpy, "
                    "which already installs vddkpy (one copy runs: apt "
                    "remove nbdkit-plugin-vddkpy first to install another)"
                    % PLUGINDIR)
    assert script.read_text() == package_script()


def test_uninstall_after_the_package_replaced_an_older_install(system):
    """An install made before the installer kept its
    record, whose script the Debian package has replaced: uninstall
    removes the copy it left, and leaves the package's script."""
    mounts = system()
    script = mounts[PLUGINDIR] / "nbdkit-vddk-plugin"
    script.write_text(package_script())
    shutil.copytree(ROOT / "vddkpy", mounts[SITE] / "vddkpy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    result = private(mounts, installer(command="uninstall"), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "left %s/nbdkit-vddk-plugin: it belongs to the Debian package "
        "nbdkit-plugin-vddkpy now\nremoved %s/vddkpy\n" % (PLUGINDIR, SITE))
    assert not any(mounts[SITE].iterdir())
    assert script.read_text() == package_script()


# -- installed for another Python than nbdkit's ------------------------------

def in_namespace(mounts, tmp_path, *commands):
    """Shell commands, joined with &&, in one private namespace (from the
    checkout; the stand-in's call log goes to ``tmp_path``)."""
    return private(mounts, ["bash", "-c", " && ".join(commands)],
                   cwd=ROOT, env=standin_env(tmp_path))


def test_private_install_serves_then_uninstalls(tmp_path, system):
    mounts = system()
    libdir = install_standin(tmp_path / "vddk", layout="lib64")
    disk = random_file(tmp_path / "disk.raw", 2 * 1024 * 1024, seed=3)
    result = in_namespace(
        mounts, tmp_path, "/usr/bin/python3 -m vddkpy install",
        "nbdkit vddk --dump-plugin >/dev/null",
        "/usr/bin/python3 -m vddkpy status",
        "cd %s && nbdkit -U nbd.sock vddk libdir=%s file=%s --run 'nbdcopy "
        "\"$uri\" out.raw'" % (tmp_path, libdir, disk))
    assert result.returncode == 0, result.stderr
    assert "installed %s/nbdkit-vddk-plugin\n" % PLUGINDIR in result.stdout
    assert "nbdkit vddk runs vddkpy %s from %s/vddkpy/__init__.py " \
        "(%s/nbdkit-vddk-plugin)\n" % (__version__, SITE, PLUGINDIR) \
        in result.stdout
    assert (tmp_path / "out.raw").read_bytes() == disk.read_bytes()
    assert (mounts[SITE] / "vddkpy" / "callbacks.py").exists()
    assert (mounts[SITE] / "vddkpy" / "vddk" / "_vddk_cffi.py").read_text() == \
        ffibuild.module_text()
    result = in_namespace(mounts, tmp_path, "/usr/bin/python3 -m "
                          "vddkpy uninstall")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in mounts[PLUGINDIR].iterdir()) == \
        [PYTHON_PLUGIN]
    assert not any(mounts[SITE].iterdir())


def test_installed_for_another_python(tmp_path, system):
    """After an upgrade, the Python nbdkit embeds no longer has the
    site-packages vddkpy was installed in: here, the same directory now
    empty."""
    mounts = system()
    assert in_namespace(mounts, tmp_path, "/usr/bin/python3 -m "
                        "vddkpy install").returncode == 0
    upgraded = dict(mounts)
    upgraded[SITE] = tmp_path / "empty"
    upgraded[SITE].mkdir()
    result = private(upgraded, ["nbdkit", "-U", fresh_socket(tmp_path),
                                "vddk", "file=/dev/null", "--run", "true"],
                     cwd=tmp_path)
    assert_one_line(
        result, "nbdkit: error: vddkpy is not installed for Python %s, the "
        "Python nbdkit embeds (it was installed in %s): run 'python3 -m "
        "vddkpy install' again as root" % (PYTHON, SITE))


# -- an install from a virtual environment ------------------------------------

def test_install_from_venv_refused(tmp_path, system):
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip",
                    "--system-site-packages", str(venv)], check=True)
    env = standin_env(tmp_path, extra={
        "VIRTUAL_ENV": str(venv),
        "PATH": "%s/bin:/usr/bin:/bin" % venv})      # as `activate` does
    mounts = system()
    result = private(mounts, [venv / "bin" / "python3", "-m", "vddkpy",
                              "install"], env=env, cwd=ROOT)
    assert_one_line(
        result, "vddkpy: error: nbdkit's Python sees the virtual "
        "environment %s only because it is active here; nbdkit started by "
        "virt-v2v, CloudStack or a service will not: run 'deactivate', then "
        "install as root (or apt install ./nbdkit-plugin-vddkpy_*.deb)"
        % venv)
    assert not any(mounts[PLUGINDIR].glob("nbdkit-vddk*"))
    assert not list(venv.rglob("callbacks.py"))


# -- the Debian package ------------------------------------------------------

@pytest.fixture(scope="module")
def deb():
    result = subprocess.run([str(ROOT / "scripts" / "build-deb.sh")],
                            cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "build/%s\n" % DEB.name
    return DEB


def test_deb_contents(deb, tmp_path):
    listing = subprocess.run(["dpkg-deb", "--contents", str(deb)],
                             capture_output=True, text=True,
                             check=True).stdout
    for path in ("./usr/lib/python3/dist-packages/vddkpy/callbacks.py",
                 "./usr/lib/python3/dist-packages/vddkpy/vddk/_vddk_cffi.py",
                 "./usr/lib/python3/dist-packages/vddkpy/nbdkit/prerequisites.py",
                 "./usr/lib/python3/dist-packages/vddkpy/preflight/"
                 "nbdkit_script.py",
                 ".%s/nbdkit-vddk-plugin" % DEB_PLUGINDIR,
                 ".%s/nbdkit-vddkpy-plugin" % DEB_PLUGINDIR,
                 "./usr/bin/vddkpy", "./usr/bin/vddkpy-thumbprint",
                 "./usr/share/man/man1/nbdkit-vddk-plugin.1.gz",
                 "./usr/share/doc/nbdkit-plugin-vddkpy/copyright"):
        assert " %s\n" % path in listing or " %s -> " % path in listing, path
    assert "__pycache__" not in listing
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp_path)], check=True)
    generated = tmp_path / "usr/lib/python3/dist-packages/vddkpy/vddk/_vddk_cffi.py"
    assert generated.read_text() == ffibuild.module_text()
    page = subprocess.run(
        ["zcat", str(tmp_path / "usr/share/man/man1/nbdkit-vddk-plugin.1.gz")],
        capture_output=True, text=True, check=True).stdout
    # Fonts groff 1.23 (Debian 13) lacks on terminals: lintian warns.
    assert not re.search(r"\\f\[(C|CB|V)\]", page)
    render = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z"],
                            input=page, capture_output=True, text=True)
    assert render.returncode == 0 and render.stderr == ""
    depends = subprocess.run(["dpkg-deb", "--field", str(deb), "Depends"],
                             capture_output=True, text=True,
                             check=True).stdout
    names = {d.split()[0].split(":")[0] for d in depends.split(",")}
    assert {"nbdkit", "nbdkit-plugin-python", "python3",
            "python3-cffi"} <= names


def test_deb_lintian_has_no_errors(deb, tmp_path):
    # Lintian leaves its mldbm-elf-* scratch files in TMPDIR.
    result = subprocess.run(["lintian", "--no-tag-display-limit", str(deb)],
                            capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, TMPDIR=str(tmp_path)))
    tags = result.stdout.splitlines()
    assert not [t for t in tags if t.startswith("E:")], result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


# -- every entry point without vddkpy, and in a virtual environment ----------

PACKAGE_HOME = "/usr/lib/python3/dist-packages"     # the package's vddkpy
SYSTEM_PYTHON = subprocess.run(
    ["/usr/bin/python3", "-c", "import sys; print('%d.%d' % "
     "sys.version_info[:2])"], capture_output=True, text=True,
    check=True).stdout.strip()
REINSTALL = "apt install --reinstall nbdkit-plugin-vddkpy"


def package_entry_points(deb, tmp_path):
    """(command, how its error lines start, the Python it runs, the vddkpy
    module it imports first) for each program the package installs."""
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    plugins = root / DEB_PLUGINDIR.lstrip("/")
    embedded = ("nbdkit: error: ", "the Python nbdkit embeds", PYTHON,
                "vddkpy.callbacks")
    system = ("/usr/bin/python3", SYSTEM_PYTHON)
    return [
        ([plugins / "nbdkit-vddk-plugin", "file=/dev/null"],) + embedded,
        ([plugins / "nbdkit-vddkpy-plugin", "file=/dev/null"],) + embedded,
        ([root / "usr/bin/vddkpy", "status"], "vddkpy: error: ") + system
        + ("vddkpy.__main__",),
        ([root / "usr/bin/vddkpy-thumbprint", "localhost"],
         "vddkpy-thumbprint: error: ") + system + ("vddkpy.thumbprint",)]


def test_deb_entry_points_without_vddkpy(deb, tmp_path):
    """Where the package's vddkpy files are gone, or only some of them:
    one line each, never a traceback."""
    empty = tmp_path / "empty"
    partial = tmp_path / "partial"
    empty.mkdir()
    (partial / "vddkpy").mkdir(parents=True)
    shutil.copy(ROOT / "vddkpy" / "__init__.py", partial / "vddkpy")
    for command, start, which, version, first in package_entry_points(
            deb, tmp_path):
        result = private({PACKAGE_HOME: empty}, command, cwd=tmp_path)
        assert_one_line(result, "%svddkpy is not installed for Python %s, "
                        "%s (no %s/vddkpy): %s" % (start, version, which,
                                                   PACKAGE_HOME, REINSTALL))
        result = private({PACKAGE_HOME: partial}, command, cwd=tmp_path)
        assert_one_line(result, "%svddkpy in %s is incomplete (no module "
                        "%s): %s" % (start, PACKAGE_HOME, first, REINSTALL))


def test_module_entry_points_without_vddkpy(tmp_path):
    """python3 -m vddkpy.install and python3 -m vddkpy, where no vddkpy is
    installed (Python's own line) or one is in part: the first module
    missing, in one line."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for module in ("vddkpy.install", "vddkpy"):
        result = private({PACKAGE_HOME: empty, SITE: empty},
                         ["/usr/bin/python3", "-m", module], cwd=empty)
        assert result.returncode == 1
        assert re.fullmatch(r"/usr/bin/python3: [^\n]*No module named "
                            r"'?vddkpy'?\)?\n", result.stderr), result.stderr
    partial = tmp_path / "partial"
    (partial / "vddkpy" / "install").mkdir(parents=True)
    for name in ("__init__.py", "__main__.py", "install/__init__.py",
                 "install/__main__.py", "install/installer.py"):
        shutil.copy(ROOT / "vddkpy" / name, partial / "vddkpy" / name)
    for command, program, first in (
            (["vddkpy.install"], "python3 -m vddkpy.install",
             "vddkpy.install.nbdkit_host"),
            (["vddkpy", "install"], "vddkpy", "vddkpy.install.nbdkit_host"),
            (["vddkpy"], "vddkpy", "vddkpy.nbdkit")):    # help: parameters
        result = subprocess.run(["/usr/bin/python3", "-m"] + command,
                                cwd=partial, capture_output=True, text=True)
        assert_one_line(result, "%s: error: vddkpy in %s is incomplete (no "
                        "module %s)" % (program, partial, first))


# -- the package installed, in a scratch system ------------------------------

# Every directory installing and removing the package writes to.
DPKG_WRITES = (DEB_PLUGINDIR, "/usr/bin", "/usr/local", PACKAGE_HOME,
               "/usr/share/man", "/usr/share/doc", "/var/lib/dpkg",
               "/var/log", "/var/cache")

SCRATCH = r"""
set -e
out=$1; script=$2; shift 2
mkdir "$out/layers"
mount -t tmpfs tmpfs "$out/layers"
for dir in "$@"; do
    [ -d "$dir" ] || continue
    layer=$out/layers/$(echo "$dir" | tr / _)
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay overlay \
        -o "lowerdir=$dir,upperdir=$layer/upper,workdir=$layer/work" "$dir"
done
step() {        # step NAME COMMAND...: keep its output and status
    local name=$1; shift
    "$@" > "$out/$name.out" 2> "$out/$name.err" && echo 0 > "$out/$name.rc" \
        || echo $? > "$out/$name.rc"
}
export DEBIAN_FRONTEND=noninteractive
eval "$script"
"""


class Step:
    def __init__(self, out, name):
        self.stdout = (out / (name + ".out")).read_text()
        self.stderr = (out / (name + ".err")).read_text()
        self.returncode = int((out / (name + ".rc")).read_text())


def scratch_system(tmp_path, script, names):
    """Run bash ``script`` in a private mount namespace in which every
    directory dpkg writes is an overlay on a tmpfs (nothing reaches the
    machine); ``step NAME COMMAND...`` in it records a command.  Returns
    {NAME: Step}.  Debian's nbdkit and Python, which the package is for,
    are first on PATH."""
    out = tmp_path / "steps"
    out.mkdir()
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c",
         SCRATCH, "bash", str(out), script] + list(DPKG_WRITES),
        env=standin_env(tmp_path, extra={
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}),
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return {name: Step(out, name) for name in names}


def dpkg_install(deb):
    return "step install dpkg --no-triggers -i %s" % deb


def test_deb_refuses_to_replace_an_unowned_plugin(private_system, deb,
                                                  tmp_path):
    """A user's own nbdkit-vddk-plugin: the install fails
    with one line from the package, and the file is kept."""
    mine = "%s/nbdkit-vddk-plugin" % DEB_PLUGINDIR
    steps = scratch_system(tmp_path, "\n".join([
        "printf '#!/bin/sh\\necho mine\\n' > %s && chmod 755 %s"
        % (mine, mine),
        dpkg_install(deb),
        "step status dpkg-query -W -f '${db:Status-Abbrev}' "
        "nbdkit-plugin-vddkpy",
        "step mine cat %s" % mine,
        "step files ls -d /usr/bin/vddkpy %s/vddkpy "
        "%s/nbdkit-vddkpy-plugin" % (PACKAGE_HOME, DEB_PLUGINDIR)]),
        ["install", "status", "mine", "files"])
    assert steps["install"].returncode == 1
    ours = [line for line in steps["install"].stderr.splitlines()
            if line.startswith("nbdkit-plugin-vddkpy: ")]
    assert ours == [
        "nbdkit-plugin-vddkpy: %s is not vddkpy's and no package owns it: "
        "move it away (or keep it with dpkg-divert --local --rename --add "
        "%s), then install again." % (mine, mine)]
    assert steps["mine"].stdout == "#!/bin/sh\necho mine\n"
    # (Whatever was asked for, the package is not installed.)
    assert steps["status"].stdout[1:2] in ("", "n"), steps["status"].stdout
    assert steps["files"].stdout == ""


def test_deb_over_a_manual_install(private_system, deb, tmp_path):
    """vddkpy install from an older vddkpy's checkout,
    then the package: nbdkit vddk runs the package's copy, vddkpy status
    names it and warns of the other, vddkpy uninstall removes what the
    older one wrote."""
    old = tmp_path / "old"
    shutil.copytree(ROOT / "vddkpy", old / "vddkpy",
                    ignore=shutil.ignore_patterns("__pycache__"))
    init = old / "vddkpy" / "__init__.py"
    init.write_text(init.read_text().replace(
        '__version__ = "%s"' % __version__, '__version__ = "0.0.1"'))
    libdir = install_standin(tmp_path / "vddk", layout="lib64")
    disk = random_file(tmp_path / "disk.raw", 1024 * 1024, seed=17)
    steps = scratch_system(tmp_path, "\n".join([
        "cd %s" % old,
        "step manual /usr/bin/python3 -m vddkpy install",
        dpkg_install(deb),
        "step dump nbdkit vddk --dump-plugin",
        "step check vddkpy status",
        "step uninstall vddkpy uninstall",
        "step check_after vddkpy status",
        "step serve nbdkit -U %s/nbd.sock vddk libdir=%s file=%s --run "
        "'nbdcopy \"$uri\" %s/out.raw'" % (tmp_path, libdir, disk, tmp_path),
        "step purge dpkg --purge nbdkit-plugin-vddkpy",
        "step left ls -A %s" % DEB_PLUGINDIR]),
        ["manual", "install", "dump", "check", "uninstall", "check_after",
         "serve", "purge", "left"])
    script = "%s/nbdkit-vddk-plugin" % DEB_PLUGINDIR
    module = "%s/vddkpy/__init__.py" % PACKAGE_HOME
    assert steps["manual"].stdout == "installed %s\n" % script
    assert steps["install"].returncode == 0, steps["install"].stderr
    assert ("nbdkit-plugin-vddkpy: replaces %s, which vddkpy install wrote; "
            "'vddkpy uninstall' removes the rest (listed in "
            "%s/vddkpy-install.record)." % (script, DEB_PLUGINDIR)) \
        in steps["install"].stderr.splitlines()
    assert "vddkpy_version=%s\nvddkpy_module=%s\n" % (__version__, module) \
        in steps["dump"].stdout
    assert steps["check"].returncode == 0
    assert steps["check"].stdout == "nbdkit vddk runs vddkpy %s from %s " \
        "(%s)\n" % (__version__, module, script)
    assert steps["check"].stderr == (
        "vddkpy: warning: %s/vddkpy (vddkpy 0.0.1) shadows %s/vddkpy for "
        "Python programs that import vddkpy (python3 -m vddkpy, nbdkit "
        "python plugin/plugin.py): remove it (python3 -m vddkpy uninstall, "
        "if that installed it)\n" % (SITE, PACKAGE_HOME))
    assert steps["uninstall"].returncode == 0, steps["uninstall"].stderr
    assert steps["uninstall"].stdout == (
        "left %s: it belongs to the Debian package nbdkit-plugin-vddkpy "
        "now\nremoved %s/vddkpy\n" % (script, SITE))
    assert (steps["check_after"].returncode, steps["check_after"].stderr) \
        == (0, "")
    assert steps["serve"].returncode == 0, steps["serve"].stderr
    assert (tmp_path / "out.raw").read_bytes() == disk.read_bytes()
    assert steps["purge"].returncode == 0, steps["purge"].stderr
    assert not [name for name in steps["left"].stdout.split()
                if name.startswith(("nbdkit-vddk", "vddkpy"))]


def test_deb_in_a_virtual_environment(private_system, deb, tmp_path):
    """With a virtual environment active, nbdkit's Python
    runs in it and does not see python3-cffi: say 'deactivate'."""
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip",
                    str(venv)], check=True)
    active = "env VIRTUAL_ENV=%s PATH=%s/bin:$PATH" % (venv, venv)
    steps = scratch_system(tmp_path, "\n".join([
        dpkg_install(deb),
        "step plugin %s nbdkit vddk --dump-plugin" % active,
        "step check %s vddkpy status" % active]),
        ["install", "plugin", "check"])
    assert steps["install"].returncode == 0, steps["install"].stderr
    line = ("nbdkit: error: vddkpy needs python3-cffi, which the Python "
            "nbdkit embeds does not see: it runs in the virtual environment "
            "%s, active here (nbdkit started by other programs does not): "
            "run 'deactivate'" % venv)
    assert_one_line(steps["plugin"], line)
    assert_one_line(steps["check"], "vddkpy: error: nbdkit vddk "
                    "--dump-plugin failed: " + line)

# -- Python packaging --------------------------------------------------------

def test_pip_install_into_venv(tmp_path):
    setuptools = subprocess.run(
        ["/usr/bin/python3", "-c",
         "import setuptools; print(setuptools.__version__)"],
        capture_output=True, text=True, check=True).stdout.strip()
    if int(setuptools.split(".")[0]) < 61:
        pytest.skip("setuptools %s cannot build from pyproject's [project] "
                    "table (61 and later can; Debian 11 has 52)"
                    % setuptools)
    source = tmp_path / "source"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv",
                    "--system-site-packages", str(venv)], check=True)
    before = set(source.rglob("*"))
    pip = subprocess.run(
        [venv / "bin" / "pip", "install", "--no-index",
         "--no-build-isolation", "--disable-pip-version-check", str(source)],
        capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    # What the build left in the source tree is ignored by git.
    left = sorted(str(p.relative_to(source)) + ("/" if p.is_dir() else "")
                  for p in set(source.rglob("*")) - before
                  if p.parent in (source, source / "vddkpy"))
    assert left
    ignored = subprocess.run(["git", "check-ignore", "--no-index"] + left,
                             cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == left
    probe = subprocess.run(
        [venv / "bin" / "python", "-c",
         "import importlib.metadata as m, vddkpy.vddk.binding as b, vddkpy; "
         "print(m.version('vddkpy'), vddkpy.__file__, b._generated()[1], "
         "m.metadata('vddkpy')['License'])"],
        cwd=tmp_path, capture_output=True, text=True, check=True)
    version, location, not_generated, license_ = probe.stdout.split(None, 3)
    assert version == __version__
    assert location.startswith(str(venv))
    assert not_generated == "None"      # the build made _vddk_cffi.py
    assert license_.strip() == "BSD-3-Clause"
    usage = subprocess.run([venv / "bin" / "vddkpy"], capture_output=True,
                           text=True, cwd=tmp_path)
    assert usage.returncode == 0 and "man nbdkit-vddk-plugin" in usage.stdout
    for tool in ("vddkpy-thumbprint", "vddkpy-install"):
        assert (venv / "bin" / tool).exists()


def test_license_matches_pyproject():
    assert (ROOT / "LICENSE").read_text().startswith("BSD 3-Clause License")
    assert "the vddkpy authors" in (ROOT / "LICENSE").read_text()
    assert 'license = { text = "BSD-3-Clause" }' in \
        (ROOT / "pyproject.toml").read_text()
    assert 'version = { attr = "vddkpy.__version__" }' in \
        (ROOT / "pyproject.toml").read_text()
