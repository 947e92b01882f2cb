"""``vddkpy check`` against what crashes, hangs or floods it: a damaged
library, VDDK's own copies of system libraries, a hostile vSphere API
port, a command line near the system's limit, a stats-file= that is
a FIFO or becomes one between its look and its opening, a read-only
filesystem.  Each ends in one line, within a
bounded time, never a traceback."""

import os
import shutil
import subprocess
import sys

import pytest

from bed import BUILD, ROOT, random_file, standin_env
from bed.openpause import SUPPORTED, fifo_at
from bed.tls import TlsServer

from test_check import (DISK, host, lines, remote, run_check, step,  # noqa
                        without)


def assert_clean(result):
    assert "Traceback" not in result.stdout + result.stderr, \
        result.stdout + result.stderr


# -- the library ----------------------------------------------------------

def _truncated_copy(libdir, size, forget_sections=False):
    libdir.mkdir()
    path = libdir / "libvixDiskLib.so.8"
    data = bytearray((BUILD / "libvixDiskLib.so").read_bytes()[:size])
    if forget_sections:                 # e_shoff, e_shnum: 0
        data[40:48] = bytes(8)
        data[60:62] = bytes(2)
    path.write_bytes(bytes(data))
    return path


def test_truncated_library(tmp_path):
    """A partial download: the library step says so; nothing is loaded."""
    path = _truncated_copy(tmp_path / "vddk", 65536)
    size = (BUILD / "libvixDiskLib.so").stat().st_size
    result = run_check(tmp_path, ["libdir=%s" % path.parent,
                                  "file=/dev/null"])
    assert result.returncode == 1
    assert step(result, "library") == (
        "FAIL library: %s is truncated: 65536 bytes, but its ELF header "
        "describes %d (a broken or partial download?); fix: download VDDK "
        "for Linux x86-64 (VMware-vix-disklib-*.x86_64.tar.gz) and unpack "
        "it whole" % (path, size))
    assert_clean(result)


def test_library_that_kills_the_loader(tmp_path):
    """A damaged file the loader dies on (SIGBUS) is loaded first in a
    child process: the load step says so in one line."""
    path = _truncated_copy(tmp_path / "vddk", 65536, forget_sections=True)
    result = run_check(tmp_path, ["libdir=%s" % path.parent,
                                  "file=/dev/null"])
    assert result.returncode == 1, result.stdout + result.stderr
    assert step(result, "load") == (
        "FAIL load: loading %s killed the process (SIGBUS); fix: the file "
        "is damaged (a broken or partial download?): download VDDK for "
        "Linux x86-64 (VMware-vix-disklib-*.x86_64.tar.gz) and unpack it "
        "whole" % path)
    assert_clean(result)


def test_vddk_own_ssl_libraries(tmp_path, remote):
    """VDDK ships libssl and libcrypto next to libvixDiskLib; the re-exec
    puts them first for nbdkit, where Python's ssl cannot use them: the
    check's network steps still work (they run with nbdkit's original
    environment)."""
    args, config, data, before, h = remote(args=["transports=nbd"])
    libdir = [a for a in args if a.startswith("libdir=")][0][len("libdir="):]
    for name in ("libssl.so.3", "libcrypto.so.3"):
        shutil.copy(BUILD / "libfakevddk-companion.so",
                    os.path.join(libdir, name))
    result = run_check(tmp_path, args, config)
    assert_clean(result)
    assert step(result, "thumbprint") == (
        "ok   thumbprint: %s matches the server's certificate" % h.thumbprint)
    assert step(result, "disk over nbd").startswith("ok   disk over nbd: ")
    assert result.returncode == 0, result.stdout + result.stderr


# -- a hostile API port ---------------------------------------------------

class HostileApi(TlsServer):
    """A TLS server answering every request with ``answer(tls, stopped)``
    (a handshake alone, the thumbprint step's, gets nothing)."""

    def __init__(self, directory, answer):
        self.answer = answer
        super().__init__(directory, self._answer_request, name="api")

    def _answer_request(self, tls):
        tls.settimeout(5)
        request = b""
        while b"\r\n\r\n" not in request:
            piece = tls.recv(4096)
            if not piece:
                return
            request += piece
        self.answer(tls, self.stopped)


def _trickle(tls, stopped):
    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    while not stopped.wait(0.5):
        tls.sendall(b"<")


def _endless(tls, stopped):
    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n")
    while not stopped.is_set():
        tls.sendall(b"<x>" * 4096)


def _huge_length(tls, stopped):
    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000000\r\n\r\n"
                b"<x>")
    stopped.wait(30)


