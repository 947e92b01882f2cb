"""``vddkpy check`` on VDDK directories as users leave them: the good
layouts pass every step; on each broken one exactly the broken step FAILs
with its cause and fix (status 1)."""

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import pytest

from bed import BUILD, ROOT, install_standin, random_file, standin_env
from test_check import lines, run_check, step


def local(tmp_path, libdir):
    disk = random_file(tmp_path / "disk.raw", 1 << 20)
    return ["libdir=%s" % libdir, "file=%s" % disk]


def assert_only_failure(result, name):
    """``name`` is the one FAIL line, and the last line."""
    failed = [line for line in lines(result) if line.startswith("FAIL")]
    assert [line[5:].split(":")[0] for line in failed] == [name], \
        result.stdout + result.stderr
    assert lines(result)[-1] == failed[0]
    assert result.returncode == 1
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("layout", ["flat", "lib64"])
def test_good_layouts_every_step_ok(tmp_path, layout):
    libdir = install_standin(tmp_path / "vmware-vix-disklib-distrib",
                             layout=layout)
    result = run_check(tmp_path, local(tmp_path, libdir))
    assert result.returncode == 0, result.stdout + result.stderr
    assert [line[5:].split(":")[0] for line in lines(result)] == [
        "install", "parameters", "library", "load", "init", "disk", "write"]
    assert all(line.startswith("ok ") for line in lines(result)[1:]), \
        result.stdout


def test_dangling_link(tmp_path):
    """libvixDiskLib.so.8 -> libvixDiskLib.so.8.0.3, which is missing."""
    libdir = tmp_path / "vmware-vix-disklib-distrib"
    (libdir / "lib64").mkdir(parents=True)
    os.symlink("libvixDiskLib.so.8.0.3", libdir / "lib64/libvixDiskLib.so.8")
    result = run_check(tmp_path, local(tmp_path, libdir))
    assert_only_failure(result, "library")
    assert step(result, "library") == (
        "FAIL library: %s/lib64/libvixDiskLib.so.8 is a symbolic link to "
        "libvixDiskLib.so.8.0.3, which does not exist; fix: unpack the whole "
        "VDDK tarball again with tar (the library the link names is "
        "missing)" % libdir)


def test_tarball_not_unpacked(tmp_path):
    """libdir= names the directory the tarball was downloaded to."""
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    tarball = downloads / "VMware-vix-disklib-8.0.3-23950268.x86_64.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(BUILD / "libvixDiskLib.so",
                "vmware-vix-disklib-distrib/lib64/libvixDiskLib.so.8")
    result = run_check(tmp_path, local(tmp_path, downloads))
    assert_only_failure(result, "library")
    assert step(result, "library") == (
        "FAIL library: no libvixDiskLib.so.N in {d}/lib64 or {d}, but VDDK's "
        "tarball {t} is there, not unpacked; fix: tar xzf {t} -C {d}, then "
        "libdir={d}/vmware-vix-disklib-distrib".format(d=downloads,
                                                         t=tarball))


def test_links_stored_as_text(tmp_path):
    """The tarball went through a zip or a Windows share: its links are
    small files holding the name they pointed to."""
    libdir = tmp_path / "vmware-vix-disklib-distrib"
    (libdir / "lib64").mkdir(parents=True)
    shutil.copy(BUILD / "libvixDiskLib.so",
                libdir / "lib64/libvixDiskLib.so.8.0.3")
    (libdir / "lib64/libvixDiskLib.so.8").write_text("libvixDiskLib.so.8.0.3")
    result = run_check(tmp_path, local(tmp_path, libdir))
    assert_only_failure(result, "library")
    assert step(result, "library") == (
        "FAIL library: %s/lib64/libvixDiskLib.so.8 is a text file saying "
        "libvixDiskLib.so.8.0.3: a symbolic link stored as a file (VDDK "
        "copied with a tool that does not keep links: zip, a Windows share); "
        "fix: unpack VDDK's tarball on this machine with tar, which keeps "
        "the links" % libdir)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare")
