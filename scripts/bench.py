#!/usr/bin/python3
"""Benchmark vddkpy against nbdkit's file plugin (and the C vddk plugin).

Every server is started here: ``nbdkit -f -t 16 -U SOCK -P PIDFILE ...`` on
a Unix socket in the work directory.  The servers are

  vddkpy   nbdkit python plugin/plugin.py libdir=STANDIN file=DISK
  c-vddk   nbdkit $VDDK_C_PLUGIN_DIR/nbdkit-vddk-plugin.so libdir=STANDIN
           file=DISK                                   (only when that exists)
  py-empty nbdkit python EMPTY.py file=DISK            (random reads only)
  file     nbdkit file file=DISK                       (baseline)

where STANDIN is a temporary directory holding the project's VDDK stand-in
(tests/standin/build/libvixDiskLib.so) as libvixDiskLib.so.8.  Both vddk
servers therefore talk to the same library; only the plugin differs.  In
the -lat1ms cases both vddk servers reach the same file as
file=[bench] NAME on the stand-in's emulated ESXi host (nbdssl transport),
as a migration does, so that VDDK's asynchronous requests overlap.
EMPTY.py is a plugin written into the work directory whose pread does
nothing: the Python ceiling, what nbdkit's python plugin itself costs.

Each case is warmed up once, then run --repeat times (default 5), the
servers of a case taking turns within each repetition; the table shows the
median and [min-max], and ratios of medians: "vddkpy/file" and
"vddkpy/c-vddk" are the cost of vddkpy over the other server measured in
the same run (time or memory; for IOPS the inverse), so > 1 means vddkpy
is slower or bigger.  "client busy" is the share of one CPU the client
used during a run: near 100 % the client, not the server, sets the pace.

A benchmark ranks servers only if its baseline reaches its known rate in
the same harness: the random-read case prints a ranking (vddkpy against
c-vddk and py-empty) only when file reached --baseline-iops and other
processes used at most --max-other-work of a CPU meanwhile ("other work":
the machine's busy time from /proc/stat minus the server's and the
client's), and says why not otherwise.

Run with /usr/bin/python3 (needs Debian's python3-libnbd, nbdkit, nbdcopy,
nbdinfo).  --quick (repeat 1, small sizes) is a smoke test.  Results go to
stdout (Markdown), --json (default bench-results.json) and, if matplotlib
imports, --png.
"""

import argparse
import datetime
import fnmatch
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "plugin" / "plugin.py"
STANDIN_DIR = ROOT / "tests" / "standin"
STANDIN_LIB = STANDIN_DIR / "build" / "libvixDiskLib.so"

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

START_TIMEOUT = 60
RUN_TIMEOUT = 1800
THREADS = 16
# The latency cases serve the disk from the stand-in's emulated ESXi host
# (a network transport, where VDDK's asynchronous requests overlap, unlike
# the file transport of a local disk); every ReadAsync/WriteAsync there
# completes 1 ms after submission.
ESXI_ARGS = ["server=esxi.bench", "user=root", "password=bench",
             "vm=moref=1", "thumbprint=00:11"]


def latency_config(disk):
    return ("async_delay_us 1000\n"
            "server esxi.bench\n"
            "  thumbprint 00:11\n"
            "  user root bench\n"
            "  vm moref=1\n"
            "    datastore bench %s\n" % Path(disk).parent)
# nbdkit's file plugin serves about 100 k random 4 KiB reads/s (64 in
# flight) to a lean client on the 2-core reference VM.  Below 90 % of that,
# the machine is busy with other work, which slows the servers unevenly:
# one run with file at 81 k had vddkpy level with the C plugin, which in
# runs with file at 95-104 k serves 1.45x vddkpy's rate.
BASELINE_IOPS = 90000
SERVER_NAMES = ("vddkpy", "c-vddk", "py-empty", "file")
SERVER_ROLES = {
    "vddkpy": "this plugin",
    "c-vddk": "upstream's C vddk plugin",
    "py-empty": "the Python ceiling: nbdkit's python plugin running a "
                "script whose pread does nothing",
    "file": "the baseline: nbdkit's file plugin",
}
VDDK_KINDS = ("vddkpy", "c-vddk")
# Other work may use at most this share of one CPU during a ranked case.
OTHERS_LIMIT = 0.15
# A server within this fraction of the baseline's median is at the
# harness's floor (runs vary by 10-15 % on the 2-core reference VM).
AT_BASELINE = 0.10
# Ratio columns: (server, compared with).
RATIOS = (("vddkpy", "file"), ("vddkpy", "c-vddk"), ("vddkpy", "py-empty"),
          ("c-vddk", "file"))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------

_running = []           # every started Server, stopped in finally/atexit


