"""The low-memory quality scripts run end to end (short smoke runs): the stdlib transformer
trains in every precision, the quality script writes its tables, the drift script prints its
ratios. The losses are not asserted beyond being finite and falling."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture(scope="module", autouse=True)
def _benchmarks_importable():
    sys.path.insert(0, str(BENCHMARKS))
    yield
    sys.path.remove(str(BENCHMARKS))


@pytest.mark.parametrize("precision", ["fp32", "bf16", "8bit"])
def test_stdlib_transformer_trains(precision):
    import stdlib_lm

    assert stdlib_lm.corpus().numel() > 100_000  # real text from the standard library
    run = stdlib_lm.train(0, 20, state_precision=precision)
    assert len(run["curve"]) == 10 and all(math.isfinite(x) for x in run["curve"])
    assert run["curve"][-1] < run["curve"][0]  # 20 steps from ln 256 ≈ 5.5 already help
    assert math.isfinite(run["final"]) and math.isfinite(run["held_out"])


def test_quality_script_writes_its_tables(tmp_path, capsys):
    import low_memory_quality

    out = tmp_path / "quality.json"
    args = ["--seeds", "1", "--epochs", "1", "--lm-steps", "10", "--json", str(out)]
    assert low_memory_quality.main(args) == 0
    saved = json.loads(out.read_text())
    assert set(saved["stdlib_lm"]) == {"fp32", "bf16", "8bit"}
    assert set(saved["bf16_params"]) == {"nearest", "stochastic", "kahan"}
    printed = capsys.readouterr().out
    assert "byte-level transformer" in printed and "vs fp32" in printed


def test_quality_script_runs_the_variants_against_their_own_fp32(tmp_path, capsys):
    import low_memory_quality

    out = tmp_path / "quality.json"
    args = ["--seeds", "1", "--epochs", "1", "--lm-steps", "10", "--json", str(out),
            "--algorithm", "Lion", "--algorithm", "ScheduleFreeAdamW"]  # fmt: skip
    assert low_memory_quality.main(args) == 0
    saved = json.loads(out.read_text())["variants"]
    assert set(saved["Lion"]["stdlib_lm"]) == {"fp32", "bf16", "8bit"}
    assert set(saved["ScheduleFreeAdamW"]["digits"]) == {"fp32", "bf16"}  # (no 8-bit state)
    for runs in saved.values():
        for rows in runs["digits"].values():
            assert all(math.isfinite(loss) for loss, _ in rows)
    assert "== ScheduleFreeAdamW" in capsys.readouterr().out


def test_drift_script_prints_ratios(capsys):
    import low_memory_drift

    assert low_memory_drift.main(["--steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "mean |m/√v|" in printed and "linear1.weight" in printed


def test_speed_script_writes_every_format_per_element(tmp_path, capsys):
    import low_memory

    out = tmp_path / "speed.json"
    args = ["--workload", "c-tiny-mlp-50k", "--rounds", "1", "--threads", "1", "--json", str(out)]
    threads = torch.get_num_threads()
    try:
        assert low_memory.main(args) == 0
    finally:
        torch.set_num_threads(threads)
    saved = json.loads(out.read_text())
    assert saved["torch_threads"] == 1
    rows = {r["contender"]: r for r in saved["rows"]}
    assert {"torch fused fp32", "adamkit fp32", "adamkit bf16", "adamkit 8bit"} <= set(rows)
    for row in rows.values():
        n_params = row["median_us"] * 1e3 / row["ns_per_element"]
        assert 40_000 < n_params < 60_000  # the 50k MLP
    assert "ns/element" in capsys.readouterr().out


def test_low_memory_variants_benchmark_prints_every_cell(tmp_path, capsys):
    import low_memory_variants

    out = tmp_path / "variants.json"
    args = ["--rounds", "1", "--elements", "3000", "--json", str(out),
            "--algorithm", "StableAdamW", "--algorithm", "Lion"]  # fmt: skip
    assert low_memory_variants.main(args) == 0
    saved = json.loads(out.read_text())
    assert [row["algorithm"] for row in saved["rows"]] == ["StableAdamW", "Lion"]
    for row in saved["rows"]:
        assert set(row["median_ms"]) == {"fp32", "bf16", "8bit"}
        assert all(ms > 0 for ms in row["median_ms"].values())
    assert "StableAdamW" in capsys.readouterr().out
