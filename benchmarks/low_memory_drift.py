"""How far 8-bit state drifts from fp32 state under the same gradients: an fp32 AdamW trains
the stdlib transformer (benchmarks/stdlib_lm.py) and an 8-bit AdamW beside it is fed the same
gradients at the same params each step (its own updates are thrown away). Every 200 steps,
per weight matrix: the ratio of the 8-bit state's mean v, mean |m| and mean |m/√v| (the step's
size) to fp32's. A format whose moving averages lag shows ratios far from 1.

    .venv/bin/python benchmarks/low_memory_drift.py [--steps 600]
"""

from __future__ import annotations

import argparse

import torch

import adamkit
import stdlib_lm  # beside this script
from adamkit.kernels.lowbit_torch import dequantized_entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args(argv)
    data = stdlib_lm.corpus()
    train_data = data[: int(len(data) * 0.9)]
    torch.manual_seed(0)
    model = stdlib_lm.ByteTransformer()
    names = [name for name, _ in model.named_parameters()]
    shadow = [torch.nn.Parameter(p.detach().clone()) for p in model.parameters()]
    exact = adamkit.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    low = adamkit.AdamW(shadow, lr=2e-3, weight_decay=0.01, state_precision="8bit")
    gen = torch.Generator().manual_seed(0)
    for t in range(1, args.steps + 1):
        x, y = stdlib_lm._batch(train_data, gen)
        exact.zero_grad()
        stdlib_lm._loss(model, x, y).backward()
        for p, s in zip(model.parameters(), shadow, strict=True):
            s.data.copy_(p.data)
            s.grad = p.grad.clone()
        exact.step()
        low.step()
        if t % 200 and t != args.steps:
            continue
        print(f"step {t}: 8-bit / fp32, per weight matrix (8-bit state)")
        print(f"  {'tensor':42} {'mean v':>7} {'mean |m|':>9} {'mean |m/√v|':>12}")
        for name, p, s in zip(names, model.parameters(), shadow, strict=True):
            if low.precision_of(s) != "8bit":
                continue
            a, b = exact.state[p], dequantized_entry(low.state[s])
            v = (b["exp_avg_sq"].mean() / a["exp_avg_sq"].mean()).item()
            m = (b["exp_avg"].abs().mean() / a["exp_avg"].abs().mean()).item()
            size = (_step_size(b) / _step_size(a)).item()
            print(f"  {name:42} {v:7.3f} {m:9.3f} {size:12.3f}")
    return 0


def _step_size(state) -> torch.Tensor:
    """mean |m/√v| of a parameter's (float32) state: its step's size, less the lr."""
    return (state["exp_avg"] / (state["exp_avg_sq"].sqrt() + 1e-8)).abs().mean()


if __name__ == "__main__":
    raise SystemExit(main())