class Server:
    """One nbdkit process in the foreground (-f), so the Popen pid, the
    pidfile's pid and the serving process are the same (the python
    plugin's re-exec keeps the pid)."""

    counter = 0

    def __init__(self, kind, disk, ctx, readonly=False, config=None,
                 calllog=False, remote=False):
        Server.counter += 1
        self.kind = kind
        self.ctx = ctx
        self.dir = Path(tempfile.mkdtemp(prefix="srv%03d-%s-" % (
            Server.counter, kind), dir=ctx.workdir))
        self.socket = self.dir / "nbd.sock"
        self.pidfile = self.dir / "nbdkit.pid"
        self.stderr_path = self.dir / "nbdkit.stderr"
        self.log_path = self.dir / "calls.jsonl" if calllog else None
        self.env = dict(os.environ)
        for var in ("LD_LIBRARY_PATH", "FAKEVDDK_CONFIG", "FAKEVDDK_LOG",
                    "FAKEVDDK_VERSION"):
            self.env.pop(var, None)
        if config is not None:
            conf = self.dir / "fakevddk.conf"
            conf.write_text(config)
            self.env["FAKEVDDK_CONFIG"] = str(conf)
        if self.log_path is not None:
            self.env["FAKEVDDK_LOG"] = str(self.log_path)
        cmd = ["nbdkit", "-f", "-t", str(THREADS), "-U", str(self.socket),
               "-P", str(self.pidfile)]
        if readonly:
            cmd.append("-r")
        if kind == "vddkpy":
            cmd += ["python", str(PLUGIN), "libdir=%s" % ctx.standin]
        elif kind == "c-vddk":
            cmd += [str(ctx.c_plugin), "libdir=%s" % ctx.standin]
        elif kind == "py-empty":
            cmd += ["python", str(ctx.empty_plugin)]
        elif kind == "file":
            cmd.append("file")
        else:
            raise ValueError(kind)
        if remote:
            cmd += ESXI_ARGS + ["file=[bench] %s" % Path(disk).name]
        else:
            cmd.append("file=%s" % disk)
        self.command = cmd
        self.proc = None
        self.pid = None

    @property
    def uri(self):
        return "nbd+unix:///?socket=%s" % self.socket

    def stderr_text(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self):
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.command, env=self.env, stdin=subprocess.DEVNULL,
                stdout=err, stderr=err)
        _running.append(self)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.pidfile.exists():
                text = self.pidfile.read_text().strip()
                if text:
                    self.pid = int(text)
                    break
            if self.proc.poll() is not None:
                raise BenchError(
                    "%s: nbdkit exited with status %d before it was ready\n"
                    "command: %s\n--- nbdkit stderr ---\n%s"
                    % (self.kind, self.proc.returncode,
                       " ".join(self.command), self.stderr_text()))
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(
                    "%s: nbdkit did not write its pidfile within %d s\n"
                    "command: %s\n--- nbdkit stderr ---\n%s"
                    % (self.kind, START_TIMEOUT, " ".join(self.command),
                       self.stderr_text()))
            time.sleep(0.01)
        if self.pid != self.proc.pid:
            log("warning: %s: pidfile says %d, Popen pid %d; using the "
                "pidfile's" % (self.kind, self.pid, self.proc.pid))
        return self

    def check_alive(self):
        if self.proc.poll() is not None:
            raise BenchError("%s: nbdkit died (status %d)\n--- nbdkit "
                             "stderr ---\n%s" % (self.kind,
                                                 self.proc.returncode,
                                                 self.stderr_text()))

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                log("warning: %s: nbdkit ignored SIGTERM, killing" % self.kind)
                self.proc.kill()
                self.proc.wait()
        if self in _running:
            _running.remove(self)

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise BenchError("no VmRSS for pid %d" % self.pid)

    # -- the stand-in's call log ----------------------------------------

    def reset_calls(self):
        if self.log_path is not None and self.log_path.exists():
            os.truncate(self.log_path, 0)       # the writer uses O_APPEND

    def calls(self):
        if self.log_path is None or not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def count_calls(self, fn):
        return sum(1 for c in self.calls() if c.get("fn") == fn)


def stop_all():
    for server in list(_running):
        try:
            server.stop()
        except Exception as e:          # keep stopping the others
            log("warning: stopping %s: %s" % (server.kind, e))


# --------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------

def client_cpu_seconds():
    """CPU time of the child processes that have ended so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd, timeout=RUN_TIMEOUT, server=None):
    """Run a client command; see run_parallel."""
    return run_parallel([cmd], timeout=timeout, server=server)


def run_parallel(cmds, timeout=RUN_TIMEOUT, server=None):
    """Start all commands together.  Returns (wall seconds until the last
    one ends, {"client_cpu": CPU seconds the commands used}); only client
    processes end meanwhile, so the children's CPU time grows by theirs."""
    cpu0, t0 = client_cpu_seconds(), time.perf_counter()
    procs = [subprocess.Popen(c, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) for c in cmds]
    errors = []
    for c, p in zip(cmds, procs):
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        if p.returncode != 0:
            errors.append("%s exited %d:\n%s" % (
                " ".join(c), p.returncode, err.decode(errors="replace")))
    elapsed = time.perf_counter() - t0
    if errors:
        msg = "\n".join(errors)
        if server is not None:
            msg += "\n--- nbdkit (%s) stderr ---\n%s" % (
                server.kind, server.stderr_text()[-4000:])
        raise BenchError(msg)
    return elapsed, {"client_cpu": client_cpu_seconds() - cpu0}


CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds():
    """CPU time all CPUs have spent busy (stolen by the hypervisor
    included) since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        user, nice, system, idle, iowait, irq, softirq, steal = (
            int(x) for x in f.readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICK


def process_cpu_seconds(pid):
    """CPU time (user + system, all threads) of process ``pid``."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


class CpuWatch:
    """What the machine and one server process spent between start() and
    stop(), so that a run can tell how much other work shared the CPUs."""

    def __init__(self, pid):
        self.pid = pid

    def start(self):
        self.machine = -machine_busy_seconds()
        self.server = -process_cpu_seconds(self.pid)

    def stop(self):
        self.machine += machine_busy_seconds()
        self.server += process_cpu_seconds(self.pid)


def random_io(socket, count, size, disk_size, depth, seed, writes=False,
              watch=None):
    """``count`` requests of ``size`` bytes at random aligned offsets, at
    most ``depth`` in flight, through libnbd's Python binding.  With
    ``writes`` every other request is a write.  Returns (seconds, client
    CPU seconds).

    The client is kept lean, so that it is not what limits a fast server
    (nbdkit's file plugin serves about 100 k reads/s on 2 cores; a client
    that allocates a buffer per request tops out near 40 k): one buffer
    per in-flight slot, allocated before the clock starts and reused, and
    a completion callback per slot that frees the slot and retires the
    command itself (no per-request allocation, no cookie bookkeeping).
    ``watch`` (a CpuWatch) is started and stopped with the clock."""
    import nbd
    rng = random.Random(seed)
    blocks = disk_size // size
    offsets = [rng.randrange(blocks) * size for _ in range(count)]
    buffers = [nbd.Buffer(size) for _ in range(depth)]
    payload = nbd.Buffer.from_bytearray(os.urandom(size))
    free = list(range(depth))
    finished = []                       # errno of each completed request

    def completion_for(slot):
        def completed(error):
            finished.append(error.value)
            free.append(slot)
            return 1                    # retire the command
        return completed

    completions = [completion_for(slot) for slot in range(depth)]
    h = nbd.NBD()
    try:
        h.connect_unix(str(socket))
        issued = 0
        if watch is not None:
            watch.start()
        cpu0, t0 = time.thread_time(), time.perf_counter()
        while len(finished) < count:
            while free and issued < count:
                slot = free.pop()
                if writes and issued % 2:
                    h.aio_pwrite(payload, offsets[issued],
                                 completion=completions[slot])
                else:
                    h.aio_pread(buffers[slot], offsets[issued],
                                completion=completions[slot])
                issued += 1
            h.poll(-1)
        elapsed = time.perf_counter() - t0
        cpu = time.thread_time() - cpu0
        if watch is not None:
            watch.stop()
        h.shutdown()
    finally:
        del h                           # closes the connection
    failed = [e for e in finished if e]
    if failed:
        raise BenchError("%d of %d requests failed (first errno %d)"
                         % (len(failed), count, failed[0]))
    return elapsed, cpu


