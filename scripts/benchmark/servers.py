"""The servers compared, as nbdkit command lines, and long-running ones.

  vddkpy    nbdkit python plugin/plugin.py libdir=STANDIN ...
  c-vddk    nbdkit $VDDK_C_PLUGIN_DIR/nbdkit-vddk-plugin.so libdir=STANDIN ...
  py-empty  nbdkit python EMPTY.py ...   (nbdkit's python plugin itself)
  file      nbdkit file ...              (the baseline)

Both vddk servers load the same VDDK stand-in; only the plugin differs.
"""

import compileall
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "plugin" / "plugin.py"
EMPTY_PLUGIN = Path(__file__).resolve().parent / "empty_plugin.py"
STANDIN_DIR = ROOT / "tests" / "bed" / "standin"
STANDIN_LIB = STANDIN_DIR / "build" / "libvixDiskLib.so"

KINDS = ("vddkpy", "c-vddk", "py-empty", "file")
VDDK_KINDS = ("vddkpy", "c-vddk")
ROLES = {
    "vddkpy": "this plugin",
    "c-vddk": "upstream's C vddk plugin",
    "py-empty": "nbdkit's python plugin running a script that does nothing",
    "file": "the baseline: nbdkit's file plugin",
}
THREADS = 16
START_TIMEOUT = 60
# The stand-in's emulated ESXi host: a network transport (nbdssl), where
# VDDK's asynchronous requests overlap; each completes 1 ms after it was
# submitted.
ESXI_ARGS = ["server=esxi.bench", "user=root", "password=bench",
             "vm=moref=1", "thumbprint=00:11"]


class BenchError(Exception):
    pass


def esxi_config(disk):
    return ("async_delay_us 1000\nserver esxi.bench\n  thumbprint 00:11\n"
            "  user root bench\n  vm moref=1\n    datastore bench %s\n"
            % Path(disk).parent)


def plugin_args(kind, ctx):
    if kind == "vddkpy":
        return ["python", str(PLUGIN), "libdir=%s" % ctx.standin]
    if kind == "c-vddk":
        return [str(ctx.c_plugin), "libdir=%s" % ctx.standin]
    if kind == "py-empty":
        return ["python", str(EMPTY_PLUGIN)]
    if kind == "file":
        return ["file"]
    raise ValueError(kind)


def disk_args(disk, remote=False):
    if remote:
        return ESXI_ARGS + ["file=[bench] %s" % Path(disk).name]
    return ["file=%s" % disk]


def socket_of(ctx):
    """The Unix socket of the timed commands' nbdkit (one at a time)."""
    return ctx.workdir / "run.sock"


def server_env(directory, config=None, calllog=None):
    """The environment of a server: the stand-in's configuration and call
    log in ``directory``, nothing inherited that would change them."""
    env = dict(os.environ)
    for var in ("LD_LIBRARY_PATH", "FAKEVDDK_CONFIG", "FAKEVDDK_LOG",
                "FAKEVDDK_VERSION"):
        env.pop(var, None)
    if config is not None:
        path = Path(directory) / "fakevddk.conf"
        path.write_text(config)
        env["FAKEVDDK_CONFIG"] = str(path)
    if calllog is not None:
        env["FAKEVDDK_LOG"] = str(calllog)
    return env


class Server:
    """A foreground nbdkit (-f) on a Unix socket, so that the pid we start
    is the serving process (the python plugin's re-exec keeps it)."""

    def __init__(self, ctx, kind, disk, readonly=False, config=None,
                 calllog=False, remote=False):
        self.kind = kind
        self.dir = Path(tempfile.mkdtemp(prefix="srv-%s-" % kind,
                                         dir=ctx.workdir))
        self.socket = self.dir / "nbd.sock"
        self.pidfile = self.dir / "nbdkit.pid"
        self.stderr_path = self.dir / "nbdkit.stderr"
        self.log_path = self.dir / "calls.jsonl" if calllog else None
        self.env = server_env(self.dir, config, self.log_path)
        self.command = (["nbdkit", "-f", "-t", str(THREADS), "-U",
                         str(self.socket), "-P", str(self.pidfile)]
                        + (["-r"] if readonly else [])
                        + plugin_args(kind, ctx) + disk_args(disk, remote))
        self.proc = self.pid = None

    @property
    def uri(self):
        return "nbd+unix:///?socket=%s" % self.socket

    def stderr_text(self):
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def failure(self, what):
        return BenchError("%s: %s\ncommand: %s\n--- nbdkit stderr ---\n%s"
                          % (self.kind, what, " ".join(self.command),
                             self.stderr_text()))

    def start(self):
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.command, env=self.env,
                                         stdin=subprocess.DEVNULL,
                                         stdout=err, stderr=err)
        deadline = time.monotonic() + START_TIMEOUT
        while not (self.pidfile.exists() and self.pidfile.read_text()):
            if self.proc.poll() is not None:
                raise self.failure("nbdkit exited with status %d before it "
                                   "was ready" % self.proc.returncode)
            if time.monotonic() > deadline:
                self.stop()
                raise self.failure("no pidfile within %d s" % START_TIMEOUT)
            time.sleep(0.01)
        self.pid = self.proc.pid
        return self

    def check_alive(self):
        if self.proc.poll() is not None:
            raise self.failure("nbdkit died (status %d)"
                               % self.proc.returncode)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def reset_calls(self):
        if self.log_path is not None and self.log_path.exists():
            os.truncate(self.log_path, 0)       # the stand-in appends

    def count_calls(self, fn):
        if self.log_path is None or not self.log_path.exists():
            return 0
        count = 0
        for line in self.log_path.read_text().splitlines():
            try:
                count += json.loads(line).get("fn") == fn
            except ValueError:
                pass                            # a line being written
        return count


def byte_compile():
    """The package byte-compiled, as scripts/setup.sh leaves it: a module
    edited since would otherwise be compiled again at every server start
    the bench times (where PYTHONDONTWRITEBYTECODE is set, or the checkout
    is not writable), tens of milliseconds a run."""
    if not compileall.compile_dir(str(ROOT / "vddkpy"), quiet=1):
        raise BenchError("byte-compiling %s failed" % (ROOT / "vddkpy"))


def install_standin(workdir):
    """make -C tests/bed/standin, then lay it out as a VDDK libdir."""
    p = subprocess.run(["make", "-s", "-C", str(STANDIN_DIR)],
                       capture_output=True, text=True)
    if p.returncode != 0 or not STANDIN_LIB.is_file():
        raise BenchError("building the VDDK stand-in failed:\n%s%s"
                         % (p.stdout, p.stderr))
    libdir = Path(workdir) / "vddk"
    libdir.mkdir()
    shutil.copy(STANDIN_LIB, libdir / "libvixDiskLib.so.8")
    return libdir
