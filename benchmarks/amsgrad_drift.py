"""AMSGrad's running max with 8-bit state against fp32, under stationary gradients.

adamkit's scheme (``bf16-beside-max``): with 8-bit state, AMSGrad keeps v and its max in bf16
(m stays 8-bit), the max stored rounded toward zero. ``--schemes`` also runs the schemes it
replaced, with v and the max as 8-bit codes: the max rounded toward zero (``8bit-toward-zero``;
it then climbs the 8-bit v's rounding noise) or stochastically as the moments
(``8bit-stochastic``; it also keeps its own rounding errors: it ratchets). Prints, at each
checkpoint step, quantiles of √(max low / max fp32) (what the effective learning rate sees)
beside those of √(v low / v fp32), and writes JSON.

    .venv/bin/python benchmarks/amsgrad_drift.py --steps 10000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform

import torch

import adamkit
from adamkit.algorithms import state_formats
from adamkit.kernels import lowbit_torch

SCHEMES = ("bf16-beside-max", "8bit-toward-zero", "8bit-stochastic")
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
                key: lowbit_torch.load(opt.state[w], key).clone()
                for key in ("max_exp_avg_sq", "exp_avg_sq")
            }
    return out


@contextlib.contextmanager
def _scheme(scheme: str):
    """The formats of ``scheme`` in force (adamkit's own, unless an "8bit-" one)."""
    beside, down = state_formats.BF16_BESIDE_MAX, lowbit_torch.ROUNDED_DOWN
    if scheme.startswith("8bit-"):
        state_formats.BF16_BESIDE_MAX = {}
    if scheme == "8bit-stochastic":
        lowbit_torch.ROUNDED_DOWN = ()
    try:
        yield
    finally:
        state_formats.BF16_BESIDE_MAX, lowbit_torch.ROUNDED_DOWN = beside, down


def quantiles(ratio: torch.Tensor) -> list[float]:
    return [round(ratio.quantile(q).item(), 4) for q in QUANTILES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=SCHEMES)
    parser.add_argument("--precision", default="8bit", choices=["8bit", "bf16"])
    parser.add_argument("--json", default="amsgrad_drift.json")
    args = parser.parse_args()
    checkpoints = sorted({s for s in (1000, 2500, 5000, 10_000, args.steps) if s <= args.steps})
    exact = run("fp32", args.n, args.steps, checkpoints)
    rows = []
    schemes = args.schemes if args.precision == "8bit" else ["bf16-state"]
    for scheme in schemes:
        with _scheme(scheme):
            low = run(args.precision, args.n, args.steps, checkpoints)
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
    print(f"{'scheme':<17} {'step':>6}  {'max_exp_avg_sq':<26} {'exp_avg_sq':<26}")
    for row in rows:
        print(f"{row['scheme']:<17} {row['step']:>6}  {row['max']!s:<26} {row['v']!s:<26}")
    with open(args.json, "w") as f:
        json.dump({"machine": platform.processor() or platform.machine(), "rows": rows}, f)


if __name__ == "__main__":
    main()
