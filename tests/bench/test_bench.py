"""scripts/bench.py's harness (not the speed): fio and hyperfine found or
named in one line, their JSON read from real runs, servers taking turns,
and a ranking printed only when the baseline shows the harness can tell."""

import json
import os
import subprocess
import sys

import pytest

from bed import ROOT, requires_bench_tools

from benchmark import fio, hyperfine, report, rounds, servers, verdict  # noqa: E402,E501
from benchmark.results import Case, Goal  # noqa: E402

BENCH = ROOT / "scripts" / "bench.py"
MiB = 1024 * 1024


class Ctx:
    """The little of the bench's context these tests need."""

    def __init__(self, workdir, kinds=servers.KINDS, repeat=3):
        self.workdir, self.kinds, self.repeat = workdir, list(kinds), repeat
        self.failed = False


def tool_dir(tmp_path, tools):
    """A PATH directory holding only ``tools`` (links to the real ones)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools:
        os.symlink(subprocess.run(["which", tool], capture_output=True,
                                  text=True, check=True).stdout.strip(),
                   bin_dir / tool)
    return bin_dir


@pytest.mark.parametrize("present, line", [
    (("nbdkit", "nbdcopy", "nbdinfo"),
     "bench: fio, hyperfine not found: apt install fio hyperfine"),
    pytest.param(("nbdkit", "nbdcopy", "nbdinfo", "hyperfine"),
                 "bench: fio not found: apt install fio",
                 marks=requires_bench_tools("hyperfine")),
])
def test_missing_tools_are_named_with_their_package(tmp_path, present, line):
    env = dict(os.environ, PATH=str(tool_dir(tmp_path, present)))
    p = subprocess.run([sys.executable, str(BENCH), "--quick", "--json",
                        str(tmp_path / "out.json")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (1, "", line + "\n")
    assert not (tmp_path / "out.json").exists()


@pytest.fixture
def file_server(tmp_path):
    disk = tmp_path / "disk.raw"
    disk.write_bytes(os.urandom(16 * MiB))
    with servers.Server(Ctx(tmp_path), "file", disk) as server:
        yield server


@requires_bench_tools("fio")
def test_fio_figures_come_from_its_json(file_server, tmp_path):
    iops, extra = fio.run_fio(file_server, tmp_path, 0.5)
    text = (tmp_path / "fio-file.json").read_text()
    raw = json.loads(text[text.index("{"):])["jobs"][0]
    assert extra["ios"] == raw["read"]["total_ios"] > 0
    assert iops == raw["read"]["iops"] > 0
    assert raw["read"]["io_bytes"] == 4096 * extra["ios"]
    assert raw["job options"]["iodepth"] == "64"
    assert raw["job options"]["runtime"] == "500ms"
    # The server's CPU time, read from /proc around the run.
    assert extra["server_cpu_us"] > 0


def test_fio_json_after_the_nbd_engines_message():
    text = ('fio: connected to NBD server\n{"jobs": [{"error": 0, '
            '"job_runtime": 2000, "read": {"iops": 10.5, "total_ios": 21, '
            '"clat_ns": {}}, "write": {"iops": 0, "total_ios": 0}}]}')
    assert fio.parse_fio(text) == {"iops": 10.5, "ios": 21, "seconds": 2.0,
                                   "p99_us": 0.0}


@requires_bench_tools("hyperfine")
def test_hyperfine_times_every_run(tmp_path):
    out = tmp_path / "hf.json"
    value, extra = hyperfine.run_hyperfine(["sleep", "0.05"], out, runs=3,
                                           warmup=1)
    assert len(extra["times"]) == 3
    assert all(t >= 0.05 for t in extra["times"])
    assert value == sorted(extra["times"])[1]
    assert json.loads(out.read_text())["results"][0]["command"] == \
        "sleep 0.05"


@requires_bench_tools("hyperfine")
def test_hyperfine_reports_a_failing_command(tmp_path):
    with pytest.raises(servers.BenchError,
                       match=r"^hyperfine exited 1 on sh -c 'exit 3':"):
        hyperfine.run_hyperfine(["sh", "-c", "exit 3"], tmp_path / "hf.json")


def test_servers_take_turns_and_a_failing_one_is_dropped(tmp_path):
    calls = []

    def measure(ctx, case, kind, state, first):
        calls.append((kind, first))
        if kind == "py-empty" and not first:
            raise servers.BenchError("py-empty broke")
        return len(calls), {}

    case = Case("turns", "t", "s", list(servers.KINDS), measure)
    ctx = Ctx(tmp_path, repeat=3)
    rounds.take_turns(ctx, case)
    assert calls == [("vddkpy", True), ("c-vddk", True), ("py-empty", True),
                     ("file", True), ("vddkpy", False), ("c-vddk", False),
                     ("py-empty", False), ("file", False), ("vddkpy", False),
                     ("c-vddk", False), ("file", False)]
    assert case.samples["vddkpy"] == [1, 5, 9]
    assert case.samples["py-empty"] == [3]
    assert case.errors == {"py-empty": "BenchError: py-empty broke"}
    assert ctx.failed


def fio_case(file_iops, vddkpy_iops=30000, c_iops=40000, others=0.02):
    case = Case(verdict.BASELINE_CASE, "fio", "IOPS", list(servers.KINDS),
                None, higher_is_better=True, goal=Goal("c-vddk", 0.8))
    for kind, iops in (("vddkpy", vddkpy_iops), ("c-vddk", c_iops),
                       ("file", file_iops)):
        if iops is not None:
            case.add(kind, iops, others_seconds=others * 5,
                     window_seconds=5.0, server_cpu_us=20.0)
    return case


def copy_case(vddkpy_s, c_s, others=0.02):
    case = Case("copy-esxi-2m", "copy", "s", ["vddkpy", "c-vddk"], None,
                goal=Goal("c-vddk", 1.05))
    case.add("vddkpy", vddkpy_s, others_seconds=others * vddkpy_s,
             window_seconds=vddkpy_s)
    case.add("vddkpy", vddkpy_s, others_seconds=0.0, window_seconds=vddkpy_s)
    case.add("c-vddk", c_s, others_seconds=0.0, window_seconds=c_s)
    return case


def test_no_ranking_when_the_baseline_falls_short():
    why = verdict.why_no_ranking([fio_case(42789)], 90000, 0.15)
    assert why == ("the baseline, nbdkit's file plugin, reached only 42789 "
                   "IOPS (median) under fio, short of its known rate "
                   "(--baseline-iops 90000)")
    text = report.markdown([fio_case(42789)], list(servers.KINDS), {}, why)
    assert "**No ranking**: %s.\n" % why in text
    assert "Ranking and goals" not in text


def test_no_ranking_without_a_baseline():
    assert verdict.why_no_ranking([copy_case(1.0, 1.0)], 90000, 0.15) == (
        "the baseline (nbdkit's file plugin under fio, case "
        "fio-randread-4k) was not measured in this run")


def test_no_ranking_while_other_work_shares_the_cpus():
    # Other work in any case of the run, not only in the baseline's.
    # Pooled over a server's runs: 0.6 s of 2 s.
    why = verdict.why_no_ranking([fio_case(100000), copy_case(1, 1, 0.6)],
                                 90000, 0.15)
    assert why == ("other work used 30 % of a CPU during copy-esxi-2m "
                   "(vddkpy's runs) (at most 15 % allowed)")


def test_ranking_gives_each_goal_met_or_not():
    cases = [fio_case(100000, vddkpy_iops=30000, c_iops=40000),
             copy_case(1.04, 1.0)]
    assert verdict.why_no_ranking(cases, 90000, 0.15) is None
    text = report.markdown(cases, list(servers.KINDS), {}, None)
    assert "- fio-randread-4k: vddkpy 30000 IOPS = 0.75× c-vddk's 40000 " \
        "(goal ≥ 0.8× c-vddk): not met" in text
    assert "- copy-esxi-2m: vddkpy 1.04 s = 1.04× c-vddk's 1 (goal ≤ " \
        "1.05× c-vddk): met" in text
    row = next(line for line in text.splitlines()
               if line.startswith("| fio-randread-4k |"))
    assert "| 0.75 |" in row and "vddkpy 20.0 µs CPU/request" in row


def map_cases(cbt_s, allocated_s=3.0):
    allocated = Case("map-a", "map", "s", ["vddkpy"], None)
    tracked = Case("map-b", "map", "s", ["vddkpy"], None,
                   goal=Goal("vddkpy", 0.1, case=allocated))
    for case, seconds in ((allocated, allocated_s), (tracked, cbt_s)):
        case.add("vddkpy", seconds, others_seconds=0.0,
                 window_seconds=seconds)
    return [allocated, tracked]


@pytest.mark.parametrize("cbt_s, verdict_text", [(0.28, "met"),
                                                 (0.31, "not met")])
def test_a_goal_held_to_another_case_of_the_same_server(cbt_s,
                                                        verdict_text):
    cases = [fio_case(100000)] + map_cases(cbt_s)
    text = report.markdown(cases, list(servers.KINDS), {}, None)
    assert "- map-b: vddkpy %g s = %.2f× map-a (vddkpy)'s 3 (goal ≤ 0.1× " \
        "map-a (vddkpy)): %s" % (cbt_s, cbt_s / 3, verdict_text) in text
    goal = cases[-1].to_json()["goal"]
    assert goal["case"] == "map-a" and goal["ratio"] == cbt_s / 3
    assert goal["met"] is (verdict_text == "met")


def test_a_goal_whose_other_case_did_not_run_is_not_measured():
    tracked = map_cases(0.28)[1]
    tracked.goal.case.samples.clear()
    text = report.markdown([fio_case(100000), tracked],
                           list(servers.KINDS), {}, None)
    assert "- map-b: goal ≤ 0.1× map-a (vddkpy) not measured" in text


@requires_bench_tools("fio", "hyperfine")
def test_bench_runs_fio_and_hyperfine_cases(tmp_path):
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, str(BENCH), "--quick", "--only",
                        "start-run-true,copy-esxi-256k,fio-randread-4k,"
                        "map-ro", "--servers",
                        "vddkpy,py-empty,file", "--baseline-iops", "1",
                        "--max-other-work", "1000", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    results = json.loads(out.read_text())
    assert results["no_ranking"] is None
    fio_servers = results["cases"]["fio-randread-4k"]["servers"]
    assert set(fio_servers) == {"vddkpy", "py-empty", "file"}
    assert all(s["median"] > 0 and s["ios"][0] > 0
               for s in fio_servers.values())
    start = results["cases"]["start-run-true"]
    assert set(start["servers"]) == {"vddkpy", "py-empty"}
    assert start["goal"]["other"] == "py-empty"
    copy = results["cases"]["copy-esxi-256k"]["servers"]["vddkpy"]
    assert copy["median"] > 0 and copy["cpu_seconds"][0] > 0
    # The stand-in's call log, read per run: one map, one call per
    # connection's probe and one for the whole disk at least.
    map_ro = results["cases"]["map-ro"]["servers"]
    assert map_ro["vddkpy"]["QueryAllocatedBlocks"][0] >= 2
    assert "QueryAllocatedBlocks" not in map_ro["file"]
    assert "**Ranking and goals**" in p.stdout
    assert "- fio-randread-4k: goal ≥ 0.8× c-vddk not measured" in p.stdout


def test_a_process_that_outlives_its_parent_is_the_commands_cpu_time():
    """Like vddkpy's vSphere process after nbdkit --run exits: hyperfine
    cannot count it, so CpuWatch adopts and reaps it, and its CPU time is
    the command's (``adopted``), not other work."""
    from benchmark.machine import CpuWatch
    burn = ("import time\nwhile time.process_time() < 0.2: pass")
    with CpuWatch() as cpu:
        subprocess.run(["sh", "-c", '"$0" -c "$1" & exit 0',
                        sys.executable, burn], check=True)
        # Wait for the orphan, now ours, to end (without reaping it).
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
    assert cpu.adopted >= 0.2
    assert cpu.children >= 0.2