def test_noexec_filesystem(tmp_path):
    """VDDK on a filesystem mounted noexec: the loader's own error (the
    ESC in the directory's name escaped once), and the mount named as the
    cause."""
    libdir = install_standin(tmp_path / "vmware\x1bvix-disklib-distrib",
                             layout="lib64")
    script = ('mount --bind "$1" "$1" && mount -o remount,bind,noexec "$1" '
              '&& shift && exec "$@"')
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", str(libdir),
         sys.executable, "-m", "vddkpy", "check"] + local(tmp_path, libdir),
        cwd=ROOT, capture_output=True, text=True, env=standin_env(tmp_path),
        timeout=120)
    assert_only_failure(result, "load")
    path = str(libdir / "lib64/libvixDiskLib.so.8").replace("\x1b", "\\x1b")
    assert step(result, "load").startswith(
        "FAIL load: %s is on a filesystem mounted noexec: the loader may not "
        "map it (%s: " % (path, path)), result.stdout
    assert step(result, "load").endswith(
        "); fix: put VDDK on a filesystem mounted without noexec (/opt, "
        "/usr/local), or remount this one with exec")


def _as_nobody(tmp_path, args):
    """The check run as user nobody (in a directory nobody can use), from
    a copy of the package: the checkout may be where nobody cannot read
    (a clone in /root)."""
    checkout = tmp_path / "checkout"
    for part in ("vddkpy", "plugin"):
        shutil.copytree(ROOT / part, checkout / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "vddkpy", "check"] + args,
        cwd=checkout, capture_output=True, text=True,
        env=dict(standin_env(tmp_path), HOME=str(tmp_path)), timeout=120)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run as another user")
@pytest.mark.parametrize("closed", ["library", "lib64"])
def test_unreadable_for_the_user(closed):
    """VDDK unpacked by root with a umask of 077: the user nbdkit runs as
    cannot read the library (0600) or look into lib64/ (0700)."""
    top = tempfile.mkdtemp(prefix="vddkpy-check-")
    try:
        os.chmod(top, 0o777)
        from pathlib import Path
        tmp_path = Path(top)
        libdir = install_standin(tmp_path / "vmware-vix-disklib-distrib",
                                 layout="lib64")
        for directory in (libdir, libdir / "lib64"):
            os.chmod(directory, 0o755)
        library = libdir / "lib64/libvixDiskLib.so.8"
        os.chmod(library, 0o644)
        if closed == "library":
            os.chmod(library, 0o600)
        else:
            os.chmod(libdir / "lib64", 0o700)
        args = local(tmp_path, libdir)
        os.chmod(tmp_path / "disk.raw", 0o666)
        result = _as_nobody(tmp_path, args)
        assert_only_failure(result, "library")
        saw = ("cannot read %s: Permission denied" % library
               if closed == "library" else
               "cannot look into %s/lib64: Permission denied" % libdir)
        assert step(result, "library") == (
            "FAIL library: %s; fix: let the user nbdkit runs as read VDDK: "
            "chmod -R a+rX %s (or unpack it as that user)" % (saw, libdir))
    finally:
        shutil.rmtree(top)


def _foreign_python(top):
    """A Python installation like pyenv's: its own python3 and standard
    library, without cffi."""
    version = "python%d.%d" % sys.version_info[:2]
    stdlib = "/usr/lib/%s" % version
    shutil.copytree(stdlib, top / "lib" / version, symlinks=True,
                    ignore=shutil.ignore_patterns(
                        "dist-packages", "site-packages", "__pycache__",
                        "test", "idlelib", "tkinter", "ensurepip"))
    (top / "bin").mkdir()
    shutil.copy("/usr/bin/%s" % version, top / "bin" / "python3")
    return top


def test_first_python3_on_path_is_another_installation(tmp_path):
    """pyenv's python3 first on PATH: nbdkit's libpython takes its
    modules from there, where cffi is not; the line says so instead of
    'apt install python3-cffi' (which is installed)."""
    if not os.path.exists("/usr/lib/python%d.%d/os.py"
                          % sys.version_info[:2]):
        pytest.skip("no Debian python3 standard library here")
    foreign = _foreign_python(tmp_path / "pyenv")
    libdir = install_standin(tmp_path / "vddk")
    env = dict(standin_env(tmp_path),
               PATH="%s/bin:%s" % (foreign, os.environ["PATH"]))
    result = subprocess.run(
        [sys.executable, "-m", "vddkpy", "check"] + local(tmp_path, libdir),
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert "it took its modules from %s, the installation of the first "\
        "python3 on PATH (pyenv?)" % foreign in errors[0], errors[0]
    assert "apt install" not in result.stderr
    assert "Traceback" not in result.stderr
