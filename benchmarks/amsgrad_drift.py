"""AMSGrad's running max with 8-bit state against fp32, under stationary gradients.

The max is stored rounded toward zero (adamkit's scheme); ``--schemes stochastic`` also runs
the scheme it replaced (stochastic rounding, as the moments), whose rounding errors the max
keeps: it ratchets upward. Prints, at each checkpoint step, quantiles of √(max 8-bit / max
fp32) (what the effective learning rate sees) beside those of √(v 8-bit / v fp32), and writes
JSON.

    .venv/bin/python benchmarks/amsgrad_drift.py --steps 10000 --schemes toward-zero stochastic
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

import adamkit
from adamkit.kernels import lowbit_torch

QUANTILES = (0.1, 0.5, 0.9)


def run(precision: str, n: int, steps: int, checkpoints: list[int]) -> dict[int, dict]:
    gen = torch.Generator().manual_seed(0)
    scale = torch.rand(n, generator=gen) * 3 + 0.1  # elements 30x apart share blocks
    w = torch.nn.Parameter(torch.zeros(n))
    opt = adamkit.Adam([w], lr=1e-4, amsgrad=True, state_precision=precision, min_8bit_size=0)
    gen = torch.Generator().manual_seed(1)
    out = {}
    for step in range(1, steps + 1):
        w.grad = torch.randn(n, generator=gen) * scale
        opt.step()
        if step in checkpoints:
            out[step] = {
                key: lowbit_torch.load(opt.state[w], key, precision).clone()
                for key in ("max_exp_avg_sq", "exp_avg_sq")
            }
    return out


def quantiles(ratio: torch.Tensor) -> list[float]:
    return [round(ratio.quantile(q).item(), 4) for q in QUANTILES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--schemes", nargs="+", default=["toward-zero", "stochastic"])
    parser.add_argument("--precision", default="8bit", choices=["8bit", "bf16"])
    parser.add_argument("--json", default="amsgrad_drift.json")
    args = parser.parse_args()
    checkpoints = sorted({s for s in (1000, 2500, 5000, args.steps) if s <= args.steps})
    exact = run("fp32", args.n, args.steps, checkpoints)
    rows = []
    for scheme in args.schemes:
        saved = lowbit_torch.ROUNDED_DOWN
        lowbit_torch.ROUNDED_DOWN = saved if scheme == "toward-zero" else ()
        try:
            low = run(args.precision, args.n, args.steps, checkpoints)
        finally:
            lowbit_torch.ROUNDED_DOWN = saved
        for step in checkpoints:
            ratios = {key: (low[step][key] / exact[step][key]).sqrt() for key in exact[step]}
            rows.append(
                {
                    "scheme": scheme,
                    "step": step,
                    "max": quantiles(ratios["max_exp_avg_sq"]),
                    "v": quantiles(ratios["exp_avg_sq"]),
                }
            )
    print(f"√({args.precision} / fp32), quantiles {QUANTILES}, {args.n} elements")
    print(f"{'scheme':<12} {'step':>6}  {'max_exp_avg_sq':<26} {'exp_avg_sq':<26}")
    for row in rows:
        print(f"{row['scheme']:<12} {row['step']:>6}  {row['max']!s:<26} {row['v']!s:<26}")
    with open(args.json, "w") as f:
        json.dump({"machine": platform.processor() or platform.machine(), "rows": rows}, f)


if __name__ == "__main__":
    main()
