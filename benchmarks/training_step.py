"""One whole training iteration (zero_grad, forward, backward, step) with adamkit vs torch.

The optimizer benchmark (``adamkit bench``) times the step alone. This one checks that the
fused CPU kernel's thread pool does not slow the rest of training: MLPs on random data, the
contenders interleaved in rotating order. Prints a table and writes JSON.

    .venv/bin/python benchmarks/training_step.py [--rounds 15] [--json training-step.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

import adamkit
from adamkit.bench import interleaved, mean_seconds

MODELS = {"mlp-85k": (256, 128), "mlp-1.1M": (1024, 256)}  # name: (width, batch)
CONTENDERS = {
    "adamkit default": lambda params: adamkit.Adam(params),
    "torch fused": lambda params: torch.optim.Adam(params, fused=True),
    "torch default": lambda params: torch.optim.Adam(params),
}


def _mlp(width: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(64, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, width),
        torch.nn.ReLU(),
        torch.nn.Linear(width, 10),
    )


def measure(model_name: str, rounds: int, inner: int = 50) -> list[dict]:
    width, batch = MODELS[model_name]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 64, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    iterations = {}
    for name, make in CONTENDERS.items():
        torch.manual_seed(0)
        model = _mlp(width)
        optimizer = make(model.parameters())

        def iteration(model=model, optimizer=optimizer) -> None:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()

        iteration()  # warm-up: state, kernel compile or cache load
        iterations[name] = iteration
    samples = interleaved(iterations, rounds, mean_seconds(inner))
    n_params = sum(p.numel() for p in _mlp(width).parameters())
    medians = {name: statistics.median(values) * 1e6 for name, values in samples.items()}
    return [
        {
            "model": model_name,
            "params": n_params,
            "batch": batch,
            "contender": name,
            "median_us": us,
            "ratio_to_torch_fused": medians["torch fused"] / us,
        }
        for name, us in medians.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--inner", type=int, default=50, help="iterations per timed sample")
    parser.add_argument("--json", default="training-step.json")
    args = parser.parse_args(argv)
    rows = [row for model in MODELS for row in measure(model, args.rounds, args.inner)]
    print(f"{'model':10} {'params':>9} {'contender':16} {'median us':>10} {'x torch fused':>14}")
    for row in rows:
        print(
            f"{row['model']:10} {row['params']:>9} {row['contender']:16} "
            f"{row['median_us']:>10.1f} {row['ratio_to_torch_fused']:>13.2f}x"
        )
    with open(args.json, "w") as f:
        json.dump({"torch_threads": torch.get_num_threads(), "rows": rows}, f, indent=2)
    print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
