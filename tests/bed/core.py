"""The bed's core: the VDDK stand-in installed as a VDDK distribution,
nbdkit running the plugin against it, test disks, and the checks every
server test makes (no crash, no traceback, exact error lines)."""

import contextlib
import functools
import hashlib
import itertools
import json
import os
import shutil
import signal
import socket as sockets
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "plugin" / "plugin.py"
STANDIN = ROOT / "tests" / "bed" / "standin"
BUILD = STANDIN / "build"
TIMEOUT = 60

# The stand-in's emulated ESXi host (see server_config) and its credentials.
REMOTE = ["server=esxi.example.com", "user=root", "password=sekret",
          "vm=moref=2"]
THUMB = "B2:31:BD:DE:9F:DB:9D:E0:78:EF:30:42:8A:41:B0:28:92:93:C8:DD"
REMOTE_DISK = "[datastore1] Fedora/Fedora.vmdk"
REMOTE_DISK_ARGS = REMOTE + ["thumbprint=%s" % THUMB, "file=" + REMOTE_DISK]


def _put_tools_first_on_path():
    """Every test and shell snippet finds, first on PATH, "python3" as the
    Python running the tests (the one nbdkit embeds, holding libnbd's
    module for nbdsh) and, when $NBDKIT is set, "nbdkit" as the server
    under test (otherwise the nbdkit already first on PATH is).  The
    directory is named by what it points to and kept in build/ for the next
    run: a killed run leaves nothing in $TMPDIR.  A user who cannot write
    the checkout (the unit tests run so) gets one such directory of their
    own in $TMPDIR, reused the same way."""
    tools = {"python3": sys.executable}
    if os.environ.get("NBDKIT"):
        tools["nbdkit"] = os.path.abspath(os.environ["NBDKIT"])
    key = hashlib.sha256(repr(sorted(tools.items())).encode()).hexdigest()
    bindir = ROOT / "build" / "tests-bin" / key[:16]
    try:
        bindir.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        import tempfile
        bindir = Path(tempfile.gettempdir()) / (
            "vddkpy-tests-bin-%d-%s" % (os.getuid(), key[:16]))
        bindir.mkdir(mode=0o700, exist_ok=True)
    for name, target in tools.items():
        link = bindir / name
        if not link.is_symlink() or os.readlink(link) != target:
            # (Atomic: another run may be reading the directory.)
            temporary = bindir / (".%s.%d" % (name, os.getpid()))
            os.symlink(target, temporary)
            os.replace(temporary, link)
    os.environ["PATH"] = str(bindir) + os.pathsep + os.environ["PATH"]


_put_tools_first_on_path()


@functools.lru_cache(maxsize=None)
def server_version():
    """(major, minor, micro) of the nbdkit under test, as the plugin reads
    its server's."""
    from vddkpy.nbdkit.cmdline import server_version as version_of
    return version_of(shutil.which("nbdkit"))


@functools.lru_cache(maxsize=None)
def has_filter(name):
    """Whether the nbdkit under test has filter ``name`` (virt-v2v's test)."""
    return subprocess.run(["nbdkit", "--filter=" + name, "null",
                           "--dump-plugin"], capture_output=True).returncode \
        == 0


def hangup_safe_options():
    """nbdkit options that keep a client hanging up with replies still
    queued from aborting the server under test.  nbdkit 1.32.4 to 1.33.9
    (Debian 12 has 1.32.5) may then abort in "raw_send_socket: Assertion
    `sock >= 0' failed" (fixed by nbdkit commit 9d82aa4f, "server: Don't
    assert on send if client hangs up early"); one thread per connection
    cannot race, the commit's own workaround."""
    return ["--threads=1"] if (1, 32, 4) <= server_version() < (1, 33, 10) \
        else []


