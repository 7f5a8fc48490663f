"""Smoke test of ``adamkit bench``'s CPU table: every contender measured, ratios and ceiling
computed from the same run, JSON written. (Speed itself is never asserted in tests.)"""

from __future__ import annotations

import json
import math

import pytest

from adamkit import bench

CONTENDERS = {
    "adamkit default",
    "adamkit+recorder",
    "adamkit bf16",
    "adamkit 8bit",
    "torch default",
    "torch foreach",
    "torch fused",
    "memory-limit",
}


def test_tiny_workload_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    text = bench.run_bench(["c-tiny-mlp-50k"], rounds=1, json_path=str(out))
    saved = json.loads(out.read_text())
    rows = {row["contender"]: row for row in saved["rows"]}
    assert set(rows) == CONTENDERS
    assert rows["torch fused"]["ratio_to_torch_fused"] == pytest.approx(1.0)
    assert rows["memory-limit"]["percent_of_ceiling"] == pytest.approx(100.0)  # x/x·100
    for row in rows.values():
        assert (row["n_params"], row["n_tensors"]) == (49_472, 4)
        assert row["median_ms"] > 0 and math.isfinite(row["gb_per_s"])
    assert all(name in text for name in CONTENDERS)
    assert "Recorder(every=1) overhead on c-tiny-mlp-50k" in text
    latency = saved["first_step_latency"]
    assert latency["cold_s"] > 0 and latency["warm_s"] > 0 and latency["torch_s"] > 0
    assert "cold (empty numba cache" in text and "warm (loads the cache)" in text


def test_bench_times_any_algorithm_against_torch_or_its_own_torch_ops_step(tmp_path, capsys):
    """``adamkit bench --algorithm``: torch.optim's namesake where torch has one (fused where
    torch has it), else adamkit's torch-ops step; the memory-limit ceiling where the algorithm
    moves Adam's bytes."""
    from adamkit.bench_algorithms import ALGORITHMS
    from adamkit.cli import main

    out = tmp_path / "algorithms.json"
    argv = ["bench", "--algorithm", "NAdam", "--algorithm", "Lion", "--algorithm", "SGD momentum"]
    argv += ["--workload", "c-tiny-mlp-50k", "--rounds", "1", "--json", str(out)]
    assert main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    contenders = {a: {r["contender"] for r in rows if r["algorithm"] == a} for a in ALGORITHMS}
    assert contenders["NAdam"] == {
        "adamkit default",
        "torch default",
        "torch foreach",
        "memory-limit",
    }
    assert contenders["Lion"] == {"adamkit default", "adamkit foreach"}
    assert contenders["SGD momentum"] == {
        "adamkit default", "torch default", "torch foreach", "torch fused",
    }  # fmt: skip
    for row in rows:
        assert row["median_us"] > 0 and math.isfinite(row["ratio_to_fastest_torch"])
    assert "x fastest torch" in capsys.readouterr().out
