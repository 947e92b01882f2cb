"""Hostile and careless input -- parameters, export names, request
shapes, broken files -- ends in a clean one-line error or a correct answer:
never a Python traceback, a hang, or an abort of the stand-in."""

import ctypes
import errno
import os
import shutil
import socket
import struct
import subprocess

import nbd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bed import tally
from bed import (REMOTE, THUMB, assert_no_traceback, random_file,
                      random_vmdk, run_nbdkit, server_config)

KiB = 1024
# The same examples every run, and no example database left behind.
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                # (Hypothesis 5.43, Debian 11's, has no such check.)
                suppress_health_check=[
                    check for check in HealthCheck
                    if check.name == "function_scoped_fixture"])


def error_count(stderr):
    return sum(": error: " in line for line in stderr.splitlines())


def messages(stderr):
    """What nbdkit told the user: every line that is not debug output."""
    return [line for line in stderr.splitlines() if ": debug: " not in line]


def assert_clean(stderr):
    assert_no_traceback(stderr)
    assert "fakevddk:" not in stderr, stderr    # no stand-in abort


# -- parameters ---------------------------------------------------------

# Keys whose values could make nbdkit touch files outside the test
# (create=, stats-file=, file=) are left out; password= gets only forms
# that cannot block on a terminal.
FUZZED_KEYS = [
    "compression", "config", "cookie", "create-adapter-type",
    "create-hwversion", "create-size", "create-type", "export", "libdir",
    "nfchostport", "noreexec", "port", "reexeced_", "server",
    "single-link", "snapshot", "thumbprint", "transports", "unbuffered",
    "user", "vimapiver", "vm", "", "FILE", "file ", "bogus", "x=y"]
PASSWORDS = ["", "-", "-0", "-99", "-x", "+", "+/nonexistent", "+/", "pw"]


def parameter():
    value = st.one_of(
        st.text(max_size=30),
        st.binary(max_size=30).map(
            lambda b: b.replace(b"\0", b"").decode("utf-8",
                                                   "surrogateescape")),
        st.sampled_from(["0", "-1", "65536", "1M", "1E", "true", "yes",
                         "*", "/", "..", "[x] y", "\n"]))
    key = st.sampled_from(FUZZED_KEYS) | st.text(
        alphabet=st.characters(blacklist_characters="=\0"), max_size=12)
    return st.one_of(
        st.tuples(key, value).map(lambda kv: "%s=%s" % kv),
        st.sampled_from(PASSWORDS).map(lambda v: "password=" + v))


@settings(max_examples=20, **SETTINGS)
@given(params=st.lists(parameter(), min_size=1, max_size=3))
def test_parameter_fuzz(tmp_path, libdir, params):
    disk = tmp_path / "disk.raw"
    if not disk.exists():
        random_file(disk, 64 * KiB)
    args = ["file=%s" % disk] + [p.replace("\0", "") for p in params]
    result = run_nbdkit(tmp_path, libdir, args, timeout=60,
                        run='nbdinfo --size "$uri"', errors="replace",
                        stdin=subprocess.DEVNULL)
    tally.add("bad inputs tried")
    assert result.returncode in (0, 1), result.stderr
    assert_clean(result.stderr)
    if result.returncode == 0:
        assert result.stdout.strip() == "65536"
    else:
        assert messages(result.stderr), result.stderr


@pytest.mark.parametrize("case", [
    "missing-password-file", "password-file-is-directory",
    "unreadable-password-file", "empty-password-file", "zlib-as-vddk",
    "corrupt-library", "missing-config"])
