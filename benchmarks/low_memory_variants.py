"""The low-memory step of every algorithm against its own fp32 step: fp32, bf16 and 8-bit state
on one 2M-element tensor, median of ``--rounds`` interleaved steps (one step of each case in
turn per round). Every cell runs the fused numba low-memory kernel (a third slot, one slot, the
pass before the update of cautious masking and StableAdamW); ``--torch-ops`` runs the low-memory
rows on the torch-ops path (``fused=False``) for comparison. Prints a table and writes JSON.

    .venv/bin/python benchmarks/low_memory_variants.py [--rounds 5] [--json variants.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import adamkit

N = 2_000_000
ALGORITHMS = {
    "AdamW": (adamkit.AdamW, {}),
    "cautious AdamW": (adamkit.AdamW, {"cautious": True}),
    "StableAdamW": (adamkit.StableAdamW, {"lr": 1e-3}),
    "AdEMAMix": (adamkit.AdEMAMix, {}),
    "Lion": (adamkit.Lion, {}),
    "AMSGrad Adam": (adamkit.Adam, {"amsgrad": True}),
    "SGD momentum": (adamkit.SGD, {"lr": 1e-2, "momentum": 0.9}),
    "centered RMSprop": (adamkit.RMSprop, {"centered": True}),
}
PRECISIONS = ("fp32", "bf16", "8bit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--elements", type=int, default=N)
    parser.add_argument("--algorithm", action="append", choices=sorted(ALGORITHMS))
    parser.add_argument("--torch-ops", action="store_true", help="low-memory rows: fused=False")
    parser.add_argument("--json", default="variants.json")
    args = parser.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    steps = {}
    for name in args.algorithm or ALGORITHMS:
        cls, options = ALGORITHMS[name]
        for precision in PRECISIONS:
            w = torch.nn.Parameter(torch.randn(args.elements, generator=gen))
            w.grad = torch.randn(args.elements, generator=gen) * 1e-2
            flags = {"fused": False} if args.torch_ops and precision != "fp32" else {}
            opt = cls([w], **options, state_precision=precision, **flags)
            opt.step()  # state, kernels compiled or loaded
            steps[name, precision] = opt.step
    times: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    for _ in range(args.rounds):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - start)
    median = {key: statistics.median(t) * 1e3 for key, t in times.items()}
    rows = []
    print(f"{'algorithm':18s}" + "".join(f"{p:>10s} {'x fp32':>7s}" for p in PRECISIONS))
    for name in dict.fromkeys(name for name, _ in median):
        fp32 = median[name, "fp32"]
        cells = {p: median[name, p] for p in PRECISIONS}
        print(
            f"{name:18s}"
            + "".join(f"{cells[p]:8.2f}ms {cells[p] / fp32:6.2f}x" for p in PRECISIONS)
        )
        rows.append({"algorithm": name, "median_ms": cells})
    path = "torch-ops" if args.torch_ops else "fused"
    with open(args.json, "w") as out:
        json.dump({"elements": args.elements, "low_memory_path": path, "rows": rows}, out, indent=1)
    print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
