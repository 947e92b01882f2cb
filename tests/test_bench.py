"""scripts/bench.py: a client lean enough to rank servers, and a ranking
printed only when the baseline shows that the harness can tell."""

import importlib.util
import json
import subprocess
import sys

import pytest

from conftest import ROOT

BENCH = ROOT / "scripts" / "bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_bench()


def start_file_server(tmp_path, filters=()):
    """bench's own server handling: nbdkit's file plugin (behind
    ``filters``: [(name, [param, ...])]) on a 16 MiB disk."""
    ctx = bench.Context()
    ctx.workdir = tmp_path
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(range(256)) * (16 * bench.MiB // 256))
    server = bench.Server("file", disk, ctx)
    for name, params in filters:
        server.command[-2:-2] = ["--filter=" + name]
        server.command += params
    return server.start()


@pytest.fixture
def file_server(tmp_path):
    server = start_file_server(tmp_path)
    yield server.socket, 16 * bench.MiB
    server.stop()


def test_random_reads_reuse_one_buffer_per_slot(file_server, monkeypatch):
    import nbd
    buffers = []
    real_pread = nbd.NBD.aio_pread

    def recording_pread(self, buf, offset, *args, **kw):
        buffers.append(buf)
        return real_pread(self, buf, offset, *args, **kw)

    monkeypatch.setattr(nbd.NBD, "aio_pread", recording_pread)
    sock, size = file_server
    seconds, cpu = bench.random_io(sock, 3000, 4096, size, 64, seed=1)
    assert seconds > 0 and cpu >= 0
    assert len(buffers) == 3000
    # One buffer per in-flight slot, however many requests.
    assert len({id(buf) for buf in buffers}) == 64


def test_random_reads_report_failed_requests(tmp_path):
    # Every read fails on the server: the bench must say so rather than
    # time the failures.
    server = start_file_server(tmp_path, [
        ("error", ["error=EIO", "error-pread-rate=1"])])
    try:
        with pytest.raises(bench.BenchError,
                           match=r"^100 of 100 requests failed \(first "
                                 r"errno 5\)$"):
            bench.random_io(server.socket, 100, 4096, 16 * bench.MiB, 8,
                            seed=1)
    finally:
        server.stop()


def rand_case(file_iops, vddkpy_iops, c_iops=None, empty_iops=None,
              others_cpu=0.02):
    case = bench.Case("rand-read-4k", "random reads", "IOPS",
                      ["vddkpy", "c-vddk", "py-empty", "file"],
                      higher_is_better=True, baseline_floor=80000)
    for kind, value in (("file", file_iops), ("vddkpy", vddkpy_iops),
                        ("c-vddk", c_iops), ("py-empty", empty_iops)):
        if value is not None:
            case.add(kind, value, seconds=1.0, client_cpu=0.5,
                     others_cpu=others_cpu if kind == "vddkpy" else 0.02)
    return case


META = {"repeat": 1, "data_size": bench.GiB, "map_size": 64 * bench.GiB}
ALL = ["vddkpy", "c-vddk", "py-empty", "file"]


def table_row(text, name):
    return next(line for line in text.splitlines()
                if line.startswith("| %s |" % name))


def test_no_ranking_when_the_baseline_falls_short():
    # The figures of a client that allocated a buffer per request: every
    # server near the client's own limit.
    text = bench.markdown([rand_case(40000, 33600, 33300, 30000)], ALL, META)
    assert "**No ranking from rand-read-4k**: the baseline, nbdkit's file " \
        "plugin, reached only 40000 IOPS (median), short of its known " \
        "rate (--baseline-iops 80000)" in text
    assert "Ranking from" not in text
    assert "×" not in table_row(text, "rand-read-4k")
    assert "no rank" in table_row(text, "rand-read-4k")


def test_no_ranking_without_a_baseline():
    text = bench.markdown([rand_case(None, 33600, 50000)], ALL, META)
    assert "**No ranking from rand-read-4k**: the baseline (nbdkit's file " \
        "plugin) was not measured" in text


def test_no_ranking_while_other_work_shares_the_cpus():
    # The baseline reached its rate, but another job took half a CPU while
    # vddkpy ran: that changes the servers' rates unevenly.
    text = bench.markdown([rand_case(100000, 58000, 50000, 51000,
                                     others_cpu=0.5)], ALL, META)
    assert "**No ranking from rand-read-4k**: other work used 50 % of a " \
        "CPU during vddkpy's runs (median; at most 15 % allowed)" in text
    assert "other work: vddkpy 50 %, c-vddk 2 %" in table_row(
        text, "rand-read-4k")


def test_ranking_against_c_and_the_python_ceiling():
    text = bench.markdown([rand_case(100000, 34000, 50000, 30000)], ALL,
                          META)
    assert "**Ranking from rand-read-4k** (the baseline, nbdkit's file " \
        "plugin, reached 100000 IOPS, at least its known rate 80000)" in text
    assert "- vddkpy 34000 IOPS = 0.68× c-vddk's 50000 (upstream's C vddk " \
        "plugin)" in text
    assert "- vddkpy 34000 IOPS = 1.13× py-empty's 30000 (the Python " \
        "ceiling" in text
    assert "client busy: vddkpy 50 %" in table_row(text, "rand-read-4k")


def run_bench(tmp_path, *args):
    out = tmp_path / "bench.json"
    # The default work directory (under /var/tmp): pytest's tmp_path is too
    # long for the bench's Unix sockets.
    p = subprocess.run([sys.executable, str(BENCH), "--quick", "--only",
                        "rand-read-4k", "--json", str(out)] + list(args),
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return p.stdout, json.loads(out.read_text())


def test_bench_ranks_vddkpy_against_the_python_ceiling(tmp_path):
    stdout, results = run_bench(tmp_path, "--servers",
                                "vddkpy,py-empty,file", "--baseline-iops",
                                "1", "--max-other-work", "1000")
    case = results["cases"]["rand-read-4k"]
    assert set(case["servers"]) == {"vddkpy", "py-empty", "file"}
    for entry in case["servers"].values():
        assert entry["median"] > 0
        assert "error" not in entry
    assert case["baseline"]["short_because"] is None
    assert "**Ranking from rand-read-4k**" in stdout
    assert "- vddkpy " in stdout and "py-empty's" in stdout


def test_bench_says_when_the_baseline_falls_short(tmp_path):
    stdout, results = run_bench(tmp_path, "--servers", "vddkpy,file",
                                "--baseline-iops", "1e12")
    case = results["cases"]["rand-read-4k"]
    assert "short of its known rate" in case["baseline"]["short_because"]
    assert "**No ranking from rand-read-4k**" in stdout
    assert "Ranking from" not in stdout.replace("No ranking from", "")


def test_servers_at_the_baselines_level_are_named():
    # nbdcopy to null: on 2 CPUs: moving the bytes, not the plugin, sets
    # the time, so a plugin that matches file shows nothing of its cost.
    case = bench.Case("seq-read-null", "copy", "s", ALL)
    for kind, seconds in (("file", 0.649), ("vddkpy", 0.646),
                          ("c-vddk", 0.90)):
        case.add(kind, seconds)
    row = table_row(bench.markdown([case], ALL, META), "seq-read-null")
    assert "vddkpy at file's level: the harness's floor, not their cost" \
        in row
    assert "c-vddk at file's level" not in row