def test_careless_configuration(tmp_path, libdir, case):
    store = tmp_path / "datastore1"
    (store / "Fedora").mkdir(parents=True)
    random_vmdk(store / "Fedora" / "Fedora.vmdk", 64 * KiB)
    args = REMOTE[:2] + ["vm=moref=2", "thumbprint=%s" % THUMB,
                         "file=[datastore1] Fedora/Fedora.vmdk"]
    pw = tmp_path / "pw"
    setup = {
        "missing-password-file": lambda: ["password=+%s" % pw],
        "password-file-is-directory": lambda: (pw.mkdir(),
                                               ["password=+%s" % pw])[1],
        "unreadable-password-file": lambda: (pw.write_text("sekret"),
                                             pw.chmod(0), ["password=+%s"
                                                           % pw])[2],
        "empty-password-file": lambda: (pw.write_text(""),
                                        ["password=+%s" % pw])[1],
        "zlib-as-vddk": lambda: broken_libdir(tmp_path, zlib=True),
        "corrupt-library": lambda: broken_libdir(tmp_path, zlib=False),
        "missing-config": lambda: ["password=sekret",
                                   "config=%s" % (tmp_path / "none.conf")],
    }[case]
    extra = setup()
    use_libdir = libdir
    if case in ("zlib-as-vddk", "corrupt-library"):
        use_libdir, extra = extra, ["password=sekret"]
    result = run_nbdkit(tmp_path, use_libdir, args + extra, verbose=False,
                        config=server_config(store),
                        run='nbdinfo --size "$uri"', stdin=subprocess.DEVNULL)
    tally.add("bad inputs tried")
    assert_clean(result.stderr)
    if case == "unreadable-password-file" and os.geteuid() == 0:
        # root reads it anyway: the right password, served.
        assert result.returncode == 0, result.stderr
        return
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines()
              if ": error: " in line]
    assert len(errors) == 1, result.stderr
    assert EXPECTED_ERROR[case] in errors[0], errors


EXPECTED_ERROR = {
    "missing-password-file": "No such file or directory",
    "password-file-is-directory": "Is a directory",
    "empty-password-file": "VixDiskLib_ConnectEx: Authentication failure",
    "zlib-as-vddk": "required VDDK symbol",
    "corrupt-library": "libvixDiskLib.so.8: invalid ELF header",
    "missing-config": "none.conf",
}


def broken_libdir(tmp_path, zlib):
    directory = tmp_path / ("zlib" if zlib else "corrupt")
    directory.mkdir()
    target = directory / "libvixDiskLib.so.8"
    if zlib:
        shutil.copy("/usr/lib/x86_64-linux-gnu/libz.so.1", target)
    else:
        random_file(target, 8 * KiB, seed=13)
    return directory


# -- export names, sent as raw bytes --------------------------------------

from bed.handshake import NBD_OPT_GO, NBD_REP_ACK, NBD_REP_INFO, negotiate_export  # noqa: F401


_libc = ctypes.CDLL(None)
_libc.newlocale.restype = ctypes.c_void_p
_libc.uselocale.restype = ctypes.c_void_p
_libc.uselocale.argtypes = [ctypes.c_void_p]
# The C locale's character type and collation, as the plugin matches in
# (Python runs in the environment's, where glibc 2.31 refuses a name that
# is not valid UTF-8 with -1).
_C_LOCALE = _libc.newlocale((1 << 0) | (1 << 3), b"C", None)


def wildcard_matches(wildcard, name):
    """glibc's fnmatch without FNM_PATHNAME, as vddkpy and nbdkit 1.46 (
    "*" matches "/"; the plugin also refuses names with a ".." component,
    such as "F/../Other.vmdk", which this oracle would admit)."""
    previous = _libc.uselocale(_C_LOCALE)
    try:
        return _libc.fnmatch(wildcard, name, 0) == 0
    finally:
        _libc.uselocale(previous)


WILDCARD = rb"\[datastore1\] Fedora/F*.vmdk"
CRAFTED_NAMES = [
    b"", b"/", b"..", b"*", b"?", b"[", b"\\", b"a" * 4096,
    b"[datastore1] Fedora/" + b"F" * 4070 + b".vmdk",
    b"[datastore1] Fedora/Fedora.vmdk", b"[datastore1] Fedora/F*.vmdk",
    b"[datastore1] Fedora/F/../Other.vmdk",
    b"[datastore1] Fedora/../Fedora/Fedora.vmdk",
    b"[datastore1] Fedora/Other.vmdk", b"[datastore1] Fedora/F\xff.vmdk",
    b"[datastore1] Fedora/F\xc3\x28.vmdk", b"\xff\xfe", b"/etc/passwd",
    b"[datastore1] Fedora/Fedora.vmdk\0.txt", b"[datastore1] Fedora/F.vmdk/",
]