# The python plugin's callbacks that came after nbdkit 1.24 (Debian 11,
# Ubuntu 22.04), with the version that first calls each.  (The plugin
# itself never asks the version: it notices which callbacks arrive.)
_CALLBACK_SINCE = {"after_fork": (1, 26, 0), "preconnect": (1, 26, 0),
                   "cleanup": (1, 28, 0), "block_size": (1, 30, 0)}


def server_calls(callback):
    """Whether the nbdkit under test calls the python plugin's
    ``callback`` (one of _CALLBACK_SINCE)."""
    return server_version() >= _CALLBACK_SINCE[callback]


@functools.lru_cache(maxsize=None)
def client_takes(tool, option):
    """Whether libnbd's ``tool`` (nbdinfo, nbdcopy) accepts ``option``,
    written with its argument ("--can=flush"): options are parsed before
    --version acts, so an unknown one fails."""
    return subprocess.run([tool, option, "--version"],
                          capture_output=True).returncode == 0


def requires_client_option(tool, option):
    """A mark skipping the test, with the reason, where ``tool`` lacks
    ``option`` (libnbd 1.6's, Debian 11's, lack several)."""
    return pytest.mark.skipif(
        not client_takes(tool, option),
        reason="this %s has no %s option (libnbd 1.6's lacks it)"
        % (tool, option.split("=")[0]))


def requires_bench_tools(*tools):
    """A mark skipping a benchmark test, with the reason, where a tool it
    drives is missing: Debian 11 has no hyperfine package, and its fio
    (3.25) no nbd engine."""
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if "fio" in tools and not missing and subprocess.run(
            ["fio", "--enghelp=nbd"], capture_output=True).returncode != 0:
        missing.append("fio's nbd engine")
    return pytest.mark.skipif(bool(missing), reason="%s not installed"
                              % " and ".join(missing))


# What a dying server leaves on stderr even when --run hides its status.
_CRASH_MARKS = ("Fatal Python error", "Segmentation fault", "core dumped",
                "was killed by signal", "Assertion `", "Assertion '",
                "Aborted")
_CRASH_SIGNALS = (-signal.SIGABRT, -signal.SIGSEGV, -signal.SIGBUS,
                  -signal.SIGILL, -signal.SIGFPE)


def assert_server_survived(stderr, returncode=0):
    """The server did not crash (``nbdkit --run`` may exit 0 when the
    server aborted after the command finished)."""
    marks = [m for m in _CRASH_MARKS if m in stderr]
    assert not marks and returncode not in _CRASH_SIGNALS, \
        "nbdkit crashed (exit %s, %s):\n%s" % (returncode, marks, stderr)


def install_standin(libdir, version=8, layout="flat", variant="",
                    companion=False):
    """Make ``libdir`` look like a VDDK distribution holding the stand-in
    as libvixDiskLib.so.VERSION (``layout`` "lib64" or "flat")."""
    target = Path(libdir) / ("lib64" if layout == "lib64" else "")
    target.mkdir(parents=True, exist_ok=True)
    source = BUILD / ("libvixDiskLib%s.so" % variant)
    shutil.copy(source, target / ("libvixDiskLib.so.%d" % version))
    if companion:
        shutil.copy(BUILD / "libfakevddk-companion.so", target)
    return Path(libdir)


