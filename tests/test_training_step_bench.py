"""benchmarks/training_step.py runs end to end (a short smoke run; the timings are not asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "training_step.py"


def test_smoke_run_prints_a_table_and_writes_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("training_step_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "training.json"
    assert bench.main(["--rounds", "1", "--inner", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {(r["model"], r["contender"]) for r in rows} == {
        (model, contender) for model in bench.MODELS for contender in bench.CONTENDERS
    }
    assert all(r["median_us"] > 0 and r["params"] > 0 for r in rows)
    assert "x torch fused" in capsys.readouterr().out
