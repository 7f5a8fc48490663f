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
