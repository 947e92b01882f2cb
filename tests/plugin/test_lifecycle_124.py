"""VDDK's start and stop on every server, whichever callbacks it calls.

nbdkit 1.24 (Debian 11, Ubuntu 22.04) never calls after_fork, cleanup or
block_size; later servers do.  Each test runs the plugin as the server has
it ("server's callbacks") and through a script without those three
callbacks ("nbdkit 1.24's callbacks"): nbdkit's python plugin calls only
the callbacks a script defines, so on a newer server that is the callback
set 1.24 offers (on 1.24 both are the same).  A script's first atexit
handler, which runs last when Python is finalised, records which threads
the process still has then.
"""

import os
import signal
import subprocess
import time

import nbd
import pytest

from bed import (ROOT, TIMEOUT, assert_no_traceback, assert_server_survived,
                 fresh_socket, random_file, read_calls, standin_env)

MiB = 1024 * 1024
NBDKIT_124_LACKS = ("after_fork", "cleanup", "block_size")
CALLBACKS = ["server's callbacks", "nbdkit 1.24's callbacks"]

SCRIPT = '''\
import atexit, io, os, sys
sys.path.insert(0, {root!r})


def _threads_at_finalisation():
    """pid and thread names, one line, when Python is finalised."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            with io.open("/proc/self/task/%s/comm" % task) as comm:
                names.append(comm.read().strip())
        except OSError:             # (a thread that has just ended)
            pass
    with io.open({report!r}, "a") as report:
        report.write("%d %s\\n" % (os.getpid(), ",".join(sorted(names))))


atexit.register(_threads_at_finalisation)    # the first: it runs last

from vddkpy.callbacks import *  # noqa: E402,F401,F403

for _name in {lacks!r}:
    del globals()[_name]
'''