class Nbdkit:
    """An nbdkit process serving the plugin on a Unix socket."""

    def __init__(self, tmp_path, libdir, args, options=(), config=None,
                 env=None, readonly=False, verbose=True, stdin=None,
                 pass_fds=()):
        self.tmp = tmp_path
        self.socket = str(tmp_path / "nbd.sock")
        self.pidfile = tmp_path / "nbdkit.pid"
        self.log_path = tmp_path / "calls.jsonl"
        self.stderr_path = tmp_path / "nbdkit.stderr"
        for p in (self.pidfile, self.log_path, Path(self.socket)):
            if p.exists():
                p.unlink()
        self.env = standin_env(tmp_path, config, env)
        self.command = ["nbdkit", "-f", "-U", self.socket, "-P",
                        str(self.pidfile)]
        if verbose:
            self.command.append("-v")
        if readonly:
            self.command.append("-r")
        self.command += list(options)
        self.command += ["python", str(PLUGIN)]
        if libdir is not None:
            self.command.append("libdir=%s" % libdir)
        self.command += list(args)
        self.stdin = stdin
        self.pass_fds = pass_fds
        self.proc = None

    @property
    def uri(self):
        return "nbd+unix:///?socket=%s" % self.socket

    def start(self):
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.command, env=self.env, stderr=err,
                stdout=subprocess.DEVNULL,
                stdin=self.stdin or subprocess.DEVNULL,
                pass_fds=self.pass_fds)
        deadline = time.monotonic() + TIMEOUT
        while not self.pidfile.exists():
            if self.proc.poll() is not None:
                raise AssertionError("nbdkit exited %d:\n%s"
                                     % (self.proc.returncode, self.stderr))
            if time.monotonic() > deadline:
                raise AssertionError("nbdkit did not start:\n" + self.stderr)
            time.sleep(0.02)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def assert_survived(self):
        assert_server_survived(self.stderr, self.proc.returncode)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def stderr(self):
        return self.stderr_path.read_text(errors="replace")

    def calls(self, fn=None):
        return read_calls(self.log_path, fn)

    def wait_for_call(self, fn):
        """Wait until the stand-in has logged a call of ``fn``."""
        deadline = time.monotonic() + TIMEOUT
        while not self.calls(fn):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError("no %s call:\n%s" % (fn, self.stderr))
            time.sleep(0.02)

    def connect(self, export=None, strict=True):
        import nbd
        h = nbd.NBD()
        if not strict:
            h.set_strict_mode(0)
        if export is not None:
            h.set_export_name(export)
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        h.connect_unix(self.socket)
        return h


def standin_env(tmp_path, config=None, extra=None):
    env = dict(os.environ)
    env.pop("LD_LIBRARY_PATH", None)
    env["FAKEVDDK_LOG"] = str(tmp_path / "calls.jsonl")
    if config is not None:
        path = tmp_path / "fakevddk.conf"
        path.write_text(config)
        env["FAKEVDDK_CONFIG"] = str(path)
    env.update(extra or {})
    return env


def read_calls(path, fn=None):
    path = Path(path)
    if not path.exists():
        return []
    # Paths are logged as the plugin passed them: maybe not UTF-8.
    text = path.read_bytes().decode("utf-8", "surrogateescape")
    calls = [json.loads(line) for line in text.splitlines()]
    return [c for c in calls if fn is None or c["fn"] == fn]


_SOCKETS = itertools.count()


def fresh_socket(tmp_path):
    """A Unix socket path of the test's for ``nbdkit -U``, new at each
    call (nbdkit leaves the socket there).  Not "-U -": nbdkit makes that
    one's directory in /tmp and leaves it behind when it fails before
    serving."""
    return str(tmp_path / ("run%d.sock" % next(_SOCKETS)))


def stop_listening(listener):
    """Close a listening socket that a thread of the test waits on in
    accept(): shut down first, or on Linux that accept() never returns
    and its thread outlives the test (Python 3.12 and later then warn at
    every fork of the test process, pexpect's among them)."""
    try:
        listener.shutdown(sockets.SHUT_RDWR)
    except OSError:
        pass
    listener.close()


@contextlib.contextmanager
def listening(listener):
    """``listener`` for the block, then stop_listening."""
    try:
        yield listener
    finally:
        stop_listening(listener)


