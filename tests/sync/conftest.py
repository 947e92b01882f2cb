"""Fixtures of the sync suite: the bed's VM with its disks locked while it
runs (as ESXi does), and ``vddkpy sync`` run against it as a user would,
the plugin's nbdkit children reading through the stand-in."""

import signal
import subprocess
import sys
import time

import pytest

from bed import ROOT, read_calls, standin_env

TIMEOUT = 300


class SyncRunner:
    """``vddkpy sync`` (python3 -m vddkpy.sync) against one bed, with
    ``params`` (default: the bed's VM and password); ``cookies``: session
    cookies the stand-in accepts."""

    def __init__(self, bed, libdir, directory, params=None, cookies=()):
        self.bed = bed
        self.libdir = libdir
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = directory / "calls.jsonl"
        self.params = params
        self.cookies = cookies

    def env(self, extra="", config=None, more=None):
        """The stand-in's config: the bed's with ``extra`` directives, or
        ``config``; ``more`` variables."""
        env = standin_env(self.dir, config or self.bed.standin_config(
            extra, cookies=self.cookies))
        env["PYTHONPATH"] = str(ROOT)
        env.update(more or {})
        return env

    def argv(self, to, *options, params=None):
        if params is None:
            params = self.params or self.bed.vm_args()
        return [sys.executable, "-m", "vddkpy.sync",
                "libdir=%s" % self.libdir] + list(params) + \
            ["--to", str(to)] + list(options)

    def run(self, to, *options, extra="", config=None, params=None,
            env=None):
        """Run to the end: CompletedProcess (text)."""
        return subprocess.run(self.argv(to, *options, params=params),
                              env=self.env(extra, config, env),
                              capture_output=True,
                              text=True, timeout=TIMEOUT, cwd=str(self.dir))

    def ok(self, to, *options, **kw):
        result = self.run(to, *options, **kw)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def start(self, to, *options, extra="", env=None):
        return subprocess.Popen(self.argv(to, *options),
                                env=self.env(extra, more=env),
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                cwd=str(self.dir),
                                preexec_fn=_interruptible_as_at_a_terminal)

    def start_copying(self, to, read_seconds, env=None):
        """A round started with reads of ``read_seconds`` each, returned
        once its first read did (the calls counted from its start)."""
        self.reset_calls()
        proc = self.start(to, extra=self.slow_reads(read_seconds), env=env)
        self.wait_for_call(proc)
        return proc

    @staticmethod
    def slow_reads(seconds):
        """Stand-in directives: each read takes ``seconds``."""
        return "latency ReadAsync {0}\nlatency Read {0}\n".format(
            int(seconds * 1000000))

    def calls(self, fn=None):
        return read_calls(self.log, fn)

    def wait_for_call(self, proc, fns=("Read", "ReadAsync")):
        """The first call to one of ``fns`` that returned, while ``proc``
        (a started round) still runs."""
        deadline = time.monotonic() + 120
        while True:
            found = [c for c in self.calls() if c["fn"] in fns]
            if found:
                return found[0]
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)

    def reset_calls(self):
        if self.log.exists():
            self.log.unlink()


def _interruptible_as_at_a_terminal():
    # A suite started in the background of a non-interactive shell (as CI
    # may be) inherits SIGINT ignored; Python then never raises
    # KeyboardInterrupt: give the command a terminal job's disposition.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def syncer(libdir, tmp_path):
    """Factory: syncer(bed, name="sync", params=None, cookies=()) -> a
    SyncRunner for it."""
    def make(bed, name="sync", **kw):
        return SyncRunner(bed, libdir, tmp_path / name, **kw)
    return make


@pytest.fixture
def started(vcsim, syncer, tmp_path):
    """Factory: started(cbt=True, to="copy", **bed options) -> (the bed,
    its SyncRunner, an empty directory ``to`` for the copy): the bed's VM
    running with its disks locked, change tracking on unless cbt=False."""
    def make(cbt=True, to="copy", **kw):
        bed = vcsim(lock_running_disks=True, **kw)
        if cbt:
            bed.enable_cbt()
        directory = tmp_path / to
        directory.mkdir()
        return bed, syncer(bed), directory
    return make
