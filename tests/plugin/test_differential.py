"""Differential test against upstream's C vddk plugin (v1.45.1), both on
the VDDK stand-in: sizes, bytes, allocation maps, block sizes, can-* flags
(``nbdinfo --json``, ``--map``, ``nbdcopy``) and the error lines of bad
parameters must be the same, except for the differences doc/design.md lists
as deliberate (marked xfail(strict): each must still be a difference).

The C plugin cannot be built by this project: the tests run only when
VDDK_C_PLUGIN_DIR names a directory holding an ``nbdkit-vddk-plugin.so``
built for the nbdkit under test; otherwise they are skipped.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

from bed import (PLUGIN, REMOTE, REMOTE_DISK, THUMB, fresh_socket,
                 install_standin, random_vmdk, server_config, standin_env)

C_DIR = os.environ.get("VDDK_C_PLUGIN_DIR")
C_PLUGIN = Path(C_DIR or "/nonexistent") / "nbdkit-vddk-plugin.so"
pytestmark = pytest.mark.skipif(
    not C_PLUGIN.is_file(),
    reason="set VDDK_C_PLUGIN_DIR to a directory holding upstream's "
           "nbdkit-vddk-plugin.so to compare with it")

MiB = 1024 * 1024
TIMEOUT = 120
PLUGINS = {"c": [str(C_PLUGIN)], "py": ["python", str(PLUGIN)]}


def deliberate(reason):
    return pytest.mark.xfail(strict=True, reason="deliberate: " + reason)


# -- disks ------------------------------------------------------------------

def sparse_raw(tmp_path, size=64 * MiB):
    disk = tmp_path / "sparse.raw"
    with open(disk, "wb") as f:
        f.truncate(size)
        for offset in (0, 8 * MiB, 8 * MiB + 192 * 1024, size - 4096):
            f.seek(offset)
            f.write(os.urandom(4096))
    return disk


def odd_raw(tmp_path):
    """1027 sectors: a tail shorter than a QueryAllocatedBlocks chunk."""
    disk = tmp_path / "odd.raw"
    with open(disk, "wb") as f:
        f.truncate(1027 * 512)
        f.seek(512 * 512)
        f.write(os.urandom(128 * 512))
    return disk


def sparse_vmdk(tmp_path):
    disk = tmp_path / "sparse.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(disk),
                    "64M"], check=True)
    source = sparse_raw(tmp_path)
    subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", "-O", "vmdk",
                    str(source), str(disk)], check=True)
    return disk


def remote(tmp_path):
    datastore = tmp_path / "datastore1"
    (datastore / "Fedora").mkdir(parents=True)
    random_vmdk(datastore / "Fedora" / "Fedora.vmdk", 4 * MiB)
    return server_config(datastore)


# (args, nbdkit options, stand-in config, export name) per case.
def disk_case(name, tmp_path):
    if name == "raw":
        return ["file=%s" % sparse_raw(tmp_path)], [], None, None
    if name == "raw-ro":
        return ["file=%s" % sparse_raw(tmp_path)], ["-r"], None, None
    if name == "raw-odd":
        return ["file=%s" % odd_raw(tmp_path)], ["-r"], None, None
    if name == "raw-single-link":
        return (["file=%s" % sparse_raw(tmp_path), "single-link=true"], [],
                None, None)
    if name == "raw-4k-sectors":
        return (["file=%s" % sparse_raw(tmp_path)], [],
                "logical_sector_size 512\nphysical_sector_size 8192\n", None)
    if name == "vmdk-sparse":
        return ["file=%s" % sparse_vmdk(tmp_path)], [], None, None
    if name == "vmdk-sparse-ro":
        return ["file=%s" % sparse_vmdk(tmp_path)], ["-r"], None, None
    if name == "remote":
        return (REMOTE + ["thumbprint=%s" % THUMB, "file=" + REMOTE_DISK],
                [], remote(tmp_path), None)
    if name == "remote-export":
        return (REMOTE + ["thumbprint=%s" % THUMB,
                          r"export=\[datastore1\] Fedora/*.vmdk"],
                ["-r"], remote(tmp_path), REMOTE_DISK)
    raise ValueError(name)


DISKS = ["raw", "raw-ro", "raw-odd", "raw-single-link", "raw-4k-sectors",
         "vmdk-sparse", "vmdk-sparse-ro", "remote", "remote-export"]

# The URI of export $EXPORT (or of the default one) on nbdkit's socket.
EXPORT_URI = r'''
uri="$uri"
if [ -n "$EXPORT" ]; then
    uri="nbd+unix:///$(python3 -c 'import sys, urllib.parse
print(urllib.parse.quote(sys.argv[1]))' "$EXPORT")?socket=$unixsocket"
fi
'''
INSPECT = EXPORT_URI + r'''
nbdinfo --json "$uri" && echo ---map &&
nbdinfo --map "$uri" && echo ---bytes &&
nbdcopy "$uri" - | sha256sum
'''


def run(kind, tmp_path, libdir, args, options=(), config=None, env=None,
        run_script="true"):
    command = (["nbdkit", "-f", "-U", fresh_socket(tmp_path)] + list(options)
               + ["--run", run_script] + PLUGINS[kind]
               + ["libdir=%s" % libdir] + list(args))
    return subprocess.run(command, env=standin_env(tmp_path, config, env),
                          capture_output=True, text=True, timeout=TIMEOUT)


def inspect(kind, tmp_path, libdir, case):
    args, options, config, export = case
    result = run(kind, tmp_path, libdir, args, options, config,
                 {"EXPORT": export or ""}, INSPECT)
    assert result.returncode == 0, result.stderr
    info, rest = result.stdout.split("---map\n")
    extents, digest = rest.split("---bytes\n")
    exports = json.loads(info)["exports"]
    for export in exports:
        export.pop("uri")
    return {"exports": exports, "map": extents, "sha256": digest}


@pytest.mark.parametrize("name", DISKS)
def test_same_disk_facts(tmp_path, name):
    libdir = install_standin(tmp_path / "vddk")
    case = disk_case(name, tmp_path)
    ours = inspect("py", tmp_path, libdir, case)
    theirs = inspect("c", tmp_path, libdir, case)
    assert ours == theirs


# -- error lines ------------------------------------------------------------

def error_lines(stderr):
    """The messages of nbdkit's error lines, without the prefix that says
    which plugin (and callback) printed them, and without vddkpy's own
    ``hint:`` lines (a deliberate difference, see doc/design.md)."""
    messages = [line.rsplit("error: ", 1)[1] for line in stderr.splitlines()
                if "error: " in line]
    return [m for m in messages if not m.startswith("hint: ")]


LOCAL = ["file=/dev/null"]
BAD_CONFIGS = {
    "no-file": [],
    "file-and-export": ["file=/dev/null", "export=*"],
    "unknown-key": LOCAL + ["foo=bar"],
    "compression": LOCAL + ["compression=gzip"],
    "create-type": LOCAL + ["create-type=qcow2"],
    "adapter-type": LOCAL + ["create-adapter-type=nvme"],
    "hwversion": LOCAL + ["create-hwversion=esx99"],
    "create-no-size": LOCAL + ["create=true"],
    "create-size-odd": LOCAL + ["create=true", "create-size=1000"],
    "create-remote": REMOTE + ["file=x", "create=true", "create-size=1M"],
    "bool": LOCAL + ["single-link=maybe"],
    "port": LOCAL + ["port=99999"],
    "nfchostport": LOCAL + ["nfchostport=abc"],
    "remote-missing": ["server=esxi.example.com", "file=x"],
    "remote-no-file": REMOTE,
    "export-empty": REMOTE + ["export="],
}


# Accepted by one plugin only.
BAD_CONFIGS_DELIBERATE = {
    "bare-file-name": (["/dev/null"], deliberate(
        "nbdkit's python plugin has no magic parameter: file= is needed")),
    "stats-file": (LOCAL + ["stats-file={tmp}/stats.json"],
                   deliberate("stats-file= is vddkpy's own")),
}


@pytest.mark.parametrize("name", list(BAD_CONFIGS) + [
    pytest.param(n, marks=m) for n, (_, m) in BAD_CONFIGS_DELIBERATE.items()])
def test_same_config_errors(tmp_path, name):
    libdir = install_standin(tmp_path / "vddk")
    args = [a.format(tmp=tmp_path) for a in BAD_CONFIGS[name]] \
        if name in BAD_CONFIGS else \
        [a.format(tmp=tmp_path) for a in BAD_CONFIGS_DELIBERATE[name][0]]
    results = [run(kind, tmp_path, libdir, args) for kind in ("py", "c")]
    assert [r.returncode for r in results] == [1, 1]
    assert error_lines(results[0].stderr) == error_lines(results[1].stderr)


def library_dir(tmp_path, kind):
    if kind == "empty":
        libdir = tmp_path / "empty"
        libdir.mkdir()
        return libdir
    if kind == "nowait":
        return install_standin(tmp_path / "vddk", version=7,
                               variant="-nowait")
    return install_standin(tmp_path / "vddk", version=5)


@pytest.mark.parametrize("kind", [
    "empty", "nowait",
    pytest.param("vddk5", marks=deliberate(
        "VDDK 5 is named as too old, not reported as a missing .so.9")),
])
def test_same_library_errors(tmp_path, kind):
    libdir = library_dir(tmp_path, kind)
    results = [run(plugin, tmp_path, libdir, LOCAL)
               for plugin in ("py", "c")]
    assert [r.returncode for r in results] == [1, 1]
    assert error_lines(results[0].stderr) == error_lines(results[1].stderr)


RUNTIME = {
    "missing-file": (["file=/nonexistent.raw"], None, ""),
    "relative-file": (["file=relative.raw"], None, ""),
    "wrong-thumbprint": (REMOTE + ["thumbprint=AA", "file=" + REMOTE_DISK],
                         "remote", ""),
    "export-denied": (REMOTE + ["thumbprint=%s" % THUMB,
                                r"export=\[datastore1\] Fedora/?.vmdk"],
                      "remote", "[datastore1] Fedora/é.vmdk"),
    "export-denied-control": (
        REMOTE + ["thumbprint=%s" % THUMB,
                  r"export=\[datastore1\] Fedora/?.vmdk"],
        "remote", "evil\x1b[31m"),
    "missing-file-backslash": (["file=/nonexistent\\n.raw"], None, ""),
}
RUNTIME_DELIBERATE = {
    "export-denied-control": deliberate(
        "client-chosen names are printed escaped"),
    "missing-file-backslash": deliberate(
        "backslashes in file names are printed escaped"),
}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=RUNTIME_DELIBERATE.get(n, ())) for n in RUNTIME])
def test_same_open_errors(tmp_path, name):
    args, where, export = RUNTIME[name]
    libdir = install_standin(tmp_path / "vddk")
    config = remote(tmp_path) if where else None
    script = EXPORT_URI + 'nbdinfo --size "$uri" || :'
    results = [run(kind, tmp_path, libdir, args, (), config,
                   {"EXPORT": export}, script) for kind in ("py", "c")]
    assert [r.returncode for r in results] == [0, 0]
    ours, theirs = (error_lines(r.stderr) for r in results)
    assert ours and ours == theirs


# -- VDDK calls -------------------------------------------------------------

def vddk_calls(kind, tmp_path, libdir, args, options, client):
    """The VDDK functions called while ``client`` (Python using libnbd,
    given the URI as ``uri``) runs against the plugin."""
    log = tmp_path / "calls.jsonl"
    log.unlink(missing_ok=True)
    script = tmp_path / "client.py"
    script.write_text("import sys\nimport nbd\nuri = sys.argv[1]\n" + client)
    result = run(kind, tmp_path, libdir, args, options,
                 run_script='/usr/bin/python3 %s "$uri"' % script)
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["fn"] for line in log.read_text().splitlines()]


@deliberate("a flush on a read-only connection leaves VDDK alone")
def test_same_calls_for_readonly_flush(tmp_path):
    libdir = install_standin(tmp_path / "vddk")
    args = ["file=%s" % sparse_raw(tmp_path)]
    client = "h = nbd.NBD()\nh.connect_uri(uri)\nh.flush()\nh.shutdown()\n"
    ours, theirs = (vddk_calls(kind, tmp_path, libdir, args, ["-r"], client)
                    for kind in ("py", "c"))
    assert ours.count("Flush") == theirs.count("Flush")


@deliberate("a read-only local file's map is asked for at every request")
def test_same_queries_for_a_burst_of_clients(tmp_path):
    libdir = install_standin(tmp_path / "vddk")
    args = ["file=%s" % sparse_raw(tmp_path)]
    # Four connections open, then each asks for two parts of the map.
    client = (
        "hs = [nbd.NBD() for _ in range(4)]\n"
        "for h in hs:\n"
        "    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)\n"
        "    h.connect_uri(uri)\n"
        "for h in hs:\n"
        "    h.block_status(65536, 0, lambda *a: 0)\n"
        "    h.block_status(65536, 8 << 20, lambda *a: 0)\n"
        "    h.shutdown()\n")
    ours, theirs = (vddk_calls(kind, tmp_path, libdir, args, ["-r"], client)
                    for kind in ("py", "c"))
    assert ours.count("QueryAllocatedBlocks") == \
        theirs.count("QueryAllocatedBlocks")
