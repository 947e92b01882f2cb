"""Random I/O through fio's nbd engine (Debian's fio is built with
libnbd), with the server's CPU time read from /proc around the run."""

import json
import subprocess

from .machine import CpuWatch
from .servers import BenchError

RUN_TIMEOUT = 600


def fio_command(uri, output, runtime, block_size="4k", depth=64,
                rw="randread"):
    return ["fio", "--name=bench", "--ioengine=nbd", "--uri=%s" % uri,
            "--rw=%s" % rw, "--bs=%s" % block_size,
            "--iodepth=%d" % depth, "--numjobs=1",
            "--runtime=%dms" % (runtime * 1000), "--time_based",
            "--output-format=json", "--output=%s" % output]


def parse_fio(text):
    """The figures of fio's only job; fio may print lines before its JSON
    (its nbd engine says "connected to NBD server")."""
    start = text.find("{")
    if start < 0:
        raise BenchError("fio wrote no JSON:\n%s" % text[-2000:])
    job = json.loads(text[start:])["jobs"][0]
    if job["error"]:
        raise BenchError("fio's job failed with error %d" % job["error"])
    read, write = job["read"], job["write"]
    ios = read["total_ios"] + write["total_ios"]
    return {"iops": read["iops"] + write["iops"], "ios": ios,
            "seconds": job["job_runtime"] / 1000.0,
            "p99_us": read["clat_ns"].get("percentile", {})
            .get("99.000000", 0) / 1000.0}


def run_fio(server, workdir, runtime):
    """One fio run on ``server``: (IOPS, figures incl. server CPU per
    request and the CPU time of other work during it)."""
    output = workdir / ("fio-%s.json" % server.kind)
    with CpuWatch(server.pid) as cpu:
        p = subprocess.run(fio_command(server.uri, output, runtime),
                           stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=RUN_TIMEOUT)
    server.check_alive()
    if p.returncode != 0:
        raise BenchError("fio exited %d:\n%s%s" % (p.returncode, p.stdout,
                                                   p.stderr[-2000:]))
    got = parse_fio(output.read_text())
    if not got["ios"]:
        raise BenchError("fio completed no request")
    return got["iops"], {
        "ios": got["ios"], "seconds": got["seconds"], "p99_us": got["p99_us"],
        "server_cpu_us": cpu.server / got["ios"] * 1e6,
        "client_cpu": cpu.children, "others_seconds": cpu.others,
        "window_seconds": got["seconds"],
    }
