"""Low-memory Adam's training quality: the digits MLP and a byte-level transformer language
model on the standard library's own sources (benchmarks/stdlib_lm.py), each trained with
fp32, bf16 and 8-bit state from the same seeds; final loss per seed, and each precision's
mean final loss relative to fp32's. Also bfloat16 params (no float32 master copy) with each
``param_rounding`` at a small learning rate.

``--algorithm NAME`` (repeatable) runs the same two models with the Adam family's variants
instead (each against its own fp32 state; learning rates in ``VARIANTS``).

    .venv/bin/python benchmarks/low_memory_quality.py [--seeds 3] [--epochs 40] [--lm-steps 1000]
        [--algorithm AdEMAMix ...]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics

import torch
from sklearn.datasets import load_digits

import adamkit
import stdlib_lm  # beside this script


def _data():
    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    return x[:1400], y[:1400], x[1400:], y[1400:]


PRECISIONS = {"fp32": {}, "bf16": {"state_precision": "bf16"}, "8bit": {"state_precision": "8bit"}}
# name: (class, digits lr, language-model lr, the state precisions it takes). Lion at a tenth
# (digits) and ~a seventh (the language model) of Adam's, as its authors advise; Schedule-Free
# refuses 8-bit state (its z is the parameter's own scale).
VARIANTS = {
    "AdEMAMix": (adamkit.AdEMAMix, 1e-3, 2e-3, ("fp32", "bf16", "8bit")),
    "Lion": (adamkit.Lion, 1e-4, 3e-4, ("fp32", "bf16", "8bit")),
    "ADOPT": (adamkit.ADOPT, 1e-3, 2e-3, ("fp32", "bf16", "8bit")),
    "StableAdamW": (adamkit.StableAdamW, 1e-3, 2e-3, ("fp32", "bf16", "8bit")),
    "cautious AdamW": (
        functools.partial(adamkit.AdamW, cautious=True),
        1e-3,
        2e-3,
        ("fp32", "bf16", "8bit"),
    ),
    "ScheduleFreeAdamW": (adamkit.ScheduleFreeAdamW, 1e-3, 2e-3, ("fp32", "bf16")),
}


def train(
    seed: int, epochs: int, dtype=torch.float32, lr=1e-3, optimizer=adamkit.Adam, **options
) -> tuple[float, float]:
    x, y, x_test, y_test = _data()
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    ).to(dtype)  # fmt: skip
    opt = optimizer(model.parameters(), lr=lr, **options)
    modes = hasattr(opt, "eval") and hasattr(opt, "train")  # (Schedule-Free's y and x)
    if modes:
        opt.train()
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=order).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx].to(dtype)).float(), y[idx]).backward()
            opt.step()
    if modes:
        opt.eval()
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(x.to(dtype)).float(), y).item()
        accuracy = (model(x_test.to(dtype)).argmax(1) == y_test).float().mean().item()
    return loss, accuracy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--lm-steps", type=int, default=1000, help="0 skips the language model")
    parser.add_argument("--json", default="low_memory_quality.json")
    parser.add_argument("--algorithm", action="append", choices=list(VARIANTS))
    args = parser.parse_args(argv)
    if args.algorithm:
        return _variants(args)
    results: dict[str, list[tuple[float, float]]] = {}
    runs = PRECISIONS
    for name, options in runs.items():
        results[name] = [train(s, args.epochs, **options) for s in range(args.seeds)]
    _print_digits(results)
    language_model = {}
    if args.lm_steps:
        language_model = {
            name: [stdlib_lm.train(s, args.lm_steps, **options) for s in range(args.seeds)]
            for name, options in runs.items()
        }
        _print_lm(language_model, args.lm_steps)
    half = {
        r: train(0, 10, torch.bfloat16, 1e-5, param_rounding=r)
        for r in ("nearest", "stochastic", "kahan")
    }
    print("bfloat16 params, lr 1e-5, 10 epochs: final loss",
          ", ".join(f"{r} {loss:.4f}" for r, (loss, _) in half.items()))  # fmt: skip
    with open(args.json, "w") as f:
        json.dump(
            {"digits": results, "stdlib_lm": language_model, "bf16_params": half}, f, indent=2
        )
    return 0


def _variants(args: argparse.Namespace) -> int:
    """Each variant's two models in each state precision it takes, against its own fp32."""
    saved = {}
    for algorithm in args.algorithm:
        cls, digits_lr, lm_lr, precisions = VARIANTS[algorithm]
        runs = {name: PRECISIONS[name] for name in precisions}
        print(f"\n== {algorithm}: digits MLP, lr {digits_lr}, {args.epochs} epochs")
        digits = {
            name: [train(s, args.epochs, lr=digits_lr, optimizer=cls, **options)
                   for s in range(args.seeds)]
            for name, options in runs.items()
        }  # fmt: skip
        _print_digits(digits)
        language_model = {}
        if args.lm_steps:
            language_model = {
                name: [stdlib_lm.train(s, args.lm_steps, lm_lr, cls, **options)
                       for s in range(args.seeds)]
                for name, options in runs.items()
            }  # fmt: skip
            _print_lm(language_model, args.lm_steps, f"{algorithm}, lr {lm_lr}")
        saved[algorithm] = {"digits": digits, "stdlib_lm": language_model}
        with open(args.json, "w") as f:  # (after each: a long run keeps what it finished)
            json.dump({"variants": saved}, f, indent=2)
    return 0


def _print_digits(results: dict[str, list[tuple[float, float]]]) -> None:
    base = statistics.mean(loss for loss, _ in results["fp32"])
    print(f"{'state':6} {'final train loss per seed':34} {'vs fp32':>8} {'test accuracy':>14}")
    for name, rows in results.items():
        mean = statistics.mean(loss for loss, _ in rows)
        losses = " ".join(f"{loss:.5f}" for loss, _ in rows)
        accuracy = statistics.mean(a for _, a in rows)
        print(f"{name:6} {losses:34} {mean / base - 1:>+7.1%} {accuracy:>14.3f}")


def _print_lm(results: dict[str, list[dict]], steps: int, optimizer: str = "AdamW") -> None:
    print(
        f"\nbyte-level transformer on stdlib sources, {steps} steps ({optimizer}, warmup + cosine)"
    )
    print(
        f"{'state':6} {'final train loss per seed':28} {'vs fp32':>8}"
        f" {'held-out':>9} {'vs fp32':>8}"
    )
    base = {key: statistics.mean(r[key] for r in results["fp32"]) for key in ("final", "held_out")}
    for name, rows in results.items():
        final = statistics.mean(r["final"] for r in rows)
        held = statistics.mean(r["held_out"] for r in rows)
        losses = " ".join(f"{r['final']:.4f}" for r in rows)
        print(
            f"{name:6} {losses:28} {final / base['final'] - 1:>+7.2%}"
            f" {held:>9.4f} {held / base['held_out'] - 1:>+7.2%}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
