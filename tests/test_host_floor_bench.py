"""benchmarks/host_floor.py runs end to end (a short smoke run; the timings are not asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "host_floor.py"


def test_smoke_run_prints_a_table_and_writes_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("host_floor_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "host_floor.json"
    assert bench.main(["--rounds", "1", "--json", str(out)]) == 0
    medians = json.loads(out.read_text())["median_us"]
    assert set(medians) == {"adamkit default", "adamkit host only", "floor", "torch fused"}
    assert all(us > 0 for us in medians.values())
    assert "x torch fused" in capsys.readouterr().out
