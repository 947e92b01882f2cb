"""A delta round of ``vddkpy sync`` on the map disk (99 % holes) of a VM
on a vSphere host, after 1 % of the disk changed in scattered 64 KiB
areas: bytes read against the bytes that changed, and the wall time
against a full round and against the manual's nbdcopy recipe
(``changed-since=CHANGEID`` served by nbdkit, ``nbdcopy
--destination-is-zero -S 0`` onto ``nbdkit file``).

The host is the CBT test bed (tests/bed/vcenter.py), the VM powered off
(a round then reads the disk as it is: no snapshot is copied by the bed,
which would time the bed rather than vddkpy).  Latencies are modelled:
50 ms per QueryChangedDiskAreas call (as in the map case) and 1 ms per
VDDK read (an NFC round trip on a LAN; the stand-in's ``latency``).  Each
run starts from the same state file (the changeId before the changes),
so every run copies the same delta; bytes read are the stand-in's reads,
counted in its call log.
"""

import atexit
import contextlib
import json
import os
import random
import shlex
import sys

from .. import disks
from ..hyperfine import run_hyperfine
from ..results import Case
from ..servers import PLUGIN, ROOT, server_env, socket_of

QCDA_LATENCY_S = 0.05
READ_LATENCY_US = 1000
CHANGED_FRACTION = 0.01
CHUNK = 64 << 10
STATE = "vddkpy-sync.json"


def _prepared(ctx):
    """The bed (made once for the three cases): the map disk, change
    tracking on, a first full sync done, then 1 % of the disk changed by
    the guest; the state files to start each kind of run from."""
    if getattr(ctx, "sync_bed", None) is not None:
        return ctx.sync_bed
    sys.path.insert(0, str(ROOT / "tests"))
    from bed.vcenter import Vcsim
    work = ctx.workdir / "sync-delta"
    bed = Vcsim(work / "bed", size=ctx.map_size, power_on=False)
    # Its own disk like the map disk (the guest writes to it).
    disks.make_sparse_file(bed.data_path, ctx.map_size)
    bed.start()
    atexit.register(bed.stop)
    bed.enable_cbt()
    copy = work / "copy"
    copy.mkdir()
    params = ["libdir=%s" % ctx.standin] + bed.vm_args()
    env = server_env(work, config=bed.standin_config())
    env["PYTHONPATH"] = str(ROOT)
    _run([sys.executable, "-m", "vddkpy.sync"] + params +
         ["--to", str(copy)], env)
    base = json.loads((copy / STATE).read_text())
    changed = _change(ctx, bed, env, params)
    full = json.loads(json.dumps(base))
    for disk in full["disks"].values():
        disk["change_id"] = None
    states = {}
    for name, state in (("delta", base), ("full", full)):
        states[name] = work / ("state-%s.json" % name)
        states[name].write_text(json.dumps(state))
    change_id = next(iter(base["disks"].values()))["change_id"]
    ctx.sync_bed = bed, copy, params, states, changed, change_id
    return ctx.sync_bed


def _run(argv, env):
    import subprocess
    p = subprocess.run(argv, env=env, capture_output=True, text=True,
                       timeout=3600)
    if p.returncode != 0:
        from ..servers import BenchError
        raise BenchError("%s exited %d: %s" % (shlex.join(argv[:4]),
                                               p.returncode, p.stderr))


def _change(ctx, bed, env, params):
    """The guest writes 1 % of the disk in scattered 64 KiB areas; the
    bytes of the (distinct) areas it changed."""
    import nbd
    count = ctx.map_size // CHUNK
    picked = random.Random(7).sample(range(count),
                                     max(1, round(count * CHANGED_FRACTION)))
    guest = dict(env, FAKEVDDK_CONFIG=str(ctx.workdir / "sync-guest.conf"))
    (ctx.workdir / "sync-guest.conf").write_text(bed.guest_config())
    h = nbd.NBD()
    h.connect_command(["env", "FAKEVDDK_CONFIG=" + guest["FAKEVDDK_CONFIG"],
                       "nbdkit", "-s", "--exit-with-parent", "python",
                       str(PLUGIN)] + params + ["file=" + bed.disk_file])
    data = os.urandom(CHUNK)
    for i in sorted(picked):
        h.pwrite(data, i * CHUNK)
    h.flush()
    h.shutdown()
    return len(picked) * CHUNK


def bytes_read(log):
    if not log.exists():
        return 0
    total = 0
    for line in log.read_text().splitlines():
        call = json.loads(line)
        if call.get("fn") in ("Read", "ReadAsync"):
            total += call.get("count", 0) * 512
    return total


def measure(how):
    def one(ctx, case, kind, state, first):
        bed, copy, params, states, changed, change_id = state
        bed.reset()
        bed.set_latency("QueryChangedDiskAreas", QCDA_LATENCY_S)
        log = ctx.workdir / ("calls-%s.jsonl" % case.name)
        if log.exists():
            log.unlink()
        config = bed.standin_config("latency Read %d\nlatency ReadAsync %d"
                                    % (READ_LATENCY_US, READ_LATENCY_US))
        env = server_env(ctx.workdir, config=config, calllog=log)
        env["PYTHONPATH"] = str(ROOT)
        if how == "nbdcopy":
            command = shlex.join(
                ["nbdkit", "-r", "-U", str(socket_of(ctx)), "python",
                 str(PLUGIN)] + params
                + ["file=" + bed.disk_file, "changed-since=" + change_id,
                   "--run", 'nbdcopy --destination-is-zero -S 0 --flush -- '
                   '"$uri" [ nbdkit --exit-with-parent file %s ]' % shlex.quote(
                       str(copy / "vm.raw"))])
        else:
            command = "cp %s %s && exec %s" % (
                shlex.quote(str(states[how])), shlex.quote(str(copy / STATE)),
                shlex.join([sys.executable, "-m", "vddkpy.sync"] + params
                           + ["--to", str(copy)]))
        out = ctx.workdir / ("hyperfine-%s.json" % case.name)
        value, extra = run_hyperfine(["sh", "-c", command], out, env=env,
                                     socket=socket_of(ctx))
        read = bytes_read(log)
        extra.update(bytes_read=read, changed_bytes=changed,
                     read_per_changed=round(read / changed, 3),
                     QueryChangedDiskAreas=bed.calls("QueryChangedDiskAreas"))
        return value, extra
    return one


@contextlib.contextmanager
def session(ctx, case):
    yield _prepared(ctx)


def define(ctx):
    disk = "the %s disk that is 99 %% holes, 1 %% of it then changed in " \
        "scattered 64 KiB areas, on a vSphere host" % ctx.human(ctx.map_size)
    modelled = ("(modelled: %g ms per QueryChangedDiskAreas, %g ms per VDDK "
                "read)" % (QCDA_LATENCY_S * 1000, READ_LATENCY_US / 1000))
    return [Case(name, "%s of %s %s" % (what, disk, modelled), "s",
                 ["vddkpy"], measure(how), session=session,
                 whole_command=True)
            for name, what, how in (
                ("sync-delta", "a delta round of vddkpy sync", "delta"),
                ("sync-full", "a full round of vddkpy sync", "full"),
                ("sync-delta-nbdcopy", "the nbdcopy recipe (changed-since="
                 "CHANGEID, nbdcopy --destination-is-zero -S 0)",
                 "nbdcopy"))]