class Server:
    """nbdkit serving the plugin through a script of ``callbacks``, in
    ``mode``: "-f" (no fork), "forking" (nbdkit forks into the
    background) or "--run COMMAND" (the server is a forked child)."""

    def __init__(self, tmp_path, libdir, callbacks, args, mode="-f",
                 readonly=False, config=None, run=None, options=()):
        self.tmp = tmp_path
        self.report = tmp_path / "finalisation.txt"
        self.socket = tmp_path / "nbd.sock"
        self.pidfile = tmp_path / "nbdkit.pid"
        self.log_path = tmp_path / "calls.jsonl"
        self.stderr_path = tmp_path / "nbdkit.stderr"
        for path in (self.report, self.socket, self.pidfile, self.log_path):
            if path.exists():
                path.unlink()
        script = tmp_path / "plugin.py"
        lacks = NBDKIT_124_LACKS if callbacks != CALLBACKS[0] else ()
        script.write_text(SCRIPT.format(root=str(ROOT),
                                        report=str(self.report),
                                        lacks=lacks))
        command = ["nbdkit", "-v"] + list(options)
        if mode == "-f":
            command.append("-f")
        if run is None:
            command += ["-U", str(self.socket), "-P", str(self.pidfile)]
        else:
            command += ["-U", fresh_socket(tmp_path), "--run", run]
        if readonly:
            command.append("-r")
        command += ["python", str(script), "libdir=%s" % libdir] + list(args)
        self.command = command
        self.env = standin_env(tmp_path, config)
        self.proc = None

    @property
    def uri(self):
        return "nbd+unix:///?socket=%s" % self.socket

    def start(self):
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.command, env=self.env,
                                         stdout=subprocess.DEVNULL,
                                         stderr=err,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + TIMEOUT
        while not self.pidfile.exists():
            if self.proc.poll() not in (None, 0):
                raise AssertionError("nbdkit exited %d:\n%s"
                                     % (self.proc.returncode, self.stderr))
            assert time.monotonic() < deadline, "no pid file:\n" + self.stderr
            time.sleep(0.02)
        return self

    def run(self):
        """--run: the whole life of the server (in tmp_path); its exit
        status."""
        with open(self.stderr_path, "wb") as err:
            return subprocess.run(self.command, env=self.env, stderr=err,
                                  cwd=str(self.tmp), timeout=TIMEOUT,
                                  stdin=subprocess.DEVNULL).returncode

    def stop(self):
        """SIGTERM, then wait until the serving process is gone."""
        pid = int(self.pidfile.read_text())
        os.kill(pid, signal.SIGTERM)
        if self.proc.poll() is None:        # -f: the serving process
            self.proc.wait(TIMEOUT)
            assert_server_survived(self.stderr, self.proc.returncode)
        wait_until_gone(pid)
        assert_server_survived(self.stderr)

    def kill(self):
        """After a failed test: no server left behind."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            os.kill(int(self.pidfile.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass

    @property
    def stderr(self):
        return self.stderr_path.read_text(errors="replace")

    def calls(self, fn=None):
        return read_calls(self.log_path, fn)


@pytest.fixture
def make_server(tmp_path, libdir):
    """Factory: make_server(callbacks, args, **kw) -> a Server (not
    started); any left running at the end is killed."""
    made = []

    def make(callbacks, args, **kw):
        made.append(Server(tmp_path, libdir, callbacks, args, **kw))
        return made[-1]

    yield make
    for each in made:
        each.kill()


def wait_until_gone(pid):
    deadline = time.monotonic() + TIMEOUT
    while os.path.exists("/proc/%d" % pid):
        stat = open("/proc/%d/stat" % pid).read()
        if stat.rpartition(")")[2].split()[0] == "Z":   # exited, unreaped
            return
        assert time.monotonic() < deadline, "process %d did not exit" % pid
        time.sleep(0.02)


def assert_vddk_started_once_and_quiet_at_exit(server):
    """InitEx once and Exit once, both in the serving process, Exit last;
    when that process finalised Python, no stand-in thread was left."""
    (init,) = server.calls("InitEx")
    (exit_call,) = server.calls("Exit")
    assert init["result"] == 0
    serving_pid = init["pid"]
    wait_until_gone(serving_pid)
    assert exit_call["pid"] == serving_pid
    assert server.calls()[-1]["fn"] == "Exit"
    assert {c["pid"] for c in server.calls()} == {serving_pid}
    (line,) = server.report.read_text().splitlines()
    pid, names = line.split(" ", 1)
    assert int(pid) == serving_pid
    assert "fakevddk-async" not in names.split(","), line
    assert_no_traceback(server.stderr)


def sparse_disk(path):
    """4 MiB: data in [0, 1 MiB) and [3 MiB, 3.5 MiB), holes elsewhere."""
    data = random_file(path.with_suffix(".data"), 1536 * 1024, seed=7)
    content = data.read_bytes()
    with open(path, "wb") as f:
        f.write(content[:MiB])
        f.seek(3 * MiB)
        f.write(content[MiB:])
        f.truncate(4 * MiB)
    return path


def nbdinfo_map(uri):
    out = subprocess.run(["nbdinfo", "--map", uri], capture_output=True,
                         text=True, check=True).stdout
    return [tuple(int(field) for field in line.split()[:3])
            for line in out.splitlines() if line]    # (1.6 ends with one)


SPARSE_MAP = [(0, MiB, 0), (MiB, 2 * MiB, 3), (3 * MiB, MiB // 2, 0),
              (3 * MiB + MiB // 2, MiB // 2, 3)]


@pytest.mark.parametrize("callbacks", CALLBACKS)
@pytest.mark.parametrize("mode", ["-f", "forking"])
def test_copy_out_map_write_in_and_readonly(tmp_path, make_server,
                                            callbacks, mode):
    """Copy out, map and write in through a writable server, then copy out
    and refused writes through a -r one: bytes exact, the map exact."""
    disk = sparse_disk(tmp_path / "disk.raw")
    original = disk.read_bytes()
    server = make_server(callbacks, ["file=%s" % disk],
                    mode=mode).start()
    out = tmp_path / "out.raw"
    subprocess.run(["nbdcopy", server.uri, str(out)], check=True,
                   timeout=TIMEOUT)
    assert out.read_bytes() == original
    assert nbdinfo_map(server.uri) == SPARSE_MAP
    source = random_file(tmp_path / "source.raw", 4 * MiB, seed=8)
    subprocess.run(["nbdcopy", str(source), server.uri], check=True,
                   timeout=TIMEOUT)
    server.stop()
    assert disk.read_bytes() == source.read_bytes()
    assert_vddk_started_once_and_quiet_at_exit(server)

    server = make_server(callbacks, ["file=%s" % disk],
                    mode=mode, readonly=True).start()
    out.unlink()
    subprocess.run(["nbdcopy", server.uri, str(out)], check=True,
                   timeout=TIMEOUT)
    assert out.read_bytes() == source.read_bytes()
    h = nbd.NBD()
    h.connect_uri(server.uri)
    assert h.is_read_only()
    with pytest.raises(nbd.Error) as refused:
        h.pwrite(b"x" * 512, 0)
    assert refused.value.errno in ("EPERM", "EROFS")
    h.shutdown()
    server.stop()
    assert disk.read_bytes() == source.read_bytes()
    assert server.calls("Write") == [] and server.calls("WriteAsync") == []
    assert_vddk_started_once_and_quiet_at_exit(server)


@pytest.mark.parametrize("callbacks", CALLBACKS)
def test_concurrent_first_opens_start_vddk_once(tmp_path, make_server,
                                                callbacks):
    """Several clients connecting at once to a fresh server: one InitEx,
    in the serving process, before any of their opens; each client reads
    the disk exactly.  (InitEx takes 300 ms, so the opens overlap it.)"""
    disk = random_file(tmp_path / "disk.raw", 2 * MiB, seed=3)
    server = make_server(callbacks, ["file=%s" % disk],
                    config="latency InitEx 300000\n").start()
    outs = [tmp_path / ("out%d.raw" % i) for i in range(4)]
    clients = [subprocess.Popen(["nbdcopy", server.uri, str(out)])
               for out in outs]
    assert [c.wait(TIMEOUT) for c in clients] == [0] * len(clients)
    for out in outs:
        assert out.read_bytes() == disk.read_bytes()
    server.stop()
    calls = server.calls()
    (init,) = server.calls("InitEx")
    opens = [i for i, c in enumerate(calls) if c["fn"] == "Open"]
    assert len(opens) >= len(clients)
    assert calls.index(init) < min(opens)
    assert_vddk_started_once_and_quiet_at_exit(server)


@pytest.mark.parametrize("callbacks", CALLBACKS)
@pytest.mark.parametrize("mode", ["-f", "forking"])
def test_captive_server_exits_with_vddk_quiet(tmp_path, make_server,
                                             callbacks, mode):
    """nbdkit --run (the server a forked child, with and without -f): the
    copy exact, then VDDK stopped before Python is finalised."""
    disk = random_file(tmp_path / "disk.raw", 2 * MiB, seed=4)
    server = make_server(callbacks, ["file=%s" % disk],
                    mode=mode, run='nbdcopy "$uri" out.raw')
    status = server.run()
    assert status == 0, server.stderr
    assert_server_survived(server.stderr, status)
    assert (tmp_path / "out.raw").read_bytes() == disk.read_bytes()
    assert_vddk_started_once_and_quiet_at_exit(server)


@pytest.mark.parametrize("callbacks", CALLBACKS)
def test_stats_reported_once_at_exit(tmp_path, make_server, callbacks):
    """-D vddk.stats=1: the table once, when the server exits, with or
    without a cleanup callback."""
    disk = random_file(tmp_path / "disk.raw", MiB, seed=5)
    server = make_server(callbacks, ["file=%s" % disk],
                    options=["-D", "vddk.stats=1"]).start()
    subprocess.run(["nbdcopy", server.uri, str(tmp_path / "out.raw")],
                   check=True, timeout=TIMEOUT)
    server.stop()
    assert server.stderr.count("VDDK function stats (-D vddk.stats=1):") == 1
    assert any(line.split(": ")[-1].split()[:1] == ["Read"]
               for line in server.stderr.splitlines()), server.stderr
    assert_vddk_started_once_and_quiet_at_exit(server)