class RssSampler(threading.Thread):
    """Samples a server's VmRSS every ``interval`` seconds."""

    def __init__(self, server, interval=0.05):
        super().__init__(daemon=True)
        self.server = server
        self.interval = interval
        self.samples = []               # (seconds since start, KiB)
        self.stopping = threading.Event()

    def run(self):
        t0 = time.perf_counter()
        while not self.stopping.is_set():
            try:
                self.samples.append((time.perf_counter() - t0,
                                     self.server.rss_kib()))
            except (OSError, BenchError):
                break
            self.stopping.wait(self.interval)

    def stop(self):
        self.stopping.set()
        self.join()
        return self.samples


def quarters(samples):
    """Mean RSS (KiB) of the first and last quarter of the run, by time."""
    if len(samples) < 4:
        return None, None
    end = samples[-1][0]
    first = [kib for t, kib in samples if t <= end / 4] or [samples[0][1]]
    last = [kib for t, kib in samples if t >= end * 3 / 4] or [samples[-1][1]]
    return statistics.mean(first), statistics.mean(last)


# --------------------------------------------------------------------------
# Data files
# --------------------------------------------------------------------------

def make_random_file(path, size, chunk=8 * MiB):
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n
        f.flush()
        # Write back now, so that background writeback of a fresh GiB of
        # dirty pages does not disturb the first cases (the pages stay in
        # the page cache).
        os.fsync(f.fileno())


def make_sparse_file(path, size, chunk=64 * KiB, fraction=0.01, seed=1):
    """``size`` bytes, ``fraction`` of the ``chunk``-sized chunks holding
    random data at random chunk-aligned offsets, the rest holes."""
    nchunks = size // chunk
    picked = sorted(random.Random(seed).sample(range(nchunks),
                                               max(1, round(nchunks * fraction))))
    with open(path, "wb") as f:
        f.truncate(size)
        for i in picked:
            os.pwrite(f.fileno(), os.urandom(chunk), i * chunk)
        os.fsync(f.fileno())
    return len(picked)


def reset_target(path, size):
    """Make the write target a fresh, fully sparse file of ``size``."""
    os.truncate(path, 0)
    os.truncate(path, size)


# --------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------

class Case:
    def __init__(self, name, title, unit, servers, higher_is_better=False,
                 ratio=True, baseline_floor=None, others_limit=None):
        self.name = name
        self.baseline_floor = baseline_floor    # file must reach this
        # ... and other work may use at most this share of one CPU
        self.others_limit = OTHERS_LIMIT if others_limit is None \
            else others_limit
        self.title = title
        self.unit = unit
        self.servers = servers          # kinds the case applies to
        self.higher_is_better = higher_is_better
        self.ratio = ratio              # ratios meaningful?
        self.samples = {}               # kind -> [value]
        self.extra = {}                 # kind -> {key: [value per run]}
        self.errors = {}                # kind -> message
        self.notes = []

    def add(self, kind, value, **extra):
        self.samples.setdefault(kind, []).append(value)
        for k, v in extra.items():
            self.extra.setdefault(kind, {}).setdefault(k, []).append(v)

    def stats(self, kind):
        v = self.samples.get(kind)
        if not v:
            return None
        return {"median": statistics.median(v), "min": min(v),
                "max": max(v), "n": len(v)}

    def cost_ratio(self, kind, base):
        """cost(kind) / cost(base) from medians (inverse for IOPS)."""
        if not self.ratio:
            return None
        a, b = self.stats(kind), self.stats(base)
        if not a or not b or not a["median"] or not b["median"]:
            return None
        if self.higher_is_better:
            return b["median"] / a["median"]
        return a["median"] / b["median"]

    def busy(self, kind, key="client_cpu"):
        """Median share of one CPU that ``key`` (client_cpu: the client;
        others_cpu: everything but the client and the server) used during
        a run, None if not measured.  A client near 1 (or, for several
        clients, the CPUs there are) set the pace itself."""
        extra = self.extra.get(kind, {})
        cpu = extra.get(key)
        seconds = extra.get("seconds") or self.samples.get(kind)
        if not cpu or not seconds or len(cpu) != len(seconds):
            return None
        return statistics.median(c / t for c, t in zip(cpu, seconds))

    def to_json(self):
        out = {"title": self.title, "unit": self.unit,
               "higher_is_better": self.higher_is_better,
               "servers": {}, "notes": self.notes}
        for kind in self.servers:
            entry = {}
            if kind in self.samples:
                entry["samples"] = self.samples[kind]
                entry.update(self.stats(kind))
            if kind in self.extra:
                entry["extra"] = self.extra[kind]
            if kind in self.errors:
                entry["error"] = self.errors[kind]
            if entry:
                out["servers"][kind] = entry
        ratios = {}
        for kind, base in RATIOS:
            r = self.cost_ratio(kind, base)
            if r is not None:
                ratios["%s/%s" % (kind, base)] = r
        out["cost_ratios"] = ratios
        for key in ("client_cpu", "others_cpu"):
            shares = {k: self.busy(k, key) for k in self.servers}
            out[key.replace("_cpu", "_busy")] = {
                k: v for k, v in shares.items() if v is not None}
        if self.baseline_floor is not None:
            out["baseline"] = {"floor": self.baseline_floor,
                               "others_limit": self.others_limit,
                               "short_because": self.why_no_ranking()}
        return out

    def why_no_ranking(self):
        """Why this case cannot rank servers (None if it can).  Its
        baseline, nbdkit's file plugin, must reach its known rate in this
        very harness, or the client, not the servers, sets the rates; and
        no other work may share the CPUs, which changes the servers' rates
        unevenly (a Python plugin's threads hand the GIL over between CPUs
        less often when another job takes one: vddkpy serves about 1.25x
        more reads pinned to one CPU than spread over two)."""
        if self.baseline_floor is None:
            return None
        base = self.stats("file")
        if base is None:
            return ("the baseline (nbdkit's file plugin) was not measured, "
                    "so nothing shows that the client can go faster than "
                    "the servers it ranks")
        if base["median"] < self.baseline_floor:
            return ("the baseline, nbdkit's file plugin, reached only %s %s "
                    "(median), short of its known rate (--baseline-iops "
                    "%s): the client or the machine, not the servers, set "
                    "these rates" % (fmt_num(base["median"]), self.unit,
                                     fmt_num(self.baseline_floor)))
        others = [(self.busy(k, "others_cpu"), k) for k in self.samples]
        worst = max((o for o in others if o[0] is not None), default=None)
        if worst is not None and worst[0] > self.others_limit:
            return ("other work used %.0f %% of a CPU during %s's runs "
                    "(median; at most %.0f %% allowed): it changes the "
                    "servers' rates unevenly" % (100 * worst[0], worst[1],
                                                 100 * self.others_limit))
        return None


