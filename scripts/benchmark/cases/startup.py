"""Start-up: a whole ``nbdkit`` process that serves nothing (``--run
true``) and ``--dump-plugin`` (how virt-v2v and others probe a plugin).

A vddk plugin executes nbdkit again once it knows the library's directory
(LD_LIBRARY_PATH, see vddkpy/reexec.py): for a Python plugin that is a
second interpreter start, which the empty plugin never pays.  The case
``start-run-true-no-reexec`` starts with LD_LIBRARY_PATH already holding
the directory, so it shows what is left without the re-exec."""

from ..hyperfine import run_hyperfine
from ..results import Case, Goal
from ..servers import disk_args, plugin_args, server_env, socket_of

KINDS = ["vddkpy", "c-vddk", "py-empty"]
# A start takes 5-40 ms: each turn times this many, so that a turn lasts
# long enough for other work's share of the CPUs to be measured at all.
RUNS_PER_TURN = 20


def command(ctx, kind, what):
    if what == "dump":
        return ["nbdkit"] + plugin_args(kind, ctx) + ["--dump-plugin"]
    return (["nbdkit", "-U", str(socket_of(ctx))] + plugin_args(kind, ctx)
            + disk_args(ctx.data) + ["--run", "true"])


def measure(what, library_path=False):
    def one(ctx, case, kind, state, first):
        out = ctx.workdir / ("hyperfine-%s-%s.json" % (case.name, kind))
        env = server_env(ctx.workdir)
        if library_path:
            env["LD_LIBRARY_PATH"] = str(ctx.standin)
        return run_hyperfine(command(ctx, kind, what), out, env=env,
                             runs=max(ctx.hyperfine_runs, RUNS_PER_TURN),
                             warmup=ctx.hyperfine_warmup if first else 0,
                             socket=None if what == "dump" else socket_of(ctx))
    return one


def define(ctx):
    goal = Goal("py-empty", 2.0)
    return [
        Case("start-run-true", "nbdkit -U - PLUGIN file=DISK --run true: "
             "start, load the plugin, parse its parameters, serve nothing",
             "s", KINDS, measure("run"), goal=goal, whole_command=True),
        Case("start-run-true-no-reexec", "the same with LD_LIBRARY_PATH "
             "already holding the library's directory: no re-exec", "s",
             KINDS, measure("run", library_path=True), goal=goal,
             whole_command=True),
        Case("start-dump-plugin", "nbdkit PLUGIN --dump-plugin", "s", KINDS,
             measure("dump"), goal=goal, whole_command=True),
    ]
