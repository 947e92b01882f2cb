"""Benchmark vddkpy against upstream's C vddk plugin, an empty Python
plugin and nbdkit's file plugin, with fio and hyperfine.

Cases (--only takes names or globs): start-run-true start-dump-plugin
copy-esxi-256k copy-esxi-2m fio-randread-4k map-ro map-rw map-ro-4clients
map-rw-4clients.  The C plugin takes part when VDDK_C_PLUGIN_DIR names a
directory holding an upstream-built nbdkit-vddk-plugin.so.
"""

import argparse
import datetime
import fnmatch
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import disks, report, rounds, servers, tools, verdict
from .cases import all_cases

# nbdkit's file plugin serves about 100 k random 4 KiB reads/s to fio
# (iodepth 64) on the 2-core reference VM; below 90 % of that the machine
# is busy with other work, which slows the servers unevenly.
BASELINE_IOPS = 90000
OTHERS_LIMIT = 0.15


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="bench.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=None,
                    help="rounds (default 5; 1 with --quick)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round, 64 MiB data, 4 GiB map disk, "
                         "1 s fio runs")
    ap.add_argument("--only", default="", help="comma-separated cases/globs")
    ap.add_argument("--servers", default="",
                    help="comma-separated subset of " + ",".join(servers.KINDS))
    ap.add_argument("--baseline-iops", type=float, default=BASELINE_IOPS,
                    help="known fio rate of the file plugin; below it no "
                         "ranking (default %(default)d)")
    ap.add_argument("--max-other-work", type=float, default=OTHERS_LIMIT,
                    help="share of a CPU other processes may use in any "
                         "case for a ranking (default %(default)s)")
    ap.add_argument("--data-size", type=disks.parse_size, default=None,
                    help="random-data disk (default 1G)")
    ap.add_argument("--map-size", type=disks.parse_size, default=None,
                    help="99 %% sparse disk (default 64G)")
    ap.add_argument("--fio-seconds", type=float, default=None,
                    help="length of one fio run (default 5; 1 with --quick)")
    ap.add_argument("--runs", type=int, default=1,
                    help="hyperfine runs per server and round (default 1)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="hyperfine warm-up runs in the first round "
                         "(default 1)")
    ap.add_argument("--workdir", default="/var/tmp",
                    help="parent of the work directory (default /var/tmp)")
    ap.add_argument("--json", default="bench-results.json",
                    help="results file (default %(default)s)")
    ap.add_argument("--png", default=None, help="chart (needs matplotlib)")
    return ap, ap.parse_args(argv)


class Context:
    human = staticmethod(disks.human)

    def __init__(self, args, c_plugin):
        self.failed = False
        def given(value, quick, full):
            return value if value is not None else (
                quick if args.quick else full)
        self.repeat = given(args.repeat, 1, 5)
        self.data_size = given(args.data_size, 64 * disks.MiB, disks.GiB)
        self.map_size = given(args.map_size, 4 * disks.GiB, 64 * disks.GiB)
        self.fio_seconds = given(args.fio_seconds, 1, 5)
        self.hyperfine_runs, self.hyperfine_warmup = args.runs, args.warmup
        self.c_plugin = c_plugin
        wanted = [k.strip() for k in args.servers.split(",") if k.strip()]
        self.kinds = [k for k in servers.KINDS if (k in wanted or not wanted)
                      and (k != "c-vddk" or c_plugin)]
        self.unknown = [k for k in wanted if k not in servers.KINDS]


def find_c_plugin():
    directory = os.environ.get("VDDK_C_PLUGIN_DIR")
    if not directory:
        return None
    path = Path(directory) / "nbdkit-vddk-plugin.so"
    if not path.is_file():
        rounds.log("warning: VDDK_C_PLUGIN_DIR=%s has no nbdkit-vddk-plugin"
                   ".so; c-vddk skipped" % directory)
        return None
    return path.resolve()


def selected(cases, only):
    patterns = [p.strip() for p in only.split(",") if p.strip()]
    return [c for c in cases
            if not patterns or any(fnmatch.fnmatch(c.name, p)
                                   for p in patterns)]