def fmt_num(x):
    if x is None:
        return "n/a"
    ax = abs(x)
    if ax >= 1000:
        return "%.0f" % x
    if ax >= 100:
        return "%.1f" % x
    if ax >= 10:
        return "%.2f" % x
    return "%.3f" % x


def fmt_cell(case, kind, active):
    if kind not in active:
        return ""
    if kind in case.errors:
        return "ERROR"
    if kind not in case.servers:
        return "n/a"
    s = case.stats(kind)
    if s is None:
        return "-"
    if s["n"] == 1:
        return fmt_num(s["median"])
    return "%s [%s–%s]" % (fmt_num(s["median"]), fmt_num(s["min"]),
                           fmt_num(s["max"]))


def fmt_ratio(r):
    return "n/a" if r is None else "%.2f×" % r


def markdown(cases, active, meta):
    lines = []
    lines.append("Benchmark: median [min–max] of %d run(s); data disk %s, "
                 "map disk %s; nbdkit -t %d. Ratios are the first server's "
                 "cost (time, memory; for IOPS the inverse) over the "
                 "second's, from medians: > 1 = the first is slower/bigger."
                 % (meta["repeat"], human(meta["data_size"]),
                    human(meta["map_size"]), THREADS))
    lines.append("")
    ratios = [(k, b) for k, b in RATIOS if k in active and b in active]
    head = ["case", "unit"] + list(active)
    head += ["%s/%s" % pair for pair in ratios] + ["notes"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join("---" for _ in head) + "|")
    for case in cases:
        row = [case.name, case.unit]
        row += [fmt_cell(case, k, active) for k in active]
        unranked = case.why_no_ranking() is not None
        row += ["no rank" if unranked else fmt_ratio(case.cost_ratio(k, b))
                for k, b in ratios]
        row.append("; ".join(case.notes + floor_note(case, active) +
                             client_note(case, active))
                   .replace("|", "\\|"))
        lines.append("| " + " | ".join(row) + " |")
    lines += ranking(cases, active)
    lines.append("")
    lines.append("Cases:")
    for case in cases:
        lines.append("- `%s`: %s" % (case.name, case.title))
    errors = [(c.name, k, m) for c in cases for k, m in c.errors.items()]
    if errors:
        lines.append("")
        lines.append("Errors:")
        for name, kind, msg in errors:
            first = msg.strip().splitlines()[0] if msg.strip() else msg
            lines.append("- %s / %s: %s" % (name, kind, first))
    return "\n".join(lines)


def floor_note(case, active):
    """Servers that did as well as the baseline (within AT_BASELINE of its
    median, or better): nbdkit's file plugin is the cheapest server there
    is, so the harness (client, kernel, machine), not they, set that
    figure, and the case cannot show what they cost."""
    base = case.stats("file")
    if base is None or case.unit not in ("s", "IOPS"):
        return []
    level = []
    for kind in active:
        ratio = case.cost_ratio(kind, "file") if kind != "file" else None
        if ratio is not None and ratio <= 1 + AT_BASELINE:
            level.append(kind)
    if not level:
        return []
    return ["%s at file's level: the harness's floor, not their cost"
            % ", ".join(level)]


def client_note(case, active):
    """e.g. ['client busy: file 88 %, vddkpy 31 %', 'other work: ...']."""
    notes = []
    for key, label in (("client_cpu", "client busy"),
                       ("others_cpu", "other work")):
        busy = [(k, case.busy(k, key)) for k in active]
        shown = ["%s %.0f %%" % (k, 100 * b) for k, b in busy
                 if b is not None]
        if shown:
            notes.append("%s: %s" % (label, ", ".join(shown)))
    return notes


def ranking(cases, active):
    """The verdict of every case whose baseline is checked: vddkpy's rate
    against each other vddk-like server, or why there is none."""
    lines = []
    for case in cases:
        if case.baseline_floor is None:
            continue
        lines.append("")
        why = case.why_no_ranking()
        if why is not None:
            lines.append("**No ranking from %s**: %s." % (case.name, why))
            continue
        base = case.stats("file")["median"]
        lines.append("**Ranking from %s** (the baseline, nbdkit's file "
                     "plugin, reached %s %s, at least its known rate %s):"
                     % (case.name, fmt_num(base), case.unit,
                        fmt_num(case.baseline_floor)))
        mine = case.stats("vddkpy")
        for other in ("c-vddk", "py-empty"):
            theirs = case.stats(other)
            if other not in active or not mine or not theirs:
                continue
            lines.append("- vddkpy %s %s = %.2f× %s's %s (%s)" % (
                fmt_num(mine["median"]), case.unit,
                mine["median"] / theirs["median"], other,
                fmt_num(theirs["median"]), SERVER_ROLES[other]))
    return lines