def test_export_names(tmp_path, nbdkit):
    store = tmp_path / "datastore1"
    (store / "Fedora").mkdir(parents=True)
    random_vmdk(store / "Fedora" / "Fedora.vmdk", 64 * KiB)
    random_vmdk(store / "Fedora" / "Other.vmdk", 64 * KiB)
    server = nbdkit(*REMOTE, "thumbprint=%s" % THUMB,
                    "export=%s" % WILDCARD.decode(),
                    config=server_config(store))
    tried = []

    def attempt(name):
        before = error_count(server.stderr)
        reply = negotiate_export(server.socket, name)
        tried.append(name)
        if reply == NBD_REP_ACK:
            assert wildcard_matches(WILDCARD, name), name
        else:
            assert reply & 0x80000000, reply
            # nbdkit itself refuses names over 4096 bytes, before the plugin.
            assert error_count(server.stderr) - before <= 1, server.stderr
        assert server.proc.poll() is None

    for name in CRAFTED_NAMES:
        attempt(name)

    @settings(max_examples=60, **SETTINGS)
    @given(st.one_of(st.binary(max_size=48),
                     st.binary(max_size=12).map(
                         lambda b: b"[datastore1] Fedora/F" + b + b".vmdk")))
    def fuzz(name):
        attempt(name)

    fuzz()
    # A client can make every shape of request; none takes down the
    # server, and every disk it opened matched the wildcard.
    h = server.connect(export="[datastore1] Fedora/Fedora.vmdk")
    assert len(h.pread(512, 0)) == 512
    h.shutdown()
    assert server.stop() == 0
    for call in server.calls("Open"):
        assert wildcard_matches(
            WILDCARD, call["path"].encode("utf-8", "surrogateescape")), call
    assert any(c["result"] == 0 for c in server.calls("Open"))
    tally.add("bad inputs tried", len(tried))
    assert_clean(server.stderr)


# -- request shapes --------------------------------------------------------

DISK_SIZE = 256 * KiB
OPS = ["pread", "pwrite", "zero", "trim", "flush", "cache", "block_status"]
# Flags an NBD client may set, valid or not for the command.
FLAGS = [0, nbd.CMD_FLAG_FUA, nbd.CMD_FLAG_NO_HOLE, nbd.CMD_FLAG_DF,
         nbd.CMD_FLAG_REQ_ONE, nbd.CMD_FLAG_FAST_ZERO, 0x80]


def request_shape():
    sector_multiple = st.integers(0, DISK_SIZE // 512 + 2).map(
        lambda n: n * 512)
    anything = st.integers(0, DISK_SIZE + 4096)
    return st.tuples(st.sampled_from(OPS),
                     st.one_of(sector_multiple, anything,
                               st.just(2 ** 63 - 1)),
                     st.one_of(sector_multiple, anything, st.just(0)),
                     st.sampled_from(FLAGS))


def perform(h, op, offset, length, flags, model):
    """Send one request; returns (errno or None, data read or None)."""
    try:
        if op == "pread":
            return None, h.pread(length, offset, flags)
        if op == "pwrite":
            data = bytes([(offset // 512 + 1) % 256]) * length
            h.pwrite(data, offset, flags)
            model[offset:offset + length] = data
        elif op == "zero":
            h.zero(length, offset, flags)
            model[offset:offset + length] = bytes(length)
        elif op == "trim":
            h.trim(length, offset, flags)
        elif op == "flush":
            h.flush(flags)
        elif op == "cache":
            h.cache(length, offset, flags)
        else:
            h.block_status(length, offset, lambda *a: 0, flags)
    except nbd.Error as e:
        return e.errnum, None
    return None, None


def test_request_shapes(tmp_path, nbdkit):
    disk = random_file(tmp_path / "disk.raw", DISK_SIZE, seed=14)
    model = bytearray(disk.read_bytes())
    server = nbdkit("file=%s" % disk)
    h = server.connect(strict=False)
    counts = {"ok": 0, "refused": 0}

    @settings(max_examples=300, **SETTINGS)
    @given(st.lists(request_shape(), min_size=1, max_size=5))
    @example([("block_status", 512, 512, 0)])   # not at a chunk boundary
    def fuzz(requests):
        for op, offset, length, flags in requests:
            in_range = offset + length <= DISK_SIZE
            failure, data = perform(h, op, offset, length, flags, model)
            tally.add("bad inputs tried")
            if failure is None:
                counts["ok"] += 1
                assert in_range or op == "flush", (op, offset, length)
                if data is not None:
                    assert data == bytes(model[offset:offset + length])
            else:
                counts["refused"] += 1
                assert failure in (errno.EINVAL, errno.ENOSPC,
                                   errno.EOVERFLOW, errno.ENOTSUP,
                                   errno.EPERM), (op, offset, length, flags,
                                                  failure)

    fuzz()
    assert counts["ok"] and counts["refused"]
    assert h.pread(DISK_SIZE, 0) == bytes(model)
    h.shutdown()
    assert server.stop() == 0
    assert disk.read_bytes() == bytes(model)
    assert_clean(server.stderr)
