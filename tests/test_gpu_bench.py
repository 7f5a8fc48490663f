"""benchmarks/gpu.py runs end to end (on CPU at a tiny scale: the GPU numbers need a GPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu.py"


def _load():
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_prints_a_table_and_writes_json(tmp_path, capsys):
    bench = _load()
    out = tmp_path / "gpu.json"
    argv = ["--device", "cpu", "--scale", "1e-5", "--small-tensors", "50", "--rounds", "2",
            "--json", str(out)]  # fmt: skip
    assert bench.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["workload"] for r in rows} == set(bench.WORKLOADS)
    assert {r["contender"] for r in rows} == {"adamkit default", "torch fused", "torch foreach"}
    assert all(r["median_ms"] > 0 and r["copy_tb_per_s"] > 0 for r in rows)
    assert next(r for r in rows if r["workload"].startswith("c"))["n_tensors"] == 50
    assert "x torch fused" in capsys.readouterr().out


def test_full_size_workloads_have_the_documented_shapes():
    bench = _load()
    count = lambda shapes: sum(int(__import__("math").prod(s)) for s in shapes)  # noqa: E731
    assert count(bench.workload_shapes("a-one-1B-tensor", 1.0, 10_000)) == 1_000_000_000
    b = bench.workload_shapes("b-transformer-335M", 1.0, 10_000)
    assert len(b) == 289 and 330e6 < count(b) < 340e6
    c = bench.workload_shapes("c-10k-small-tensors", 1.0, 10_000)
    assert len(c) == 10_000 and 15e6 < count(c) < 25e6
