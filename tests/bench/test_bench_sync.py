"""The benchmark's sync-delta cases (scripts/benchmark/cases/sync_delta.py)
run against the vcsim bed: a delta round of vddkpy sync reads exactly the
changed areas, the nbdcopy recipe reads them widened, a full round reads
every area in use."""

import json
import subprocess
import sys

from bed import ROOT, requires_bench_tools

BENCH = ROOT / "scripts" / "bench.py"


@requires_bench_tools("hyperfine")
def test_sync_delta_cases_count_bytes_read(tmp_path):
    out = tmp_path / "bench.json"
    p = subprocess.run([sys.executable, str(BENCH), "--quick", "--only",
                        "sync-*", "--servers", "vddkpy", "--map-size", "1G",
                        "--max-other-work", "1000", "--workdir",
                        str(tmp_path), "--json", str(out)],
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr
    cases = json.loads(out.read_text())["cases"]
    delta = cases["sync-delta"]["servers"]["vddkpy"]
    full = cases["sync-full"]["servers"]["vddkpy"]
    recipe = cases["sync-delta-nbdcopy"]["servers"]["vddkpy"]
    # 1 % of the 16384 chunks of 64 KiB: 164 areas.
    assert delta["changed_bytes"] == [164 * 65536]
    assert delta["bytes_read"] == delta["changed_bytes"]
    assert delta["read_per_changed"] == [1.0]
    # The recipe reads whole 256 KiB blocks around each 64 KiB area.
    assert recipe["bytes_read"][0] > 2 * recipe["changed_bytes"][0]
    # A full round reads the areas in use: the first 1 % and the changes.
    assert full["bytes_read"][0] > delta["bytes_read"][0]
    assert "modelled: 50 ms per QueryChangedDiskAreas, 1 ms per VDDK read" \
        in cases["sync-delta"]["title"]