def make_disks(ctx, cases, meta):
    ctx.data = ctx.workdir / "data.raw"
    ctx.sparse = ctx.workdir / "sparse.raw"
    if any(not c.name.startswith("map-") for c in cases):
        rounds.log("making %s of random data" % disks.human(ctx.data_size))
        disks.make_random_file(ctx.data, ctx.data_size)
    if any(c.name.startswith("map-") for c in cases):
        meta["map_data_chunks"] = disks.make_sparse_file(ctx.sparse,
                                                         ctx.map_size)


def versions():
    out = {}
    for key, cmd in (("nbdkit", ["nbdkit", "--version"]),
                     ("libnbd", ["nbdinfo", "--version"]),
                     ("fio", ["fio", "--version"]),
                     ("hyperfine", ["hyperfine", "--version"]),
                     ("git", ["git", "-C", str(servers.ROOT), "describe",
                              "--always", "--dirty"])):
        p = subprocess.run(cmd, capture_output=True, text=True)
        out[key] = p.stdout.strip().splitlines()[0] if p.stdout else None
    return out


def run_cases(ctx, cases):
    for case in cases:
        try:
            rounds.take_turns(ctx, case)
        except servers.BenchError as e:
            rounds.log("ERROR in %s: %s" % (case.name, e))
            ctx.failed = True


def exit_on_signal(signum, frame):
    """SIGTERM and SIGHUP unwind the stack, so that the servers are stopped
    and the work directory removed on the way out."""
    raise SystemExit(128 + signum)


def check_args(ap, args, ctx):
    if ctx.unknown:
        ap.error("unknown server(s): %s" % ", ".join(ctx.unknown))
    if ctx.repeat < 1 or ctx.hyperfine_runs < 1 or ctx.hyperfine_warmup < 0 \
            or ctx.fio_seconds < 0.1:
        ap.error("--repeat and --runs must be at least 1, --warmup 0, "
                 "--fio-seconds 0.1")
    if min(ctx.data_size, ctx.map_size) <= 0 or \
            (ctx.data_size | ctx.map_size) % (64 * disks.KiB):
        ap.error("--data-size and --map-size must be multiples of 64K")
    cases = selected(all_cases(ctx), args.only)
    if not cases:
        ap.error("--only %s selects no case" % args.only)
    return cases


def run_meta(ctx):
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "host": platform.node(), "cpus": os.cpu_count(),
            "kernel": platform.release(),
            "python": platform.python_version(), "repeat": ctx.repeat,
            "data_size": ctx.data_size, "map_size": ctx.map_size,
            "fio_seconds": ctx.fio_seconds, "servers": ctx.kinds,
            "c_plugin": str(ctx.c_plugin) if ctx.c_plugin else None,
            "versions": versions()}


def main(argv=None):
    ap, args = parse_args(argv)
    missing = tools.missing_tools()
    if missing:
        print(missing, file=sys.stderr)
        return 1
    ctx = Context(args, find_c_plugin())
    cases = check_args(ap, args, ctx)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, exit_on_signal)
    ctx.workdir = Path(tempfile.mkdtemp(prefix="vddkpy-bench-",
                                        dir=args.workdir))
    meta, started = run_meta(ctx), time.monotonic()
    try:
        servers.byte_compile()
        ctx.standin = servers.install_standin(ctx.workdir)
        make_disks(ctx, cases, meta)
        run_cases(ctx, cases)
    except (servers.BenchError, KeyboardInterrupt) as e:
        rounds.log("ERROR: %s" % (e or "interrupted"))
        ctx.failed = True
    finally:
        shutil.rmtree(ctx.workdir, ignore_errors=True)
    meta["elapsed_seconds"] = round(time.monotonic() - started, 1)
    no_ranking = verdict.why_no_ranking(cases, args.baseline_iops,
                                        args.max_other_work)
    report.write_json(args.json, cases, meta, no_ranking)
    print(report.markdown(cases, ctx.kinds, meta, no_ranking), end="")
    if args.png:
        rounds.log("chart: %s" % args.png if report.write_png(args.png, cases)
                   else "no chart: --png needs matplotlib: apt install "
                   "python3-matplotlib")
    return 1 if ctx.failed else 0


if __name__ == "__main__":
    sys.exit(main())
