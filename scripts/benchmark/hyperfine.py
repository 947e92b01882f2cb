"""Whole commands timed by hyperfine (--export-json, --warmup, --runs)."""

import json
import shlex
import subprocess
import time

from .machine import CpuWatch
from .servers import BenchError

RUN_TIMEOUT = 1800


def hyperfine_command(argv, output, runs, warmup, socket=None):
    """--shell=none: no shell start-up in the figures; hyperfine splits
    the command line as a POSIX shell would (shlex quoting).  ``socket``:
    the Unix socket the command's nbdkit serves on (-U), removed before
    each run, untimed (nbdkit leaves it behind; "-U -" would leave a
    directory in /tmp at each start that executes nbdkit again, as every
    vddk plugin does)."""
    prepare = [] if socket is None else ["--prepare=rm -f %s" % socket]
    return (["hyperfine", "--shell=none", "--style=none",
             "--runs=%d" % runs, "--warmup=%d" % warmup] + prepare
            + ["--export-json=%s" % output, shlex.join(argv)])


def parse_hyperfine(text):
    """(wall seconds of every timed run of hyperfine's only command, mean
    CPU seconds of a run: the command and what it waited for)."""
    result = json.loads(text)["results"][0]
    if any(result.get("exit_codes") or []):
        raise BenchError("%s exited %s" % (result["command"],
                                           result["exit_codes"]))
    return list(result["times"]), result["user"] + result["system"]


def run_hyperfine(argv, output, env=None, runs=1, warmup=0, server_pid=None,
                  socket=None):
    """(median wall seconds of the runs, figures incl. the times and the
    CPU time of other work during them); ``server_pid``: a server the
    command talks to, whose CPU time is ours, not other work; ``socket``:
    see hyperfine_command."""
    started = time.monotonic()
    with CpuWatch(server_pid) as cpu:
        p = subprocess.run(hyperfine_command(argv, output, runs, warmup,
                                             socket),
                           env=env, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True,
                           timeout=RUN_TIMEOUT)
    if p.returncode != 0:
        raise BenchError("hyperfine exited %d on %s:\n%s" % (
            p.returncode, shlex.join(argv), p.stderr[-3000:]))
    times, cpu_seconds = parse_hyperfine(output.read_text())
    # What hyperfine could not see: the runs' processes that outlived
    # their parent (vddkpy's vSphere process), reaped by CpuWatch.
    cpu_seconds += cpu.adopted / (runs + warmup)
    elapsed = time.monotonic() - started
    value = sorted(times)[len(times) // 2]
    return value, {"times": times, "cpu_seconds": cpu_seconds,
                   "others_seconds": cpu.others, "window_seconds": elapsed}