def run_nbdkit(tmp_path, libdir, args, options=(), config=None, env=None,
               run=None, verbose=True, timeout=TIMEOUT, **popen):
    """Run nbdkit to completion (config errors, --dump-plugin, --run);
    the server must not crash."""
    socket = fresh_socket(tmp_path)
    command = ["nbdkit", "-f", "-U", socket]
    if verbose:
        command.append("-v")
    command += list(options)
    if run is not None:
        command += ["--run", run]
    command += ["python", str(PLUGIN)]
    if libdir is not None:
        command.append("libdir=%s" % libdir)
    command += list(args)
    try:
        result = subprocess.run(command,
                                env=standin_env(tmp_path, config, env),
                                capture_output=True, text=True,
                                timeout=timeout, **popen)
    finally:
        Path(socket).unlink(missing_ok=True)    # nbdkit leaves it
    assert_server_survived(result.stderr, result.returncode)
    return result


def error_lines(stderr):
    return [line for line in stderr.splitlines() if "error:" in line]


def assert_no_traceback(stderr):
    assert "Traceback" not in stderr, stderr


def random_file(path, size, seed=0):
    import random
    rng = random.Random(seed)
    path.write_bytes(rng.randbytes(size))
    return path


def flat_vmdk(path, extent):
    """Make ``path`` a monolithicFlat VMDK whose only extent is the existing
    raw file ``extent`` (in the same directory), as VMware lays out a flat
    disk: a small text descriptor naming the data file.  Returns
    ``extent``, the file holding the disk's bytes."""
    sectors = extent.stat().st_size // 512
    path.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\n"
        "parentCID=ffffffff\ncreateType=\"monolithicFlat\"\n\n"
        "# Extent description\nRW %d FLAT \"%s\" 0\n\n"
        "# The Disk Data Base\n#DDB\n\nddb.adapterType = \"buslogic\"\n"
        % (sectors, extent.name))
    return extent


def random_vmdk(path, size, seed=0):
    """A flat VMDK ``path`` of ``size`` random bytes; returns the extent
    file (NAME-flat.vmdk) that holds them."""
    extent = random_file(path.with_name(path.stem + "-flat.vmdk"), size,
                         seed)
    return flat_vmdk(path, extent)


def server_config(datastore, **overrides):
    settings = {"thumbprint": THUMB, "transports": "nbdssl:nbd"}
    settings.update(overrides)
    return (
        "server esxi.example.com\n"
        "  port 443\n"
        "  nfc_port 902\n"
        "  thumbprint %(thumbprint)s\n"
        "  user root sekret\n"
        "  cookie COOKIE42 root\n"
        "  transports %(transports)s\n"
        "  vm moref=2\n"
        "    datastore datastore1 %(datastore)s\n"
        "    snapshot snapshot-1\n"
        % dict(settings, datastore=datastore))


def remote_disk(directory, size, seed=0):
    """Put a disk of ``size`` random bytes at REMOTE_DISK on the stand-in's
    ESXi host (datastore under ``directory``), reached with
    REMOTE_DISK_ARGS over a network transport (nbdssl), where VDDK's
    asynchronous requests overlap.  Returns (the stand-in config, the file
    holding the disk's bytes)."""
    datastore = directory / "datastore1"
    (datastore / "Fedora").mkdir(parents=True, exist_ok=True)
    data = random_vmdk(datastore / "Fedora" / "Fedora.vmdk", size, seed)
    return server_config(datastore), data


def some_disk(tmp_path, where, size, seed=0):
    """(plugin args, stand-in config, file holding the bytes) of a disk of
    ``size`` random bytes: "local" is a raw file (VDDK's file transport,
    synchronous Read/Write), "remote" is on the stand-in's ESXi host
    (a network transport: ReadAsync/WriteAsync)."""
    if where == "local":
        disk = random_file(tmp_path / "disk.raw", size, seed)
        return ["file=%s" % disk], "", disk
    config, disk = remote_disk(tmp_path, size, seed)
    return REMOTE_DISK_ARGS, config, disk



def raw_controls(text):
    """The control characters (C0 but newline, DEL, C1) left in ``text``."""
    return [c for c in text if (ord(c) < 32 and c != "\n")
            or 0x7f <= ord(c) < 0xa0]