def human(n):
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= size and n % size == 0:
            return "%d %s" % (n // size, unit)
    return "%d B" % n


def write_png(path, cases, active):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return False
    names = [c.name for c in cases if c.ratio]
    shown = [c for c in cases if c.ratio]
    if not shown:
        return False
    fig, ax = plt.subplots(figsize=(max(8, len(shown) * 0.9), 5))
    width = 0.8 / max(1, len(active))
    for i, kind in enumerate(active):
        ys = []
        for c in shown:
            base = "file" if c.stats("file") else (
                "c-vddk" if c.stats("c-vddk") else "vddkpy")
            r = c.cost_ratio(kind, base) if kind != base else 1.0
            if kind == "vddkpy" and base == "vddkpy":
                r = 1.0 if c.stats("vddkpy") else None
            ys.append(r if r is not None else 0)
        xs = [j + i * width for j in range(len(shown))]
        ax.bar(xs, ys, width, label=kind)
    ax.set_xticks([j + width * (len(active) - 1) / 2
                   for j in range(len(shown))])
    ax.set_xticklabels(names, rotation=40, ha="right")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_ylabel("cost relative to file (or c-vddk) baseline")
    ax.set_title("vddkpy benchmark (lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------

class Context:
    pass


def call_summary(calls):
    """What a data-path run looked like from the stand-in's side."""
    reads = [c for c in calls if c.get("fn") in ("ReadAsync", "Read")]
    writes = [c for c in calls if c.get("fn") in ("WriteAsync", "Write")]
    io = reads + writes
    out = {"requests": len(io),
           "QueryAllocatedBlocks": sum(1 for c in calls
                                       if c.get("fn") == "QueryAllocatedBlocks"),
           "opens": sum(1 for c in calls if c.get("fn") == "Open")}
    if io:
        sizes = sorted({c["count"] * 512 for c in io})
        out["request_sizes"] = sizes
        inflight = [c["inflight"] for c in io if "inflight" in c]
        if inflight:
            out["max_inflight"] = max(inflight)
            out["mean_inflight"] = round(statistics.mean(inflight), 2)
    return out


def probe_note(summary):
    """e.g. '4096×256K, ≤16 (avg 3.6) in flight, 2 QAB'."""
    if not summary:
        return ""
    sizes = summary.get("request_sizes") or []
    text = "%d×%s" % (summary["requests"], "/".join(
        "%dK" % (s // KiB) for s in sizes[:3]) or "?")
    if "max_inflight" in summary:
        text += ", ≤%d (avg %.1f) in flight" % (summary["max_inflight"],
                                                summary["mean_inflight"])
    return text + ", %d QAB" % summary["QueryAllocatedBlocks"]


def selected(name, only):
    return not only or any(fnmatch.fnmatch(name, pat) or name == pat
                           for pat in only)


def guarded(case, kind, fn, ctx):
    """Run fn(); on failure record the error for (case, kind)."""
    try:
        return fn()
    except (BenchError, subprocess.TimeoutExpired, OSError) as e:
        msg = str(e)
        case.errors[kind] = msg
        log("ERROR in %s / %s:\n%s" % (case.name, kind, msg))
        ctx.failed = True
        return None
    except Exception as e:              # nbd.Error and the like
        msg = "%s: %s" % (type(e).__name__, e)
        case.errors[kind] = msg
        log("ERROR in %s / %s:\n%s" % (case.name, kind, msg))
        ctx.failed = True
        return None


def rounds(ctx, case, servers, run_one, warmup=True, probe=None):
    """Warm up each server, then ``repeat`` rounds, servers taking turns.
    ``run_one(server)`` returns a value or (value, extra-dict)."""
    live = dict(servers)
    if warmup:
        for kind, server in list(live.items()):
            log("  %s / %s: warm-up" % (case.name, kind))
            if guarded(case, kind, lambda: run_one(server), ctx) is None:
                live.pop(kind)
    for r in range(ctx.repeat):
        for kind, server in list(live.items()):
            got = guarded(case, kind, lambda: run_one(server), ctx)
            if got is None:
                live.pop(kind)
                continue
            value, extra = got if isinstance(got, tuple) else (got, {})
            case.add(kind, value, **extra)
            log("  %s / %s: run %d/%d: %s %s" % (case.name, kind, r + 1,
                                                 ctx.repeat, fmt_num(value),
                                                 case.unit))


def make_server(ctx, kind, disk, **kw):
    return Server(kind, disk, ctx, **kw)


def start_group(ctx, case_list, kinds, disk, **kw):
    """Start one server per kind; failures are recorded on every case."""
    servers = {}
    for kind in kinds:
        s = make_server(ctx, kind, disk, **kw)
        try:
            s.start()
        except BenchError as e:
            log("ERROR: %s" % e)
            ctx.failed = True
            for c in case_list:
                if kind in c.servers:
                    c.errors[kind] = str(e)
            continue
        servers[kind] = s
    return servers


def stop_group(servers):
    for s in servers.values():
        s.stop()


def probe_copy(ctx, cases, kinds, disk, config, commands, remote=False):
    """One logged run of each copy command on each vddk server: what the
    stand-in saw (request sizes, requests in flight, QueryAllocatedBlocks).
    Also warms the page cache.  commands: {case: fn(uri) -> argv}."""
    result = {}
    vddk = [k for k in kinds if k in VDDK_KINDS]
    for kind in vddk:
        s = make_server(ctx, kind, disk, config=config, calllog=True,
                        remote=remote)
        try:
            s.start()
        except BenchError as e:
            log("warning: probe server %s: %s" % (kind, e))
            continue
        try:
            for case in cases:
                if kind not in case.servers or case.name not in commands:
                    continue
                s.reset_calls()
                try:
                    run(commands[case.name](s.uri), server=s)
                except BenchError as e:
                    log("warning: probe %s / %s: %s" % (case.name, kind, e))
                    continue
                time.sleep(0.1)     # let the last log lines land
                summary = call_summary(s.calls())
                result.setdefault(case.name, {})[kind] = summary
        finally:
            s.stop()
    for case in cases:
        for kind, summary in result.get(case.name, {}).items():
            case.extra.setdefault(kind, {})["probe"] = summary
            case.notes.append("%s %s" % (kind, probe_note(summary)))
    return result


def bench_copies(ctx, all_cases):
    """Sequential reads (with and without latency) and the write."""
    data, target = ctx.data, ctx.target
    read_cmds = {
        "seq-read-null": lambda uri: ["nbdcopy", uri, "null:"],
        "seq-read-devnull": lambda uri: ["nbdcopy", uri, "/dev/null"],
        "seq-read-null-lat1ms": lambda uri: ["nbdcopy", uri, "null:"],
        "seq-read-devnull-lat1ms": lambda uri: ["nbdcopy", uri, "/dev/null"],
    }

    # -- no latency: reads, random reads on the data disk ---------------
    plain = [c for c in all_cases if c.name in (
        "seq-read-null", "seq-read-devnull", "rand-read-4k")]
    if plain:
        kinds = [k for k in ctx.kinds if any(k in c.servers for c in plain)]
        log("== reads on %s (%s)" % (human(ctx.data_size), ", ".join(kinds)))
        probe_copy(ctx, plain, kinds, data, None, read_cmds)
        servers = start_group(ctx, plain, kinds, data)
        try:
            for case in plain:
                group = {k: s for k, s in servers.items() if k in case.servers}
                if case.name == "rand-read-4k":
                    rounds(ctx, case, group, lambda s: rand_read(ctx, s))
                else:
                    cmd = read_cmds[case.name]
                    rounds(ctx, case, group,
                           lambda s, cmd=cmd: run(cmd(s.uri), server=s))
        finally:
            stop_group(servers)

    # -- 1 ms completion delay in the stand-in -------------------------
    lat = [c for c in all_cases if c.name.endswith("-lat1ms")]
    if lat:
        kinds = [k for k in ctx.kinds if k in VDDK_KINDS]
        log("== reads with 1 ms latency (%s)" % ", ".join(kinds))
        config = latency_config(data)
        probe_copy(ctx, lat, kinds, data, config, read_cmds, remote=True)
        servers = start_group(ctx, lat, kinds, data, config=config,
                              remote=True)
        try:
            for case in lat:
                group = {k: s for k, s in servers.items() if k in case.servers}
                cmd = read_cmds[case.name]
                rounds(ctx, case, group,
                       lambda s, cmd=cmd: run(cmd(s.uri), server=s))
        finally:
            stop_group(servers)

    # -- sequential write into a fresh sparse target --------------------
    wr = [c for c in all_cases if c.name == "seq-write"]
    if wr:
        case = wr[0]
        kinds = [k for k in ctx.kinds if k in case.servers]
        log("== write %s (%s)" % (human(ctx.data_size), ", ".join(kinds)))
        with open(target, "wb") as f:
            f.truncate(ctx.data_size)

        def write_once(s):
            reset_target(target, ctx.data_size)
            return run(["nbdcopy", str(data), s.uri], server=s)

        probe_copy(ctx, wr, kinds, target, None, {
            "seq-write": lambda uri: (reset_target(target, ctx.data_size),
                                      ["nbdcopy", str(data), uri])[1]})
        servers = start_group(ctx, wr, kinds, target)
        try:
            rounds(ctx, case, servers, write_once)
        finally:
            stop_group(servers)


def rand_read(ctx, server):
    watch = CpuWatch(server.pid)
    t, cpu = random_io(server.socket, ctx.rand_count, 4 * KiB,
                       ctx.data_size, 64, seed=7, watch=watch)
    server.check_alive()
    others = max(0.0, watch.machine - watch.server - cpu)
    return ctx.rand_count / t, {"seconds": t, "client_cpu": cpu,
                                "server_cpu": watch.server,
                                "others_cpu": others}


def bench_maps(ctx, all_cases):
    cases = [c for c in all_cases if c.name.startswith("map-")]
    if not cases:
        return
    log("== allocation maps of %s sparse disk" % human(ctx.map_size))

    def one_map(case, kind):
        readonly = "-ro" in case.name
        clients = 4 if case.name.endswith("-4clients") else 1
        s = make_server(ctx, kind, ctx.sparse, readonly=readonly,
                        calllog=kind in VDDK_KINDS)

        def go():
            s.start()
            try:
                cmd = ["nbdinfo", "--map", s.uri]
                if case.name.endswith("-again"):
                    run(cmd, server=s)          # the server's first client
                    s.reset_calls()
                t, extra = run_parallel([cmd] * clients, server=s)
                s.check_alive()
                if s.log_path is not None:
                    time.sleep(0.05)
                    extra["QueryAllocatedBlocks"] = s.count_calls(
                        "QueryAllocatedBlocks")
                return t, extra
            finally:
                s.stop()
        return go

    for case in cases:
        group = {k: k for k in ctx.kinds if k in case.servers}
        # A fresh server for every run: nothing read before it (vddkpy
        # shares a read-only map between the connections open when it was
        # read).
        rounds(ctx, case, group,
               lambda kind, case=case: one_map(case, kind)())
        counts = []
        for kind in group:
            q = case.extra.get(kind, {}).get("QueryAllocatedBlocks")
            if q:
                counts.append("%s %s" % (kind, "/".join(
                    str(x) for x in sorted(set(q)))))
        if counts:
            case.notes.append("QAB calls: " + ", ".join(counts))


def bench_rss(ctx, all_cases):
    names = ("rss-idle", "rss-after-copy", "rss-after-small",
             "rss-small-drift")
    cases = {c.name: c for c in all_cases if c.name in names}
    if not cases:
        return
    log("== RSS (fresh server per run; %d small requests)" % ctx.small_count)
    kinds = [k for k in ctx.kinds
             if any(k in c.servers for c in cases.values())]

    def one(kind):
        s = make_server(ctx, kind, ctx.data)
        s.start()
        try:
            time.sleep(0.5)
            idle = s.rss_kib()
            run(["nbdcopy", s.uri, "null:"], server=s)
            time.sleep(0.5)
            after_copy = s.rss_kib()
            sampler = RssSampler(s)
            sampler.start()
            try:
                t, _ = random_io(s.socket, ctx.small_count, 4 * KiB,
                                 ctx.data_size, 64, seed=11, writes=True)
            finally:
                samples = sampler.stop()
            s.check_alive()
            time.sleep(0.5)
            after_small = s.rss_kib()
            first, last = quarters(samples)
            return {"idle": idle / 1024, "after_copy": after_copy / 1024,
                    "after_small": after_small / 1024,
                    "first_quarter": first / 1024 if first else None,
                    "last_quarter": last / 1024 if last else None,
                    "peak": max(k for _, k in samples) / 1024
                    if samples else None,
                    "samples": len(samples), "small_seconds": t}
        finally:
            s.stop()

    # No warm-up run: every run has its own fresh server, and the data
    # disk is in the page cache already (it was just written or read).
    first_case = next(iter(cases.values()))
    for r in range(ctx.repeat):
        for kind in kinds:
            got = guarded(first_case, kind, lambda: one(kind), ctx)
            if got is None:
                for c in cases.values():
                    c.errors.setdefault(kind, first_case.errors[kind])
                continue
            log("  rss / %s: run %d/%d: idle %.1f, after copy %.1f, after "
                "small %.1f MiB (quarters %.1f -> %.1f)" % (
                    kind, r + 1, ctx.repeat, got["idle"], got["after_copy"],
                    got["after_small"], got["first_quarter"] or 0,
                    got["last_quarter"] or 0))
            if "rss-idle" in cases:
                cases["rss-idle"].add(kind, got["idle"])
            if "rss-after-copy" in cases:
                cases["rss-after-copy"].add(kind, got["after_copy"])
            if "rss-after-small" in cases:
                cases["rss-after-small"].add(
                    kind, got["after_small"], peak=got["peak"],
                    small_seconds=got["small_seconds"],
                    samples=got["samples"])
            if "rss-small-drift" in cases and got["first_quarter"]:
                cases["rss-small-drift"].add(
                    kind, got["last_quarter"] - got["first_quarter"],
                    first_quarter=got["first_quarter"],
                    last_quarter=got["last_quarter"])


def define_cases(ctx):
    vd = [k for k in ctx.kinds if k in VDDK_KINDS]
    # The empty plugin serves no data: it takes part in random reads only.
    everyone = [k for k in ctx.kinds if k != "py-empty"]
    lat = "the disk on the stand-in's emulated ESXi host (nbdssl transport); " \
          "async_delay_us 1000: each ReadAsync completes 1 ms after " \
          "submission, overlapping"
    conns = ("nbdcopy opens 4 connections when the server offers "
             "multi-conn (file does, vddk does not), else 1")
    cases = [
        Case("seq-read-null", "nbdcopy URI null: (%s of random data; "
             "multi-threaded asynchronous copy, 256 KiB requests, up to 64 "
             "in flight per connection; %s)" % (human(ctx.data_size), conns),
             "s", everyone),
        Case("seq-read-devnull", "nbdcopy URI /dev/null (a character device "
             "counts as a pipe: synchronous copy, one connection, one 256 KiB "
             "request at a time, each preceded by a block-status request)",
             "s", everyone),
        Case("seq-read-null-lat1ms", "nbdcopy URI null:, 1 ms latency", "s",
             vd),
        Case("seq-read-devnull-lat1ms", "nbdcopy URI /dev/null, 1 ms latency",
             "s", vd),
        Case("seq-write", "nbdcopy SRC.raw URI into a fresh sparse file of "
             "the same size (%s; nbdcopy flushes at the end, which is an "
             "fdatasync in the file plugin and in the stand-in)" % conns,
             "s", everyone),
        Case("rand-read-4k", "%d random 4 KiB reads, 64 in flight, one "
             "connection, libnbd Python client (aio_pread into one reused "
             "buffer per in-flight slot, completion callbacks, poll); "
             "py-empty is %s; the ranking holds only if file reaches its "
             "known rate" % (ctx.rand_count, SERVER_ROLES["py-empty"]),
             "IOPS", list(ctx.kinds), higher_is_better=True,
             baseline_floor=ctx.baseline_iops,
             others_limit=ctx.max_other_work),
        Case("map-ro", "nbdinfo --map of the %s disk that is 99%% holes "
             "(1%% of 64 KiB chunks hold data), nbdkit -r; a fresh server "
             "per run; QAB = VixDiskLib_QueryAllocatedBlocks calls per run, "
             "from the stand-in's call log (including each connection's "
             "probe call)" % human(ctx.map_size), "s", everyone),
        Case("map-ro-again", "a second nbdinfo --map on the same -r "
             "server, after the first ended (a connection opened after a "
             "map was read gets a fresh one, as upstream's)",
             "s", everyone),
        Case("map-rw", "nbdinfo --map, read-write", "s", everyone),
        Case("map-ro-4clients", "4 concurrent nbdinfo --map, -r", "s",
             everyone),
        Case("map-rw-4clients", "4 concurrent nbdinfo --map, read-write", "s",
             everyone),
        Case("rss-idle", "VmRSS after start, no client yet", "MiB", everyone),
        Case("rss-after-copy", "VmRSS after nbdcopy URI null: of the data "
             "disk", "MiB", everyone),
        Case("rss-after-small", "VmRSS after %d 4 KiB requests (half reads, "
             "half writes, 64 in flight)" % ctx.small_count, "MiB", everyone),
        Case("rss-small-drift", "VmRSS during those requests: mean of last "
             "quarter minus mean of first quarter", "MiB", everyone,
             ratio=False),
    ]
    for c in cases:
        if c.name.endswith("-lat1ms"):
            c.title += " (%s)" % lat
    return [c for c in cases if selected(c.name, ctx.only)]


def parse_size(text):
    text = text.strip().upper()
    mult = 1
    for suffix, m in (("K", KiB), ("M", MiB), ("G", GiB), ("T", 1024 * GiB)):
        if text.endswith(suffix):
            mult = m
            text = text[:-1]
            break
    return int(float(text) * mult)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="cases: seq-read-null seq-read-devnull seq-read-null-lat1ms "
               "seq-read-devnull-lat1ms seq-write rand-read-4k map-ro "
               "map-ro-again map-rw map-ro-4clients map-rw-4clients "
               "rss-idle rss-after-copy rss-after-small rss-small-drift "
               "(--only takes comma-separated names or globs, e.g. "
               "'seq-*,map-ro'; the rss-* cases share one measurement)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="timed runs per case and server (default 5; "
                         "1 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: repeat 1, 64 MiB data disk, 4 GiB map "
                         "disk, 2000 random reads, 5000 small requests")
    ap.add_argument("--only", default="",
                    help="comma-separated case names or globs")
    ap.add_argument("--servers", default="",
                    help="comma-separated subset of %s" % ",".join(
                        SERVER_NAMES))
    ap.add_argument("--baseline-iops", type=float, default=BASELINE_IOPS,
                    help="known rate of nbdkit's file plugin for random "
                         "4 KiB reads on this machine; below it the "
                         "harness cannot rank servers (default %(default)d: "
                         "90 %% of its rate on the 2-core reference VM)")
    ap.add_argument("--max-other-work", type=float, default=OTHERS_LIMIT,
                    help="share of one CPU that other processes may use "
                         "during the random reads for a ranking to be "
                         "printed (default %(default)s)")
    ap.add_argument("--data-size", type=parse_size, default=None,
                    help="size of the random-data disk (default 1G)")
    ap.add_argument("--map-size", type=parse_size, default=None,
                    help="size of the 99%% sparse disk (default 64G)")
    ap.add_argument("--workdir", default=None,
                    help="where data files and sockets go (default: a new "
                         "directory under /var/tmp)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the work directory")
    ap.add_argument("--json", default="bench-results.json",
                    help="JSON results file (default %(default)s)")
    ap.add_argument("--png", default=None,
                    help="bar chart of the ratios (needs matplotlib)")
    args = ap.parse_args(argv)

    ctx = Context()
    ctx.failed = False
    ctx.quick = args.quick
    ctx.repeat = args.repeat or (1 if args.quick else 5)
    if ctx.repeat < 1:
        ap.error("--repeat must be >= 1")
    ctx.data_size = args.data_size or (64 * MiB if args.quick else GiB)
    ctx.map_size = args.map_size or (4 * GiB if args.quick else 64 * GiB)
    for name, size in (("--data-size", ctx.data_size),
                       ("--map-size", ctx.map_size)):
        if size <= 0 or size % (64 * KiB):
            ap.error("%s must be a positive multiple of 64K" % name)
    ctx.rand_count = 2000 if args.quick else 30000
    ctx.baseline_iops = args.baseline_iops
    ctx.max_other_work = args.max_other_work
    ctx.small_count = 5000 if args.quick else 100000
    ctx.only = [p.strip() for p in args.only.split(",") if p.strip()]

    c_dir = os.environ.get("VDDK_C_PLUGIN_DIR")
    ctx.c_plugin = None
    if c_dir:
        p = Path(c_dir) / "nbdkit-vddk-plugin.so"
        if p.is_file():
            ctx.c_plugin = p.resolve()
        else:
            log("warning: VDDK_C_PLUGIN_DIR=%s has no nbdkit-vddk-plugin.so; "
                "c-vddk skipped" % c_dir)
    available = [k for k in SERVER_NAMES
                 if k != "c-vddk" or ctx.c_plugin is not None]
    if args.servers:
        wanted = [k.strip() for k in args.servers.split(",") if k.strip()]
        unknown = [k for k in wanted if k not in SERVER_NAMES]
        if unknown:
            ap.error("unknown server(s): %s (choose from %s)"
                     % (", ".join(unknown), ", ".join(SERVER_NAMES)))
        if "c-vddk" in wanted and ctx.c_plugin is None:
            ap.error("c-vddk needs VDDK_C_PLUGIN_DIR naming a directory "
                     "with nbdkit-vddk-plugin.so")
        ctx.kinds = [k for k in SERVER_NAMES if k in wanted]
    else:
        ctx.kinds = available

    for tool in ("nbdkit", "nbdcopy", "nbdinfo"):
        if shutil.which(tool) is None:
            sys.exit("bench.py: %s not found in PATH" % tool)
    try:
        import nbd
        del nbd
    except ImportError:
        sys.exit("bench.py: the libnbd Python module is missing (Debian "
                 "package python3-libnbd; run with /usr/bin/python3)")

    cases = define_cases(ctx)
    if not cases:
        ap.error("--only %s selects no case" % args.only)

    # SIGTERM/SIGHUP -> exceptions, so the finally below stops the servers.
    def on_signal(signum, frame):
        log("signal %d: stopping the servers" % signum)
        raise SystemExit(128 + signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    if args.workdir:
        workdir = Path(args.workdir).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="vddkpy-bench-",
                                        dir=workdir))
    else:
        workdir = Path(tempfile.mkdtemp(prefix="vddkpy-bench-",
                                        dir="/var/tmp"))
    ctx.workdir = workdir
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "host": platform.node(), "cpus": os.cpu_count(),
        "kernel": platform.release(), "python": sys.version.split()[0],
        "repeat": ctx.repeat, "quick": ctx.quick,
        "data_size": ctx.data_size, "map_size": ctx.map_size,
        "rand_reads": ctx.rand_count, "small_requests": ctx.small_count,
        "threads": THREADS, "servers": ctx.kinds,
        "c_plugin": str(ctx.c_plugin) if ctx.c_plugin else None,
        "workdir": str(workdir),
    }
    log("work directory: %s" % workdir)
    started = time.monotonic()
    try:
        meta["versions"] = versions()
        ctx.standin = ctx.data = ctx.sparse = None
        needs_vddk = any(k in VDDK_KINDS for k in ctx.kinds)
        if needs_vddk:
            ctx.standin = build_standin(workdir)
        ctx.empty_plugin = write_empty_plugin(workdir)

        names = {c.name for c in cases}
        if names & {"seq-read-null", "seq-read-devnull", "seq-read-null-lat1ms",
                    "seq-read-devnull-lat1ms", "seq-write", "rand-read-4k",
                    "rss-idle", "rss-after-copy", "rss-after-small",
                    "rss-small-drift"}:
            ctx.data = workdir / "data.raw"
            log("making %s of random data: %s" % (human(ctx.data_size),
                                                   ctx.data))
            make_random_file(ctx.data, ctx.data_size)
        ctx.target = workdir / "target.raw"
        if any(n.startswith("map-") for n in names):
            ctx.sparse = workdir / "sparse.raw"
            n = make_sparse_file(ctx.sparse, ctx.map_size)
            meta["map_data_chunks"] = n
            log("made %s sparse disk with %d data chunks of 64 KiB: %s"
                % (human(ctx.map_size), n, ctx.sparse))

        bench_copies(ctx, cases)
        bench_maps(ctx, cases)
        bench_rss(ctx, cases)
    except KeyboardInterrupt:
        log("interrupted")
        ctx.failed = True
    except BenchError as e:
        log("ERROR: %s" % e)
        ctx.failed = True
    except Exception:
        import traceback
        traceback.print_exc()
        ctx.failed = True
    finally:
        stop_all()
        meta["elapsed_seconds"] = round(time.monotonic() - started, 1)
        results = {"meta": meta,
                   "cases": {c.name: c.to_json() for c in cases}}
        try:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=2)
                f.write("\n")
        except OSError as e:
            log("warning: cannot write %s: %s" % (args.json, e))
        # The data files go first: printing can fail (a closed pipe).
        if args.keep:
            log("kept %s" % workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        print(markdown(cases, ctx.kinds, meta))
        log("results: %s (%.0f s)" % (args.json, meta["elapsed_seconds"]))
        if args.png:
            if write_png(args.png, cases, ctx.kinds):
                log("chart: %s" % args.png)
    return 1 if ctx.failed else 0


def versions():
    out = {}
    for key, cmd in (("nbdkit", ["nbdkit", "--version"]),
                     ("nbdcopy", ["nbdcopy", "--version"]),
                     ("nbdinfo", ["nbdinfo", "--version"])):
        try:
            out[key] = subprocess.run(cmd, capture_output=True, text=True,
                                      timeout=30).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            out[key] = None
    try:
        out["git"] = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        out["git"] = None
    return out


# The Python ceiling: what nbdkit's python plugin serves when the plugin
# does no work at all.  Same API version and thread model as vddkpy.
EMPTY_PLUGIN = '''"""An nbdkit Python plugin whose pread does nothing."""
import os

import nbdkit

API_VERSION = 2
size = 0


def thread_model():
    return nbdkit.THREAD_MODEL_PARALLEL


def config(key, value):
    global size
    if key != "file":
        raise RuntimeError("unknown parameter " + key)
    size = os.stat(value).st_size


def open(readonly):
    return 1


def get_size(h):
    return size


def pread(h, buf, offset, flags):
    pass
'''


def write_empty_plugin(workdir):
    path = workdir / "empty_plugin.py"
    path.write_text(EMPTY_PLUGIN)
    return path


def build_standin(workdir):
    """make -C tests/standin, then install it as libvixDiskLib.so.8."""
    p = subprocess.run(["make", "-s", "-C", str(STANDIN_DIR)],
                       capture_output=True, text=True)
    if p.returncode != 0 or not STANDIN_LIB.is_file():
        raise BenchError("building the VDDK stand-in failed:\n%s%s"
                         % (p.stdout, p.stderr))
    libdir = workdir / "vddk"
    libdir.mkdir()
    shutil.copy(STANDIN_LIB, libdir / "libvixDiskLib.so.8")
    return libdir


if __name__ == "__main__":
    sys.exit(main())
