"""vddkpy as nbdkit's `vddk` plugin, driven as real consumers do."""

import importlib.util
import os
import shutil
import subprocess
import sys
import time

import pytest

from bed import (ROOT, THUMB, TIMEOUT, assert_no_traceback, flat_vmdk,
                 fresh_socket, has_filter, install_standin, random_file,
                 server_config, standin_env)
from bed.tls import tls_server

PLUGINDIR = subprocess.run(["nbdkit", "--dump-config"], capture_output=True,
                           text=True).stdout.split("plugindir=")[1].split()[0]
# In the private system (see the fixture) no other vddk plugin is visible.
NAME = "vddk"
# virt-v2v adds cacheextents only where the server has it (gone in 1.45).
V2V_FILTERS = tuple(f for f in ("retry", "cacheextents", "cow")
                    if has_filter(f))


def install(*args):
    return subprocess.run([sys.executable, "-m", "vddkpy.install"] +
                          list(args), cwd=ROOT, capture_output=True,
                          text=True)


@pytest.fixture(scope="module")
def installed(private_system):
    result = install("--name", NAME)
    assert result.returncode == 0, result.stderr
    yield NAME
    assert install("--uninstall", "--name", NAME).returncode == 0
    assert not os.path.exists(os.path.join(PLUGINDIR,
                                           "nbdkit-%s-plugin" % NAME))


