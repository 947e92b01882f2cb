"""``vddkpy check``, a preflight of a VDDK set-up, one line per
step; and the plugin's hint lines after opaque VDDK errors.

Every case runs the real command against the VDDK stand-in and, for
remote disks, an emulated host (``vsphere_front``: HTTPS API with a
certificate and vSphere's about data, an NFC port) whose stand-in
``server`` block matches it.  Each checks the exact line of the step
that fails, the exit status, and that nothing was touched: every Open
is read-only, nothing is written or created, and the disk's bytes hash
the same before and after.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from bed import (BUILD, ROOT, install_standin, random_file, random_vmdk,
                      read_calls, run_nbdkit, standin_env)
from bed.vsphere_front import Host

DISK = "[datastore1] Fedora/Fedora.vmdk"
NO_SCSI_DISK = not os.path.exists("/sys/class/scsi_disk")


def run_check(tmp_path, args, config=None, env=None, options=()):
    command = [sys.executable, "-m", "vddkpy", "check"] + list(options) \
        + list(args)
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          env=standin_env(tmp_path, config, env), timeout=120)


def lines(result):
    return result.stdout.splitlines()


def step(result, name):
    """The line of step ``name`` (exactly one)."""
    found = [line for line in lines(result)
             if line[5:].startswith(name + ": ")]
    assert len(found) == 1, result.stdout + result.stderr
    return found[0]


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_untouched(tmp_path, disk, before):
    """No writes or creation (a read-write run's write step opens the disk
    for writing and closes it), the same bytes."""
    calls = read_calls(tmp_path / "calls.jsonl")
    assert not [c for c in calls if c["fn"] in ("Write", "WriteAsync",
                                                "Create", "Flush")]
    assert digest(disk) == before


@pytest.fixture
def host(tmp_path):
    made = []

    def make(**kw):
        made.append(Host(tmp_path, **kw))
        return made[-1]
    yield make
    for h in made:
        h.close()


@pytest.fixture
def remote(tmp_path, host, libdir):
    """(args, config, the disk's data file, its hash) on a reachable host
    that the check should find in order; tests change one thing."""
    def make(vm_lines="", args=(), **kw):
        h = host(**kw)
        datastore = tmp_path / "datastore1"
        (datastore / "Fedora").mkdir(parents=True, exist_ok=True)
        data = random_vmdk(datastore / "Fedora" / "Fedora.vmdk", 1 << 20)
        base = ["libdir=%s" % libdir, "user=root", "password=sekret",
                "vm=moref=2", "file=" + DISK] + h.args()
        return (base + list(args), h.config(datastore, vm_lines), data,
                digest(data), h)
    return make


def without(args, key):
    return [a for a in args if not a.startswith(key + "=")]


# -- a set-up that works --------------------------------------------------

def test_remote_all_ok(tmp_path, remote):
    args, config, data, before, h = remote(args=["transports=nbdssl:nbd"])
    result = run_check(tmp_path, args, config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert step(result, "thumbprint") == (
        "ok   thumbprint: %s matches the server's certificate"
        % h.thumbprint)
    assert step(result, "version") == (
        "ok   version: VMware ESXi 8.0.2 build-1; VDDK 8 supports vSphere "
        "6.7 to 9.0")
    assert step(result, "api-port") == "ok   api-port: 127.0.0.1:%d " \
        "answers" % h.port
    assert step(result, "nfc-port") == "ok   nfc-port: 127.0.0.1:%d " \
        "answers" % h.nfc_port
    assert step(result, "login") == "ok   login: user root logged in to " \
        "127.0.0.1"
    assert step(result, "vm") == "ok   vm: vm=moref=2 found"
    for mode in ("nbdssl", "nbd"):
        assert step(result, "disk over " + mode) == (
            "ok   disk over %s: read sector 0 of %s read-only, and 1024 KiB "
            "at once (transport used: %s)" % (mode, DISK, mode))
    assert not [line for line in lines(result)
                if not line.startswith(("ok ", "warn "))]
    assert_untouched(tmp_path, data, before)
    reads = read_calls(tmp_path / "calls.jsonl", "Read")
    assert [(c["start"], c["count"]) for c in reads] == [(0, 1), (0, 2048)] * 2


def test_local_all_ok_and_json(tmp_path, libdir):
    disk = random_file(tmp_path / "disk.raw", 1 << 20)
    before = digest(disk)
    args = ["libdir=%s" % libdir, "file=%s" % disk]
    result = run_check(tmp_path, args, options=["--json"])
    assert result.returncode == 0, result.stdout + result.stderr
    document = json.loads(result.stdout)
    assert document["status"] == "ok"
    steps = {s["step"]: s for s in document["steps"]}
    assert list(steps)[:6] == ["install", "parameters", "library", "load",
                               "init", "disk"]
    assert steps["library"] == {
        "status": "ok", "step": "library", "fix": None,
        "saw": "%s/libvixDiskLib.so.8 (VDDK 8: the newest libvixDiskLib.so.N "
               "there; lib64/ is tried first)" % libdir}
    assert steps["disk"]["saw"] == ("read sector 0 of %s read-only, and "
                                    "1024 KiB at once (transport used: "
                                    "file)" % disk)
    assert_untouched(tmp_path, disk, before)


def test_password_forms_never_printed(tmp_path, remote):
    args, config, data, before, _ = remote(args=["transports=nbd"])
    secret_file = tmp_path / "pw"
    secret_file.write_text("sekret")
    fd = os.open(secret_file, os.O_RDONLY)
    try:
        for form in ("password=+%s" % secret_file, "password=-%d" % fd):
            result = subprocess.run(
                [sys.executable, "-m", "vddkpy", "check"]
                + without(args, "password") + [form],
                cwd=ROOT, capture_output=True, text=True, pass_fds=(fd,),
                env=standin_env(tmp_path, config), timeout=120)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "sekret" not in result.stdout + result.stderr
            assert step(result, "login").startswith("ok   login")
    finally:
        os.close(fd)
    assert_untouched(tmp_path, data, before)


def test_unknown_parameter_is_the_plugins_error(tmp_path, libdir):
    result = run_check(tmp_path, ["libdir=%s" % libdir, "file=/dev/null",
                                  "foo=bar"])
    assert result.returncode == 1
    assert result.stderr.strip().endswith("unknown parameter 'foo'")
    assert "Traceback" not in result.stderr


def test_libdir_that_does_not_exist(tmp_path):
    result = run_check(tmp_path, ["libdir=%s/nowhere" % tmp_path,
                                  "file=/dev/null"])
    assert result.returncode == 1
    assert lines(result)[1:] == [
        "FAIL parameters: libdir=%s/nowhere does not exist; fix: correct "
        "them: the plugin refuses them the same way" % tmp_path]


# -- the library ----------------------------------------------------------

@pytest.mark.parametrize("inner", ["lib64/lib64",
                                   "vmware-vix-disklib-distrib/lib64"])
def test_unpacked_one_level_too_deep(tmp_path, inner):
    """A new user's path: the tarball unpacked inside the directory
    libdir= names, one level too deep."""
    libdir = tmp_path / "vmware-vix-disklib-distrib"
    (libdir / inner).mkdir(parents=True)
    shutil.copy(BUILD / "libvixDiskLib.so",
                libdir / inner / "libvixDiskLib.so.8")
    result = run_check(tmp_path, ["libdir=%s" % libdir, "file=/dev/null"])
    assert result.returncode == 1
    assert step(result, "library") == (
        "FAIL library: no libvixDiskLib.so.N in %s/lib64 or %s, but "
        "%s/%s/libvixDiskLib.so.8 is there (VDDK unpacked one level too "
        "deep?); fix: libdir=%s/%s" % (libdir, libdir, libdir, inner,
                                       libdir, os.path.dirname(inner)))
    assert lines(result)[-1].startswith("FAIL library")
    # The line's advice works.
    fixed = run_check(tmp_path, ["libdir=%s/%s" % (libdir,
                                                   os.path.dirname(inner)),
                                 "file=/dev/null"])
    assert fixed.returncode == 0, fixed.stdout
    assert step(fixed, "library").startswith("ok   library: %s/%s/"
                                             % (libdir, inner))


def test_libdir_naming_a_sibling(tmp_path):
    libdir = install_standin(tmp_path / "distrib", layout="lib64")
    (libdir / "bin64").mkdir()
    result = run_check(tmp_path, ["libdir=%s/bin64" % libdir,
                                  "file=/dev/null"])
    assert result.returncode == 1
    assert step(result, "library").endswith(
        "but %s/lib64/libvixDiskLib.so.8 is there (VDDK unpacked one level "
        "too deep?); fix: libdir=%s" % (libdir, libdir))


@pytest.mark.parametrize("machine, name", [(183, "AArch64 (ARM64)"),
                                           (3, "32-bit x86")])
def test_wrong_architecture(tmp_path, machine, name):
    libdir = install_standin(tmp_path / "vddk", layout="lib64")
    library = libdir / "lib64" / "libvixDiskLib.so.8"
    elf = bytearray(library.read_bytes())
    elf[18:20] = machine.to_bytes(2, "little")
    library.write_bytes(bytes(elf))
    result = run_check(tmp_path, ["libdir=%s" % libdir, "file=/dev/null"])
    assert result.returncode == 1
    assert step(result, "library") == (
        "FAIL library: %s is built for %s, not x86-64; fix: download VDDK "
        "for Linux x86-64 (VMware-vix-disklib-*.x86_64.tar.gz) and unpack "
        "it whole" % (library, name))


def test_not_a_library(tmp_path):
    libdir = tmp_path / "vddk"
    (libdir / "lib64").mkdir(parents=True)
    (libdir / "lib64" / "libvixDiskLib.so.8").write_text("<!DOCTYPE html>")
    result = run_check(tmp_path, ["libdir=%s" % libdir, "file=/dev/null"])
    assert result.returncode == 1
    assert step(result, "library") == (
        "FAIL library: %s/lib64/libvixDiskLib.so.8 is not an ELF library "
        "(it begins b'<!DOCTYPE ht'); fix: download VDDK for Linux x86-64 "
        "(VMware-vix-disklib-*.x86_64.tar.gz) and unpack it whole" % libdir)


def test_missing_dependency_named_with_its_directory(tmp_path):
    """libvixDiskLib-linked.so needs the companion library, as real VDDK
    needs its bundled libssl.so.3."""
    libdir = install_standin(tmp_path / "vddk", layout="lib64",
                             variant="-linked", companion=True)
    lib64 = libdir / "lib64"
    args = ["libdir=%s" % libdir, "file=/dev/null"]
    result = run_check(tmp_path, args)
    assert result.returncode == 1
    assert step(result, "load") == (
        "FAIL load: %s/libvixDiskLib.so.8 needs libfakevddk-companion.so, "
        "which the loader does not find; fix: it is in %s: start nbdkit "
        "with LD_LIBRARY_PATH=%s (the plugin adds that directory only once "
        "the library has loaded)" % (lib64, lib64, lib64))
    fixed = run_check(tmp_path, args, env={"LD_LIBRARY_PATH": str(lib64)})
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert step(fixed, "init").startswith("ok   init: InitEx works")


def test_missing_dependency_nowhere(tmp_path):
    libdir = install_standin(tmp_path / "vddk", layout="lib64",
                             variant="-linked")
    result = run_check(tmp_path, ["libdir=%s" % libdir, "file=/dev/null"])
    assert result.returncode == 1
    assert step(result, "load").endswith(
        "fix: it is not under %s either: unpack the whole VDDK tarball, or "
        "install the package providing libfakevddk-companion.so" % libdir)


def test_full_version_from_the_file_name(tmp_path):
    libdir = tmp_path / "vddk"
    (libdir / "lib64").mkdir(parents=True)
    shutil.copy(BUILD / "libvixDiskLib.so",
                libdir / "lib64" / "libvixDiskLib.so.8.0.3")
    os.symlink("libvixDiskLib.so.8.0.3",
               libdir / "lib64" / "libvixDiskLib.so.8")
    result = run_check(tmp_path, ["libdir=%s" % libdir, "file=/dev/null"])
    assert result.returncode == 0, result.stdout
    assert step(result, "init") == (
        "ok   init: InitEx works; VDDK 8.0.3; transport modes "
        "file:san:hotadd:nbdssl:nbd")


# -- the server -----------------------------------------------------------

def test_api_port_closed(tmp_path, remote):
    args, config, data, before, h = remote()
    h.close()
    result = run_check(tmp_path, args, config)
    assert result.returncode == 1
    assert step(result, "api-port") == (
        "FAIL api-port: cannot connect to 127.0.0.1:%d: Connection refused; "
        "fix: check server= and port= (vSphere's HTTPS port, 443), and the "
        "firewall" % h.port)
    assert_untouched(tmp_path, data, before)


def test_nfc_port_blocked(tmp_path, remote):
    """443 works, 902 does not: nothing is read over nbd or nbdssl."""
    args, config, data, before, h = remote(nfc=False,
                                           args=["transports=nbdssl:nbd"])
    result = run_check(tmp_path, args, config)
    assert result.returncode == 1
    assert step(result, "nfc-port") == (
        "FAIL nfc-port: cannot connect to 127.0.0.1:%d: Connection refused; "
        "fix: open TCP port %d (NFC, nfchostport=) from this machine to the "
        "ESXi host: the nbd and nbdssl transports need it"
        % (h.nfc_port, h.nfc_port))
    assert not [line for line in lines(result) if " disk" in line[:10]]
    assert not read_calls(tmp_path / "calls.jsonl", "Open")
    assert_untouched(tmp_path, data, before)


@pytest.mark.parametrize("given", ["AA:BB", None])
def test_wrong_or_missing_thumbprint(tmp_path, remote, given):
    args, config, data, before, h = remote(args=["transports=nbd"])
    args = without(args, "thumbprint") + (["thumbprint=" + given]
                                          if given else [])
    result = run_check(tmp_path, args, config)
    assert result.returncode == 1
    if given:
        assert step(result, "thumbprint") == (
            "FAIL thumbprint: the server's certificate has %s, thumbprint= "
            "says AA:BB; fix: thumbprint=%s" % (h.thumbprint, h.thumbprint))
    else:
        assert step(result, "thumbprint") == (
            "FAIL thumbprint: no thumbprint= given; the server's certificate "
            "has %s; fix: thumbprint=%s" % (h.thumbprint, h.thumbprint))
    # Nothing logs in to a server whose certificate did not match.
    assert not [line for line in lines(result)
                if line[5:].startswith(("login", "vm", "disk", "cbt"))]
    assert not read_calls(tmp_path / "calls.jsonl", "ConnectEx")
    assert_untouched(tmp_path, data, before)


def test_export_has_no_disk_to_read(tmp_path, remote):
    args, config, data, before, _ = remote()
    result = run_check(tmp_path, without(args, "file")
                       + [r"export=\[datastore1\] Fedora/*.vmdk"], config)
    assert result.returncode == 0, result.stdout
    assert step(result, "disk") == ("warn disk: export= lets the client name "
                                    "the disk; fix: add file=NAME to check "
                                    "one disk")
    assert not read_calls(tmp_path / "calls.jsonl", "Open")
    assert_untouched(tmp_path, data, before)


def test_wrong_password(tmp_path, remote):
    args, config, data, before, _ = remote()
    result = run_check(tmp_path, without(args, "password")
                       + ["password=Xyzzy-42"], config)
    assert result.returncode == 1
    assert step(result, "login") == (
        "FAIL login: VixDiskLib_ConnectEx: Authentication failure or "
        "insufficient permissions in guest operating system; fix: check "
        "user= and the password (or cookie=)")
    assert "Xyzzy-42" not in result.stdout + result.stderr
    assert_untouched(tmp_path, data, before)


def test_vm_not_found(tmp_path, remote):
    args, config, data, before, _ = remote()
    result = run_check(tmp_path, without(args, "vm") + ["vm=moref=Fedora"],
                       config)
    assert result.returncode == 1
    assert step(result, "login") == "ok   login: user root logged in"
    assert step(result, "vm") == (
        "FAIL vm: vm=moref=Fedora: The virtual machine cannot be found; fix: "
        "vm=moref= takes the VM's managed object reference (vm-NN on "
        "vCenter, a number on ESXi), not its name")
    assert_untouched(tmp_path, data, before)


def test_snapshot_not_found(tmp_path, remote):
    args, config, data, before, _ = remote(args=["snapshot=snapshot-9"])
    result = run_check(tmp_path, args, config)
    assert result.returncode == 1
    assert step(result, "vm") == "ok   vm: vm=moref=2 found"
    assert step(result, "snapshot") == (
        "FAIL snapshot: snapshot=snapshot-9: The snapshot does not exist; "
        "fix: snapshot= names no snapshot of this VM now: one removed since "
        "(take a new snapshot and pass its reference), or not a managed "
        "object reference (snapshot-NN)")
    assert_untouched(tmp_path, data, before)


def test_running_vm_without_snapshot(tmp_path, remote):
    """Error 13 for a running VM: the fix is snapshot=, which works."""
    args, config, data, before, _ = remote(vm_lines="    running\n",
                                           args=["transports=nbdssl"])
    result = run_check(tmp_path, args, config)
    assert result.returncode == 1
    assert step(result, "disk over nbdssl") == (
        "FAIL disk over nbdssl: VixDiskLib_Open: %s: You do not have access "
        "rights to this file; fix: Error 13 opening the disk of a running "
        "VM: create a snapshot and pass snapshot=MOREF (as virt-v2v, CDI and "
        "Forklift do for warm migrations), or power the VM off" % DISK)
    fixed = run_check(tmp_path, args + ["snapshot=snapshot-1"], config)
    assert fixed.returncode == 0, fixed.stdout
    assert step(fixed, "snapshot") == "ok   snapshot: snapshot=snapshot-1 " \
        "found"
    assert_untouched(tmp_path, data, before)


def test_nfc_out_of_memory(tmp_path, remote):
    args, config, data, before, _ = remote(args=["transports=nbd"])
    config = config.replace("  vm moref=2", "  nfc_max_request 65536\n"
                            "  vm moref=2")
    result = run_check(tmp_path, args, config)
    assert result.returncode == 1
    assert step(result, "disk over nbd") == (
        "FAIL disk over nbd: read sector 0 of %s read-only, but not 1024 KiB "
        "at once (transport used: nbd): VixDiskLib_Read: Memory allocation "
        "failed: out of memory; fix: the ESXi host's NFC server could not "
        "allocate memory for a request this large: add --filter=blocksize "
        "maxdata=2M (less if it still fails) and use fewer connections to "
        "the host" % DISK)
    assert_untouched(tmp_path, data, before)


def test_unknown_error_of_another_cause(tmp_path, remote):
    """Error 1 with the right thumbprint (an Independent-mode disk, say):
    upstream's pointer to the manual is the fix."""
    args, config, data, before, _ = remote(args=["transports=nbd"])
    result = run_check(tmp_path, args, config + "fail Open 1\n")
    assert result.returncode == 1
    assert step(result, "disk over nbd") == (
        'FAIL disk over nbd: VixDiskLib_Open: %s: Unknown error; fix: VDDK '
        '"Unknown error" can be caused by several problems.  Refer to '
        'nbdkit-vddk-plugin(1) section "Error 1 (Unknown error) when opening '
        'a disk" for details.' % DISK)
    assert_untouched(tmp_path, data, before)


@pytest.mark.parametrize("version, library, status, tail", [
    ("5.5.0", 9, "FAIL", "VMware ESXi 5.5.0 build-1; VDDK 9 supports vSphere "
     "7.0 to 10.0; it is too old (VDDK opens disks there but fails reading "
     "them); fix: no VDDK this plugin loads (>= 6.7) supports it"),
    ("6.5.0", 8, "FAIL", "VMware ESXi 6.5.0 build-1; VDDK 8 supports vSphere "
     "6.7 to 9.0; it is too old (VDDK opens disks there but fails reading "
     "them); fix: use VDDK 7.0"),
    ("9.0.0", 8, "ok", "VMware ESXi 9.0.0 build-1; VDDK 8 supports vSphere "
     "6.7 to 9.0 (the next release: except new features)"),
    ("10.0.0", 8, "warn", "VMware ESXi 10.0.0 build-1; VDDK 8 supports "
     "vSphere 6.7 to 9.0; it is newer than VDDK 8 supports; fix: use VDDK "
     "10.0"),
])
def test_version_against_the_library(tmp_path, remote, version, library,
                                     status, tail):
    libdir = install_standin(tmp_path / ("vddk%d" % library),
                             version=library)
    args, config, data, before, _ = remote(version=version)
    args = without(args, "libdir") + ["libdir=%s" % libdir]
    result = run_check(tmp_path, args, config)
    assert result.returncode == (1 if status == "FAIL" else 0), result.stdout
    assert step(result, "version") == "%-4s version: %s" % (status, tail)
    assert_untouched(tmp_path, data, before)


def test_version_of_a_server_that_is_not_vsphere(tmp_path, remote):
    args, config, data, before, _ = remote(sdk=False)
    result = run_check(tmp_path, args, config)
    assert step(result, "version") == (
        "warn version: could not read the server's vSphere version: POST "
        "/sdk answered HTTP 404; fix: check that server= is a vCenter or "
        "ESXi host")
    assert_untouched(tmp_path, data, before)


def test_vcenter_nfc_port_is_the_hosts(tmp_path, remote):
    args, config, data, before, _ = remote(api_type="VirtualCenter",
                                           version="8.0.3")
    result = run_check(tmp_path, args, config)
    assert step(result, "nfc-port").startswith(
        "warn nfc-port: server= is a vCenter (VMware vCenter Server 8.0.3 "
        "build-1): NBD and NBDSSL connect to the ESXi host running the VM")


def test_san_risk_without_transports(tmp_path, remote):
    args, config, data, before, _ = remote()
    result = run_check(tmp_path, args, config)
    assert result.returncode == 0, result.stdout
    connects = [c["transportModes"] for c in read_calls(
        tmp_path / "calls.jsonl", "ConnectEx")]
    if NO_SCSI_DISK:
        assert step(result, "san").endswith(
            "(RHEL-54377); transports= is not given, so VDDK tries san; fix: "
            "transports=nbdssl:nbd (without san)")
        # login, the read, the write step (with the mode that read)
        assert connects == [None] + ["file:hotadd:nbdssl:nbd"] * 2
        assert step(result, "disk over file:hotadd:nbdssl:nbd").endswith(
            "(transport used: nbdssl)")
    else:
        assert connects == [None, None, None]
    assert_untouched(tmp_path, data, before)


def test_san_risk(tmp_path, remote):
    args, config, data, before, _ = remote(args=["transports=san:nbd"])
    result = run_check(tmp_path, args, config)
    san = [line for line in lines(result) if line[5:].startswith("san:")]
    if NO_SCSI_DISK:
        assert san == [
            "warn san: VDDK 8 may crash nbdkit opening a disk on a machine "
            "without /sys/class/scsi_disk (RHEL-54377); san is in "
            "transports=; fix: transports=nbdssl:nbd (without san)"]
        # The crash is not risked: san is not tried.
        assert [c["transportModes"] for c in read_calls(
            tmp_path / "calls.jsonl", "ConnectEx")] == ["san:nbd", "nbd",
                                                        "nbd"]
    else:
        assert san == []
    assert result.returncode == 0, result.stdout
    assert_untouched(tmp_path, data, before)


# -- the plugin's hint lines ----------------------------------------------

def plugin_errors(result):
    return [line.split("error: ")[-1] for line in result.stderr.splitlines()
            if "error: " in line]


def serve_remote(tmp_path, remote, extra=(), vm_lines="",
                 edit=lambda config, host: config,
                 run='nbdinfo --size "$uri" || :'):
    """Serve the emulated host's disk with the plugin; ``edit`` changes
    the stand-in's config."""
    args, config, data, before, h = remote(vm_lines=vm_lines)
    libdir = [a for a in args if a.startswith("libdir=")][0][len("libdir="):]
    result = run_nbdkit(tmp_path, libdir, without(args, "libdir")
                        + list(extra), config=edit(config, h), run=run,
                        verbose=False)
    assert digest(data) == before
    return result, h


def test_plugin_hint_wrong_thumbprint(tmp_path, remote):
    result, h = serve_remote(tmp_path, remote, ["thumbprint=AA:BB"])
    errors = plugin_errors(result)
    assert errors[-3:] == [
        "VixDiskLib_Open: %s: Unknown error" % DISK,
        'VDDK "Unknown error" can be caused by several problems.  Refer to '
        'nbdkit-vddk-plugin(1) section "Error 1 (Unknown error) when opening '
        'a disk" for details.',
        "hint: the server's certificate has thumbprint %s, not AA:BB: use "
        "thumbprint=%s" % (h.thumbprint, h.thumbprint)]


def test_plugin_hint_running_vm(tmp_path, remote):
    result, _ = serve_remote(tmp_path, remote, vm_lines="    running\n")
    assert plugin_errors(result)[-2:] == [
        "VixDiskLib_Open: %s: You do not have access rights to this file"
        % DISK,
        "hint: Error 13 opening the disk of a running VM: create a snapshot "
        "and pass snapshot=MOREF (as virt-v2v, CDI and Forklift do for warm "
        "migrations), or power the VM off"]


def test_plugin_hint_nfc_out_of_memory(tmp_path, remote):
    result, _ = serve_remote(
        tmp_path, remote, edit=lambda config, host: config.replace(
            "  vm moref=2", "  nfc_max_request 65536\n  vm moref=2"),
        run='nbdsh -u "$uri" -c "h.pread(1048576, 0)" || :')
    errors = plugin_errors(result)
    hint = ("hint: the ESXi host's NFC server could not allocate memory for "
            "a request this large: add --filter=blocksize maxdata=2M (less "
            "if it still fails) and use fewer connections to the host")
    assert hint in errors
    assert "asynchronous read failed: Memory allocation failed: out of " \
        "memory" in errors[errors.index(hint) - 1]


def test_plugin_hint_connection_refused(tmp_path, remote):
    result, _ = serve_remote(
        tmp_path, remote, edit=lambda config, host: config.replace(
            "  nfc_port %d" % host.nfc_port, "  nfc_port 1"))
    assert plugin_errors(result)[-2:] == [
        "VixDiskLib_Open: %s: The server refused connection" % DISK,
        "hint: the server refused the connection: check server= and port= "
        "(HTTPS, 443) and that this machine reaches TCP port 902 (NFC, "
        "nfchostport=) of the ESXi host; 'vddkpy check' tests both"]


@pytest.mark.parametrize("extra, lines_expected", [
    (["vm=moref=Fedora"], [
        "VixDiskLib_ConnectEx: The virtual machine cannot be found",
        "hint: vm=moref= takes the VM's managed object reference (vm-NN on "
        "vCenter, a number on ESXi), not its name"]),
    (["snapshot=snap1"], [
        "VixDiskLib_ConnectEx: The snapshot does not exist",
        "hint: snapshot= names no snapshot of this VM now: one removed since "
        "(take a new snapshot and pass its reference), or not a managed "
        "object reference (snapshot-NN)"])])
def test_plugin_hint_unknown_moref(tmp_path, remote, extra, lines_expected):
    result, _ = serve_remote(tmp_path, remote, extra)
    assert plugin_errors(result)[-2:] == lines_expected


# -- installed ------------------------------------------------------------

def test_first_step_is_the_install_check(tmp_path, libdir, private_system):
    """Once vddkpy is nbdkit's vddk plugin, the install step is ok (the
    other tests run where it is not installed: a warning)."""
    plugindir = subprocess.run(["nbdkit", "--dump-config"],
                               capture_output=True, text=True,
                               check=True).stdout
    plugindir = plugindir.split("plugindir=", 1)[1].splitlines()[0]
    install = subprocess.run([sys.executable, "-m", "vddkpy.install"],
                             cwd=ROOT, capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    try:
        result = run_check(tmp_path, ["libdir=%s" % libdir,
                                      "file=/dev/null"])
    finally:
        subprocess.run([sys.executable, "-m", "vddkpy.install",
                        "--uninstall"], cwd=ROOT, check=True,
                       capture_output=True)
    assert result.returncode == 0, result.stdout + result.stderr
    first = lines(result)[0]
    assert first.startswith("ok   install: nbdkit vddk runs vddkpy "), first
    assert first.endswith(" (%s/nbdkit-vddk-plugin)" % plugindir), first



# -- against govmomi's simulator (tests/bed/vcenter.py, the CBT test bed) ---------

def test_vcsim_version_and_change_tracking(tmp_path, libdir, vcsim):
    """The version the check reads from /sdk is the one pyvmomi reads
    (``content.about``), and the cbt step follows changeTrackingEnabled."""
    import socket
    from vddkpy.preflight import compatibility
    bed = vcsim()
    with socket.create_server(("127.0.0.1", 0)) as nfc:
        nfc_port = nfc.getsockname()[1]
        config = bed.standin_config().replace(
            "  vm moref", "  nfc_port %d\n  vm moref" % nfc_port)
        args = bed.plugin_args() + ["libdir=%s" % libdir, "transports=nbd",
                                    "nfchostport=%d" % nfc_port]
        before = digest(bed.data_path)
        about = bed.si.content.about
        sessions = bed.sessions()
        verdict = compatibility.verdict(8, tuple(
            int(n) for n in about.version.split(".")[:2]))
        off = run_check(tmp_path, args, config)
        bed.enable_cbt()
        on = run_check(tmp_path, args, config)
        change_id = bed.change_id()
    assert bed.sessions() == sessions           # the check logged out
    status = "FAIL" if verdict == compatibility.TOO_OLD else "ok"
    assert step(off, "version").startswith(
        "%-4s version: %s; VDDK 8 supports vSphere 6.7 to 9.0"
        % (status, about.fullName))
    assert off.returncode == (1 if status == "FAIL" else 0), off.stdout
    assert step(off, "disk over nbd").startswith("ok   disk over nbd: ")
    assert step(off, "cbt") == (
        "warn cbt: changed block tracking is not enabled on %s of VM "
        "moref=%s: each warm-migration pass would copy the whole disk; fix: "
        "enable it (ReconfigVM_Task with changeTrackingEnabled=true, or the "
        "VM option ctkEnabled=TRUE), take a snapshot, and make a full copy "
        "with changed-since=*" % (bed.disk_file, bed.vm))
    assert step(on, "cbt") == ("ok   cbt: changed block tracking is on; the "
                               "disk's changeId is %s" % change_id)
    assert_untouched(tmp_path, bed.data_path, before)


def test_server_text_is_escaped(tmp_path, remote):
    """A hostile server's product name cannot forge lines or drive the
    terminal."""
    args, config, data, before, _ = remote(version="8.0.2\u202e\nFAIL x")
    result = run_check(tmp_path, args, config)
    assert step(result, "version").startswith(
        "ok   version: VMware ESXi 8.0.2\\u202e\\nFAIL x build-1; VDDK 8 "
        "supports")
    assert "\u202e" not in result.stdout
