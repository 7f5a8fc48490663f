"""The step with a pass before the update (cautious masking, StableAdamW's RMS) with fp32 and
with bf16 state, against plain AdamW: one 2M-element tensor, median of ``--rounds`` steps.
The fused low-memory kernels do not run the pass yet, so the bf16 rows take the torch-ops
low-memory path. Prints a table and writes JSON.

    .venv/bin/python benchmarks/reduction_low_memory.py [--rounds 5] [--json passes.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import adamkit

N = 2_000_000
CASES = {
    "AdamW fp32": (adamkit.AdamW, {}),
    "AdamW bf16": (adamkit.AdamW, {"state_precision": "bf16"}),
    "cautious AdamW fp32": (adamkit.AdamW, {"cautious": True}),
    "cautious AdamW bf16": (adamkit.AdamW, {"cautious": True, "state_precision": "bf16"}),
    "StableAdamW fp32": (adamkit.StableAdamW, {"lr": 1e-3}),
    "StableAdamW bf16": (adamkit.StableAdamW, {"lr": 1e-3, "state_precision": "bf16"}),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default="passes.json")
    args = parser.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    steps = {}
    for name, (cls, options) in CASES.items():
        w = torch.nn.Parameter(torch.randn(N, generator=gen))
        w.grad = torch.randn(N, generator=gen) * 1e-2
        opt = cls([w], **options)
        opt.step()  # state, kernels compiled or loaded
        steps[name] = opt.step
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):  # interleaved
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    rows = [{"case": name, "median_ms": statistics.median(t) * 1e3} for name, t in times.items()]
    for row in rows:
        print(f"{row['case']:24s} {row['median_ms']:8.2f} ms")
    with open(args.json, "w") as out:
        json.dump({"elements": N, "rows": rows}, out, indent=1)
    print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