def _large_body(tls, stopped):
    body = b"<x>" * (200 * 1024 * 1024 // 3)
    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
    tls.sendall(body)


@pytest.mark.parametrize("answer, saw", [
    (_trickle, "no complete answer from 127.0.0.1 within 20 s"),
    (_endless, "POST /sdk answered more than 1024 KiB: not vSphere's "
               "ServiceContent"),
    (_huge_length, "POST /sdk answered more than 1024 KiB: not vSphere's "
                   "ServiceContent"),
    (_large_body, "POST /sdk answered more than 1024 KiB: not vSphere's "
                  "ServiceContent"),
], ids=["trickle", "endless", "content-length-1e12", "200MB"])
def test_hostile_api_answer(tmp_path, libdir, answer, saw):
    """The version step ends in one line however /sdk answers, and the
    steps after it still run."""
    api = HostileApi(tmp_path, answer)
    try:
        result = run_check(tmp_path, [
            "libdir=%s" % libdir, "server=127.0.0.1", "port=%d" % api.port,
            "user=root", "password=sekret", "vm=moref=2", "file=" + DISK,
            "thumbprint=%s" % api.thumbprint, "nfchostport=1"])
    finally:
        api.close()
    assert_clean(result)
    assert step(result, "version") == (
        "warn version: could not read the server's vSphere version: %s; "
        "fix: check that server= is a vCenter or ESXi host" % saw)
    assert step(result, "nfc-port").startswith("FAIL nfc-port: ")
    assert result.returncode == 1


# -- the command line -----------------------------------------------------

def _fits(command, env):
    """Whether exec takes ``command`` (run as /bin/true)."""
    try:
        subprocess.run(command, executable="/bin/true", env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return False
    return True


def test_arguments_near_the_system_limit(tmp_path, libdir):
    """Parameters that fit the check's own command line but not nbdkit's
    (which adds its program and script): one line, status 1."""
    env = standin_env(tmp_path)
    base = ["libdir=%s" % libdir, "file=/dev/null"]
    low, high = 0, os.sysconf("SC_ARG_MAX")
    while high - low > 16:
        middle = (low + high) // 2
        padding = ["config=" + "x" * 100000] * (middle // 100008) + [
            "config=" + "x" * (middle % 100008)]
        if _fits([sys.executable, "-m", "vddkpy", "check"] + base + padding,
                 env):
            low = middle
        else:
            high = middle
    low -= 64           # (exec also copies the program's path)
    padding = ["config=" + "x" * 100000] * (low // 100008) + [
        "config=" + "x" * (low % 100008)]
    result = subprocess.run(
        [sys.executable, "-m", "vddkpy", "check"] + base + padding,
        cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert_clean(result)
    assert result.returncode == 1
    message = result.stderr.strip().splitlines()
    assert len(message) == 1, result.stderr
    assert message[0].startswith("vddkpy check: cannot run ")
    assert ": Argument list too long (the parameters take " in message[0]


# -- stats-file= ----------------------------------------------------------

# How statsfile opens a target it has looked at (to read it).
STATS_FILE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@pytest.mark.parametrize("swapped", [False, pytest.param(True, marks=(
    pytest.mark.skipif(not SUPPORTED, reason="x86-64 Linux only")))])
def test_stats_file_that_is_a_fifo(tmp_path, libdir, swapped):
    """A FIFO with a writer and no data at stats-file=, there from the
    start or put there (by a rename) between the look at the regular file
    and its opening: one FAIL line in words, not a TypeError."""
    target = tmp_path / "stats.json"
    disk = random_file(tmp_path / "disk.raw", 1 << 20)
    command = [sys.executable, "-m", "vddkpy", "check", "libdir=%s" % libdir,
               "file=%s" % disk, "stats-file=%s" % target]
    if swapped:
        target.write_text("{}")
    with fifo_at(target, STATS_FILE_OPEN, at_open=swapped) as held:
        result = subprocess.run(
            held.prefix + command, pass_fds=held.fds, cwd=ROOT,
            capture_output=True, text=True, env=standin_env(tmp_path),
            timeout=120)
    assert held.acted == swapped
    assert_clean(result)
    assert result.returncode == 1
    assert [line for line in lines(result) if line.startswith("FAIL")] == [
        "FAIL parameters: stats-file: %s: is not a regular file; fix: "
        "correct them: the plugin refuses them the same way" % target]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare")
def test_stats_file_on_a_read_only_filesystem(tmp_path, libdir):
    """The parameters step names the read-only filesystem, not a
    permission."""
    directory = tmp_path / "readonly"
    directory.mkdir()
    disk = random_file(tmp_path / "disk.raw", 1 << 20)
    script = ('mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && '
              'shift && exec "$@"')
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, "sh", str(directory),
         sys.executable, "-m", "vddkpy", "check", "libdir=%s" % libdir,
         "file=%s" % disk, "stats-file=%s/stats.json" % directory],
        cwd=ROOT, capture_output=True, text=True, env=standin_env(tmp_path),
        timeout=120)
    assert_clean(result)
    assert result.returncode == 1
    assert step(result, "parameters") == (
        "FAIL parameters: stats-file: %s/stats.json: cannot create files in "
        "%s: it is on a read-only filesystem; fix: correct them: the plugin "
        "refuses them the same way" % (directory, directory))


# VDDK's text for every error (GetErrorText) with an ESC and a backslash
# (stand-in config: one backslash), and how a line shows it: once escaped.
HOSTILE_ERROR_TEXT = 'error_text "red \x1b[31m a\\\\b"\n'
ERROR_TEXT_SHOWN = "red \\x1b[31m a\\\\b"


def test_vddk_error_text_escaped_once(tmp_path, libdir):
    """Open fails: file= with an ESC and a backslash and VDDK's own error
    text with both show each as one escape in the disk line (not an
    escaped escape), as the parameters line shows file=."""
    disk = "%s/no\x1bsuch\\disk.raw" % tmp_path
    result = run_check(tmp_path, ["libdir=%s" % libdir, "file=%s" % disk],
                       config=HOSTILE_ERROR_TEXT)
    assert_clean(result)
    assert result.returncode == 1
    shown = "%s/no\\x1bsuch\\\\disk.raw" % tmp_path
    assert step(result, "parameters") == "ok   parameters: local disk %s" \
        % shown
    assert step(result, "disk") == "FAIL disk: VixDiskLib_Open: %s: %s" % (
        shown, ERROR_TEXT_SHOWN)
    assert "\x1b" not in result.stdout


@pytest.mark.parametrize("key, value, name, said", [
    ("vm", "moref=Fedora", "vm", "vm=moref=Fedora"),
    ("password", "Xyzzy-42", "login", "VixDiskLib_ConnectEx")])
def test_vddk_error_text_escaped_once_at_connect(tmp_path, remote, key,
                                                 value, name, said):
    """ConnectEx fails (no such VM, a wrong password): VDDK's error text
    shows each escape once in the vm or login line."""
    args, config, _, _, _ = remote()
    result = run_check(tmp_path, without(args, key) + ["%s=%s" % (key, value)],
                       config + HOSTILE_ERROR_TEXT)
    assert_clean(result)
    assert result.returncode == 1
    line = step(result, name)
    assert line.startswith("FAIL %s: %s: %s; fix: " % (
        name, said, ERROR_TEXT_SHOWN)), line


def test_vddk_log_text_escaped_once(tmp_path):
    """InitEx fails: VDDK's error text and its log message (quoting a path
    with an ESC) show each escape once in the init line."""
    from bed import install_standin
    libdir = install_standin(tmp_path / "vd\x1bdk", companion=True)
    (libdir / "libfakevddk-companion.so").write_bytes(b"not a library")
    result = run_check(tmp_path, ["libdir=%s" % libdir, "file=/dev/null"],
                       config=HOSTILE_ERROR_TEXT)
    assert_clean(result)
    assert result.returncode == 1
    assert step(result, "init") == (
        "FAIL init: VixDiskLib_InitEx: %s; VDDK said: %s/vd\\x1bdk/"
        "libfakevddk-companion.so: file too short; fix: see VDDK's message; "
        "config= names VDDK's configuration file"
        % (ERROR_TEXT_SHOWN, tmp_path))
    assert "\x1b" not in result.stdout


def _python_plugin_needs(soname):
    config = subprocess.run(["nbdkit", "--dump-config"], capture_output=True,
                            text=True).stdout
    plugindir = config.split("plugindir=", 1)[1].splitlines()[0]
    needed = subprocess.run(["ldd", plugindir + "/nbdkit-python-plugin.so"],
                            capture_output=True, text=True).stdout
    return soname + " =>" in needed


@pytest.mark.skipif(not _python_plugin_needs("libexpat.so.1"),
                    reason="nbdkit's libpython does not link libexpat here")
def test_vddk_own_expat_would_break_nbdkits_python(tmp_path, libdir):
    """A libexpat.so.1 next to libvixDiskLib (VDDK's own) would replace
    the system's for nbdkit's libpython after the re-exec: the check
    says so in one line instead of dying with nbdkit."""
    shutil.copy(BUILD / "libfakevddk-companion.so", libdir / "libexpat.so.1")
    result = run_check(tmp_path, ["libdir=%s" % libdir, "file=/dev/null"])
    assert_clean(result)
    assert result.returncode == 1, result.stdout + result.stderr
    line = step(result, "reexec")
    assert line.startswith(
        "FAIL reexec: with %s first in LD_LIBRARY_PATH (as the plugin "
        "re-executes nbdkit), VDDK's libexpat.so.1 replaces the system's for "
        "nbdkit's Python, which then fails: " % libdir), line
    assert line.endswith("; fix: move libexpat.so.1 out of %s: the system's "
                         "copy serves VDDK as well" % libdir), line
    assert lines(result)[-1] == line
