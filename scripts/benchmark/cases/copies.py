"""Copies on a network transport: ``nbdcopy`` of the whole data disk from
the stand-in's emulated ESXi host (nbdssl; each request completes 1 ms
after submission, overlapping), one nbdkit per copy, start-up included."""

from ..hyperfine import run_hyperfine
from ..results import Case, Goal
from ..servers import (THREADS, disk_args, esxi_config, plugin_args,
                       server_env, socket_of)

KINDS = ["vddkpy", "c-vddk"]
REQUEST_SIZES = (("256k", 256 * 1024), ("2m", 2 * 1024 * 1024))


def command(ctx, kind, request_size):
    copy = 'nbdcopy --request-size=%d "$uri" null:' % request_size
    return (["nbdkit", "-U", str(socket_of(ctx)), "-t", str(THREADS)]
            + plugin_args(kind, ctx)
            + disk_args(ctx.data, remote=True) + ["--run", copy])


def measure(request_size):
    def one(ctx, case, kind, state, first):
        out = ctx.workdir / ("hyperfine-%s-%s.json" % (case.name, kind))
        env = server_env(ctx.workdir, config=esxi_config(ctx.data))
        return run_hyperfine(command(ctx, kind, request_size), out, env=env,
                             runs=ctx.hyperfine_runs,
                             warmup=ctx.hyperfine_warmup if first else 0,
                             socket=socket_of(ctx))
    return one


def define(ctx):
    return [Case("copy-esxi-%s" % label,
                 "nbdkit … --run 'nbdcopy --request-size=%d $uri null:' of "
                 "the %s data disk on the emulated ESXi host (1 ms per "
                 "request)" % (size, ctx.human(ctx.data_size)),
                 "s", KINDS, measure(size), goal=Goal("c-vddk", 1.05),
                 whole_command=True)
            for label, size in REQUEST_SIZES]
