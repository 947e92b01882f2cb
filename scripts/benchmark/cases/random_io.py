"""4 KiB random reads at iodepth 64 through fio, one long-running server
per kind for the whole case; this case holds the run's baseline."""

import contextlib

from ..fio import run_fio
from ..results import Case, Goal
from ..rounds import log
from ..servers import BenchError, Server

KINDS = ["vddkpy", "c-vddk", "py-empty", "file"]
WARMUP_SECONDS = 1


@contextlib.contextmanager
def servers(ctx, case):
    started = {}
    try:
        for kind in [k for k in case.kinds if k in ctx.kinds]:
            try:
                started[kind] = Server(ctx, kind, ctx.data).start()
            except BenchError as e:
                log("ERROR: %s" % e)
                case.errors[kind], ctx.failed = str(e), True
        yield started
    finally:
        for server in started.values():
            server.stop()


def measure(ctx, case, kind, state, first):
    server = state[kind]
    if first:
        run_fio(server, ctx.workdir, WARMUP_SECONDS)
    return run_fio(server, ctx.workdir, ctx.fio_seconds)


def define(ctx):
    return [Case("fio-randread-4k",
                 "fio --ioengine=nbd --rw=randread --bs=4k --iodepth=64, %g s "
                 "per run, on the %s data disk (local file); server CPU per "
                 "request from /proc/PID/stat" % (ctx.fio_seconds,
                                                   ctx.human(ctx.data_size)),
                 "IOPS", KINDS, measure, higher_is_better=True,
                 goal=Goal("c-vddk", 0.8), session=servers)]
