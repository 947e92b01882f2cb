"""A sandbox where the documentation's sh examples run against the
stand-in: placeholders mapped to the sandbox (the VDDK directory to the
stand-in, /absolute/path/to to test disks, the example servers to servers
the stand-in emulates)."""

import contextlib
import errno
import glob
import os
import re
import socket
import subprocess

import pytest

from bed import ROOT, TIMEOUT, install_standin, random_file, random_vmdk, standin_env
from bed.tls import tls_server

THUMB = "xx:xx:xx:xx"


def servers(datastore):
    return "".join(
        "server %s\n  thumbprint %s\n  user root sekret\n"
        "  transports nbdssl:nbd\n  vm %s\n    datastore datastore1 %s\n"
        % (host, THUMB, vm, datastore)
        for host, vm in (("esxi.example.com", "moref=2"),
                         ("vcenter.example.com", "moref=vm-16")))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, private_system):
    root = tmp_path_factory.mktemp("readme")
    libdir = install_standin(root / "vmware-vix-disklib-distrib",
                             layout="lib64")
    (root / "abs").mkdir()
    random_vmdk(root / "abs" / "file.vmdk", 2 * 1024 * 1024, seed=11)
    (root / "ds" / "Fedora").mkdir(parents=True)
    random_vmdk(root / "ds" / "Fedora" / "Fedora.vmdk", 1024 * 1024)
    (root / "rootpw").write_text("sekret\n")
    random_file(root / "in.raw", 1024 * 1024, seed=12)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2",
                    str(root / "in.raw"), str(root / "input.qcow2")],
                   check=True)
    tls = tls_server(root)
    subprocess.run(["/usr/bin/python3", "-m", "vddkpy", "install"], cwd=ROOT,
                   check=True, capture_output=True)
    yield {"root": root, "libdir": libdir, "tls": tls,
           "config": servers(root / "ds")}
    tls.close()
    subprocess.run(["/usr/bin/python3", "-m", "vddkpy",
                    "uninstall"], cwd=ROOT, capture_output=True)


def localize(command, sandbox):
    root = sandbox["root"]
    for placeholder, value in (
            ("/opt/vmware-vix-disklib-distrib", str(sandbox["libdir"])),
            ("/absolute/path/to/", "%s/abs/" % root),
            ("/tmp/rootpw", str(root / "rootpw")),
            ("esxi.example.com:443",
             "127.0.0.1:%d" % sandbox["tls"].port),
            ("scripts/", "%s/scripts/" % ROOT),
            ("plugin/plugin.py", str(ROOT / "plugin" / "plugin.py"))):
        command = command.replace(placeholder, value)
    return own_sockets(command, root)


def own_sockets(command, directory):
    """``command`` with a socket in ``directory`` for each "-U -"
    (nbd1.sock, ...; remove them before each run): nbdkit leaves the
    directory of "-U -" in /tmp when it executes itself again, as a vddk
    plugin does."""
    numbers = iter(range(1, command.count("-U - ") + 1))
    return re.sub(r"-U - ", lambda _: "-U %s/nbd%d.sock " % (
        directory, next(numbers)), command)


@contextlib.contextmanager
def libnbd_leftovers_removed():
    """For a block running nbdcopy with a "[ server ]": nbdcopy exits on a
    failed copy without closing its handles, and the directory libnbd
    made for that server's socket (always in /tmp) stays.  Those the
    block left, whose socket no one listens on any more, are removed."""
    before = set(glob.glob("/tmp/libnbd*"))
    try:
        yield
    finally:
        for directory in set(glob.glob("/tmp/libnbd*")) - before:
            if set(os.listdir(directory)) <= {"sock"} and \
                    not _listened_on(os.path.join(directory, "sock")):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, "sock"))
                os.rmdir(directory)


def _listened_on(path):
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(path)
        except OSError as e:
            return e.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    return True


def run_example(sandbox, command):
    """Run one documented sh example in the sandbox and check what it says
    it makes."""
    root = sandbox["root"]
    env = standin_env(root, sandbox["config"])
    for leftover in ("outputfile.raw", "output.vmdk", "converted.qcow2",
                     "stats.json", "calls.jsonl"):
        for path in (root / leftover, root / "abs" / leftover):
            if path.exists():
                path.unlink()
    for socket in root.glob("nbd*.sock"):
        socket.unlink()
    result = subprocess.run(["bash", "-ec", localize(command, sandbox)],
                            cwd=root, env=env, capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    if "outputfile.raw" in command:
        assert (root / "outputfile.raw").read_bytes() == \
            (root / "abs" / "file-flat.vmdk").read_bytes()
    if "converted.qcow2" in command:
        subprocess.run(["qemu-img", "compare", "-F", "raw",
                        str(root / "converted.qcow2"),
                        str(root / "ds" / "Fedora" / "Fedora-flat.vmdk")],
                       check=True)
    if "stats-file" in command:
        assert "VDDK function stats" in result.stderr
        assert (root / "stats.json").exists()
    if "vddkpy thumbprint" in command or "vddkpy.thumbprint" in command:
        assert re.fullmatch(r"([0-9A-F]{2}:){19}[0-9A-F]{2}\n", result.stdout)
    if "--size" in command:
        assert re.search(r"^\d+$", result.stdout, re.M)
