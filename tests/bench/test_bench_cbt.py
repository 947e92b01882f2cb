"""The benchmark's CBT map case (scripts/benchmark/cases/cbt_map.py) runs
against the vcsim bed: one run of each map, with the calls each made."""

import json
import subprocess
import sys

from bed import ROOT, requires_bench_tools

BENCH = ROOT / "scripts" / "bench.py"


@requires_bench_tools("hyperfine")
def test_cbt_map_case_counts_the_calls(tmp_path):
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, str(BENCH), "--quick", "--only",
                        "map-vsphere-*", "--servers", "vddkpy",
                        "--map-size", "1G", "--max-other-work", "1000",
                        "--workdir", str(tmp_path), "--json", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    cases = json.loads(out.read_text())["cases"]
    qab = cases["map-vsphere-allocated-blocks"]["servers"]["vddkpy"]
    cbt = cases["map-vsphere-cbt"]["servers"]["vddkpy"]
    # A probe per open (nbdinfo of libnbd 1.22 opens twice: NBD_OPT_INFO,
    # then NBD_OPT_GO), then one call for the 1 GiB disk.
    assert qab["QueryAllocatedBlocks"] in ([2], [3])
    assert qab["QueryChangedDiskAreas"] == [0]
    # 1 % of 16384 chunks of 64 KiB: 164 areas, one page of 2000.
    # (One map per open: twice with libnbd 1.22's nbdinfo.)
    assert cbt["QueryAllocatedBlocks"] == [0]
    assert cbt["QueryChangedDiskAreas"] in ([1], [2])
    assert "modelled: 1 s per QueryAllocatedBlocks, 50 ms per " \
        "QueryChangedDiskAreas" in cases["map-vsphere-cbt"]["title"]
