"""benchmarks/algorithms.py runs end to end (a short smoke run; the timings are not asserted)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "algorithms.py"
# The peers of the algorithms torch.optim lacks that the smoke run must find installed.
PEERS = {
    "Lion": {"peer lion-pytorch", "peer timm foreach"},
    "AdEMAMix": {"peer bitsandbytes", "peer pytorch_optimizer foreach"},
    "ScheduleFreeAdamW": {"peer schedulefree", "peer schedulefree foreach"},
    "StableAdamW": {"peer optimi", "peer optimi foreach"},
    "ADOPT": {"peer authors", "peer timm foreach"},
    "cautious AdamW": {"peer timm", "peer timm foreach"},
}


def test_smoke_run_prints_a_table_and_writes_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("algorithms_bench", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "algorithms.json"
    argv = ["--rounds", "1", "--workload", "c-tiny-mlp-50k", "--json", str(out)]
    assert bench.main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["algorithm"] for r in rows} == set(bench.ALGORITHMS)
    for algorithm, (_, theirs, _, has_fused) in bench.ALGORITHMS.items():
        contenders = {r["contender"] for r in rows if r["algorithm"] == algorithm}
        assert ("torch fused" in contenders) == has_fused
        if theirs is None:  # its peers (requirements-peers.txt, installed by make test)
            assert {"adamkit default", *PEERS[algorithm]} <= contenders
        else:
            assert {"adamkit default", "torch default", "torch foreach"} <= contenders
    assert all(r["median_us"] > 0 for r in rows)
    assert "x fastest torch" in capsys.readouterr().out