def test_dump_plugin_and_copy(tmp_path, installed):
    libdir = install_standin(tmp_path / "vddk", layout="lib64")
    dump = subprocess.run(["nbdkit", installed, "--dump-plugin",
                           "libdir=%s" % libdir], capture_output=True,
                          text=True, env=standin_env(tmp_path))
    assert dump.returncode == 0, dump.stderr
    assert "vddk_library_version=8\n" in dump.stdout
    assert "VixDiskLib_QueryAllocatedBlocks=1\n" in dump.stdout
    disk = random_file(tmp_path / "disk.raw", 4 * 1024 * 1024)
    out = tmp_path / "out.raw"
    run = subprocess.run(
        ["nbdkit", "-U", fresh_socket(tmp_path), installed,
         "libdir=%s" % libdir, "file=%s" % disk,
         "--run", 'nbdcopy "$uri" %s' % out],
        capture_output=True, text=True, env=standin_env(tmp_path),
        timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == disk.read_bytes()


def test_install_byte_compiles(installed):
    """A server run by a user who cannot write the installed copy must not
    compile every module at each start."""
    from vddkpy.install.nbdkit_host import EmbeddedPython
    copy = os.path.join(EmbeddedPython("nbdkit", PLUGINDIR).site_packages,
                        "vddkpy")
    modules = [os.path.join(where, name)
               for where, _, names in os.walk(copy)
               for name in names if name.endswith(".py")]
    assert os.path.join(copy, "vddk", "_vddk_cffi.py") in modules
    assert [m for m in modules
            if not os.path.exists(importlib.util.cache_from_source(m))] == []


def test_virt_v2v_probe(tmp_path, installed):
    # virt-v2v first checks the plugin loads at all, without libdir.
    probe = subprocess.run("nbdkit %s --dump-plugin >/dev/null" % installed,
                           shell=True, env=standin_env(tmp_path))
    assert probe.returncode == 0
    # With a libdir lacking VDDK, serving fails with the loader's message
    # that virt-v2v looks for to tell the user to fix libdir.
    result = subprocess.run(
        ["nbdkit", "-U", fresh_socket(tmp_path), installed,
         "libdir=%s" % tmp_path, "file=/dev/null", "--run", "true"],
        capture_output=True, text=True,
        env=dict(standin_env(tmp_path), LANG="C"), timeout=TIMEOUT)
    assert result.returncode == 1
    assert "cannot open shared object file" in result.stderr
    assert_no_traceback(result.stderr)


def start_v2v_style(tmp_path, installed, libdir, datastore, extra=(),
                    thumbprint=THUMB, filters=V2V_FILTERS):
    """nbdkit exactly as virt-v2v's input/nbdkit_vddk.ml runs it."""
    (tmp_path / "pw").write_text("sekret")
    sock = tmp_path / "v2v.sock"
    command = ["nbdkit", "--exit-with-parent", "--foreground", "--newstyle",
               "-U", str(sock), "-D", "vddk.datapath=0", "-D", "vddk.stats=1",
               "-v", "-e", "/", installed, "server=vcenter.example.com",
               "user=root", "vm=moref=vm-16",
               "file=[datastore1] Fedora/Fedora.vmdk",
               "libdir=%s" % libdir, "thumbprint=%s" % thumbprint]
    command += list(extra)
    command += ["password=+%s" % (tmp_path / "pw")]
    command += ["--filter=%s" % f for f in filters]
    config = server_config(datastore, thumbprint=thumbprint).replace(
        "esxi.example.com", "vcenter.example.com").replace(
        "moref=2", "moref=vm-16")
    env = dict(standin_env(tmp_path, config), LANG="C")
    stderr = open(tmp_path / "v2v.stderr", "wb")
    proc = subprocess.Popen(command, env=env, stderr=stderr,
                            stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + TIMEOUT
    while not sock.exists():
        assert proc.poll() is None, (tmp_path / "v2v.stderr").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return proc, "nbd+unix:///?socket=%s" % sock


def stop(proc):
    proc.terminate()
    return proc.wait(TIMEOUT)


@pytest.fixture
def vcenter_disk(tmp_path):
    store = tmp_path / "datastore1"
    (store / "Fedora").mkdir(parents=True)
    disk = store / "Fedora" / "Fedora-flat.vmdk"
    with open(disk, "wb") as f:            # sparse: data, hole, data
        f.write(os.urandom(3 * 1024 * 1024))
        f.seek(16 * 1024 * 1024)
        f.write(os.urandom(1024 * 1024))
    return store, flat_vmdk(store / "Fedora" / "Fedora.vmdk", disk)


def test_virt_v2v_command_line(tmp_path, installed, vcenter_disk):
    store, disk = vcenter_disk
    libdir = install_standin(tmp_path / "vddk", layout="lib64")
    proc, uri = start_v2v_style(tmp_path, installed, libdir, store,
                                extra=["transports=nbdssl:nbd",
                                       "snapshot=snapshot-1"])
    out = tmp_path / "converted.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", uri, str(out)],
                   check=True, timeout=TIMEOUT)
    assert stop(proc) == 0
    subprocess.run(["qemu-img", "compare", "-F", "raw", str(out), str(disk)],
                   check=True)
    stderr = (tmp_path / "v2v.stderr").read_text()
    assert "VDDK function stats (-D vddk.stats=1):" in stderr
    assert "VDDK call: VixDiskLib_ReadAsync" not in stderr
    assert "transport mode: nbdssl" in stderr
    assert_no_traceback(stderr)


