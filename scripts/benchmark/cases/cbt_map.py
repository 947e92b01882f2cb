"""The whole-disk map of the 99 % sparse disk on a vSphere host: through
QueryAllocatedBlocks (what a plain ``nbdkit -r vddk`` asks) against
changed block tracking (``changed-since=*``, QueryChangedDiskAreas).

The host is the CBT test bed (tests/bed/vcenter.py: govmomi's vcsim, its disk
served by the VDDK stand-in), the VM powered off so that ``*`` needs no
snapshot.  The latencies are modelled, not measured here: 1 s per
QueryAllocatedBlocks call (the stand-in's ``latency`` directive) and 50 ms
per QueryChangedDiskAreas call (the bed's knob), the figures Xen
Orchestra published when it replaced the VDDK allocation map with CBT
(QueryAllocatedBlocks about 1 s a call on real ESXi; a 25 GiB VM's map
2.5 s through it, 50 ms through CBT), as issue 20 cites them.  Each run is
one whole ``nbdkit … --run 'nbdinfo --map'`` (start-up, vSphere login
included); the calls each run made are reported with it.
"""

import contextlib
import json
import os
import sys

from ..hyperfine import run_hyperfine
from ..results import Case, Goal
from ..servers import PLUGIN, ROOT, server_env, socket_of

QAB_LATENCY_US = 1000000
QCDA_LATENCY_S = 0.05
CBT_MAP_GOAL = 0.1          # of the QueryAllocatedBlocks map's time


@contextlib.contextmanager
def bed_on_sparse_disk(ctx, case):
    """A started bed whose disk is the benchmark's sparse disk (a hard
    link), change tracking on (its sidecar filled from the allocation)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from bed.vcenter import Vcsim
    bed = Vcsim(ctx.workdir / ("bed-" + case.name), size=ctx.map_size,
                power_on=False)
    os.unlink(bed.data_path)
    os.link(ctx.sparse, bed.data_path)
    try:
        bed.start()
        bed.enable_cbt()
        yield bed
    finally:
        bed.stop()


def standin_calls(log, fn):
    """How many calls of ``fn`` the stand-in logged (the run is over)."""
    if not log.exists():
        return 0
    return sum(json.loads(line).get("fn") == fn
               for line in log.read_text().splitlines() if line)


def measure(cbt):
    def one(ctx, case, kind, bed, first):
        bed.reset()
        bed.set_latency("QueryChangedDiskAreas", QCDA_LATENCY_S)
        log = ctx.workdir / ("calls-%s.jsonl" % case.name)
        if log.exists():
            log.unlink()
        config = bed.standin_config(
            "latency QueryAllocatedBlocks %d" % QAB_LATENCY_US)
        argv = (["nbdkit", "-r", "-U", str(socket_of(ctx)), "python",
                 str(PLUGIN),
                 "libdir=%s" % ctx.standin] + bed.plugin_args()
                + (["changed-since=*"] if cbt else [])
                + ["--run", 'nbdinfo --map "$uri" >/dev/null'])
        out = ctx.workdir / ("hyperfine-%s-%s.json" % (case.name, kind))
        value, extra = run_hyperfine(
            argv, out, env=server_env(ctx.workdir, config=config,
                                      calllog=log), socket=socket_of(ctx))
        extra["QueryAllocatedBlocks"] = standin_calls(
            log, "QueryAllocatedBlocks")
        extra["QueryChangedDiskAreas"] = bed.calls("QueryChangedDiskAreas")
        return value, extra
    return one


def define(ctx):
    disk = "the %s disk that is 99 %% holes, on a vSphere host" \
        % ctx.human(ctx.map_size)
    modelled = ("(modelled: %g s per QueryAllocatedBlocks, %g ms per "
                "QueryChangedDiskAreas)" % (QAB_LATENCY_US / 1e6,
                                            QCDA_LATENCY_S * 1000))

    def case(name, how, cbt, goal=None):
        return Case("map-vsphere-%s" % name,
                    "nbdkit -r … --run 'nbdinfo --map' of %s, %s %s"
                    % (disk, how, modelled), "s", ["vddkpy"], measure(cbt),
                    goal=goal, session=bed_on_sparse_disk,
                    whole_command=True)
    allocated = case("allocated-blocks", "map from QueryAllocatedBlocks",
                     False)
    # Issue 24: the map from change tracking at least 10 times faster.
    tracked = case("cbt", "map from changed block tracking "
                   "(changed-since=*)", True,
                   Goal("vddkpy", CBT_MAP_GOAL, case=allocated))
    return [allocated, tracked]
