"""``nbdinfo --map`` of the 99 % sparse disk, a fresh server per turn,
with the QueryAllocatedBlocks calls the stand-in saw per run.  Each run is
a new connection, and neither vddk plugin keeps a map from one connection
to the next, so the runs of a turn are alike."""

import time

from ..hyperfine import run_hyperfine
from ..results import Case
from ..servers import VDDK_KINDS, Server

KINDS = ["vddkpy", "c-vddk", "file"]
# A run takes 40-130 ms: a turn times this many, so that it lasts long
# enough for other work's share of the CPUs to be measured at all.
RUNS_PER_TURN = 10
# sh's plain `wait` would hide a failed client.
CONCURRENT = ('pids=; for i in 1 2 3 4; do nbdinfo --map "$0" >/dev/null & '
              'pids="$pids $!"; done; for p in $pids; do wait $p || exit 1; '
              'done')


def measure(readonly, clients):
    def one(ctx, case, kind, state, first):
        with Server(ctx, kind, ctx.sparse, readonly=readonly,
                    calllog=kind in VDDK_KINDS) as server:
            argv = (["nbdinfo", "--map", server.uri] if clients == 1
                    else ["sh", "-c", CONCURRENT, server.uri])
            out = ctx.workdir / ("hyperfine-%s-%s.json" % (case.name, kind))
            runs = max(ctx.hyperfine_runs, RUNS_PER_TURN)
            value, extra = run_hyperfine(argv, out, runs=runs,
                                         server_pid=server.pid)
            server.check_alive()
            if kind in VDDK_KINDS:
                time.sleep(0.05)            # the last log lines land
                calls = server.count_calls("QueryAllocatedBlocks")
                extra["QueryAllocatedBlocks"] = calls / runs
        return value, extra
    return one


def define(ctx):
    disk = "the %s disk that is 99 %% holes" % ctx.human(ctx.map_size)
    return [Case("map-%s%s" % (mode, "-4clients" if clients > 1 else ""),
                 "%s nbdinfo --map of %s, %s" % (
                     "4 concurrent" if clients > 1 else "one", disk,
                     "nbdkit -r" if mode == "ro" else "read-write"),
                 "s", KINDS, measure(mode == "ro", clients))
            for clients in (1, 4) for mode in ("ro", "rw")]