def test_cloudstack_settings(tmp_path, installed, vcenter_disk):
    """CloudStack: vddk.lib.dir, vddk.transports=nbd:nbdssl, thumbprint
    fetched from the server when unset, password file deleted after use."""
    store, disk = vcenter_disk
    with tls_server(tmp_path) as server:
        fetched = subprocess.run(
            [sys.executable, "-m", "vddkpy.thumbprint",
             "127.0.0.1:%d" % server.port],
            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    libdir = install_standin(tmp_path / "vddk-lib-dir", layout="lib64")
    proc, uri = start_v2v_style(tmp_path, installed, libdir, store,
                                extra=["transports=nbd:nbdssl"],
                                thumbprint=fetched.strip())
    os.unlink(tmp_path / "pw")          # CloudStack deletes it after use
    out = tmp_path / "out.raw"
    subprocess.run(["nbdcopy", uri, str(out)], check=True, timeout=TIMEOUT)
    assert stop(proc) == 0
    assert out.read_bytes() == disk.read_bytes()


@pytest.mark.parametrize("filters,args", [
    (["blocksize"], ["minblock=512", "maxdata=2M"]),
    (["noextents"], []),
    pytest.param(["cacheextents"], [], marks=pytest.mark.skipif(
        not has_filter("cacheextents"), reason="server has no cacheextents")),
    (["readahead"], []),
    (["retry"], []),
    (["cow"], []),
    (["rate"], ["rate=1G"]),
    pytest.param(["multi-conn"], ["multi-conn-mode=disable"],
                 marks=pytest.mark.skipif(not has_filter("multi-conn"),
                                          reason="server has no multi-conn")),
])
def test_filters(tmp_path, installed, filters, args):
    libdir = install_standin(tmp_path / "vddk")
    disk = random_file(tmp_path / "disk.raw", 8 * 1024 * 1024, seed=5)
    original = disk.read_bytes()
    source = random_file(tmp_path / "src.raw", 4 * 1024 * 1024, seed=6)
    out = tmp_path / "out.raw"
    # Write through the filter, then read everything back.
    script = ('nbdcopy %s "$uri" && nbdcopy "$uri" %s && nbdinfo --map '
              '"$uri"' % (source, out))
    result = subprocess.run(
        ["nbdkit", "-U", fresh_socket(tmp_path)]
        + ["--filter=%s" % f for f in filters]
        + [installed, "libdir=%s" % libdir, "file=%s" % disk] + args
        + ["--run", script], capture_output=True, text=True,
        env=standin_env(tmp_path), timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    expected = source.read_bytes() + original[4 * 1024 * 1024:]
    assert out.read_bytes() == expected
    if filters != ["cow"]:
        assert disk.read_bytes() == expected
    else:
        assert disk.read_bytes() == original    # cow keeps writes aside


def test_unaligned_client_with_blocksize_filter(tmp_path, installed):
    libdir = install_standin(tmp_path / "vddk")
    disk = random_file(tmp_path / "disk.raw", 1024 * 1024, seed=9)
    script = ("/usr/bin/python3 -c \"import nbd; h = nbd.NBD(); "
              "h.set_strict_mode(0); h.connect_uri('$uri'); "
              "h.pwrite(b'Q' * 100, 3); print(h.pread(10, 0).hex())\"")
    result = subprocess.run(
        ["nbdkit", "-U", fresh_socket(tmp_path), "--filter=blocksize",
         installed, "libdir=%s" % libdir, "file=%s" % disk, "minblock=512",
         "--run", script], capture_output=True, text=True,
        env=standin_env(tmp_path), timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    data = disk.read_bytes()
    assert data[3:103] == b"Q" * 100
    assert result.stdout.strip() == data[:10].hex()


def test_install_refuses_c_plugin_and_restores_it(tmp_path, private_system):
    name = "vddkpyctest"
    c_plugin = os.path.join(PLUGINDIR, "nbdkit-%s-plugin.so" % name)
    shutil.copy(os.path.join(PLUGINDIR, "nbdkit-null-plugin.so"), c_plugin)
    try:
        refused = install("--name", name)
        assert refused.returncode == 1
        assert "use --force" in refused.stderr
        assert install("--name", name, "--force").returncode == 0
        assert not os.path.exists(c_plugin)
        dump = subprocess.run(["nbdkit", name, "--dump-plugin"],
                              capture_output=True, text=True)
        assert "vddk_has_nfchostport=1" in dump.stdout
        assert install("--uninstall", "--name", name).returncode == 0
        assert os.path.exists(c_plugin)
        assert not os.path.exists(c_plugin[:-3])
    finally:
        for path in (c_plugin, c_plugin + ".vddkpy-saved", c_plugin[:-3]):
            if os.path.lexists(path):
                os.unlink(path)
