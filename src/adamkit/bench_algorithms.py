"""``adamkit bench --algorithm NAME``: one algorithm's step, adamkit against torch.optim's
namesake (default, foreach, fused where torch has it), interleaved. For the algorithms torch
lacks, the baseline is adamkit's own torch-ops step (``foreach=True``), unless ``peers`` are
given: ``benchmarks/algorithms.py`` times them against their reference packages (lion-pytorch,
bitsandbytes, schedulefree, torch-optimi, timm), which adamkit does not depend on.

Workloads are :func:`adamkit.bench.workload_shapes`'; "memory-limit" (a loop that moves Adam's
28 bytes per parameter) is the ceiling of the algorithms that move as many.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping
from typing import Any

import torch

from . import optim
from .bench import _memory_limit_step, interleaved, mean_seconds, workload_shapes

WORKLOADS = ["c-tiny-mlp-50k", "b-transformer-54M", "d-10k-one-element"]
# name: (adamkit class, torch.optim class or None, hyperparameters, torch has a fused kernel)
ALGORITHMS: dict[str, tuple[type, type | None, dict[str, Any], bool]] = {
    "SGD momentum": (optim.SGD, torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}, True),
    "RMSprop": (optim.RMSprop, torch.optim.RMSprop, {"lr": 0.01}, False),
    "AdamW": (optim.AdamW, torch.optim.AdamW, {}, True),
    "Adam": (optim.Adam, torch.optim.Adam, {}, True),
    # The Adam family on the algorithm specs (torch has no fused kernel for them).
    "NAdam": (optim.NAdam, torch.optim.NAdam, {}, False),
    "RAdam": (optim.RAdam, torch.optim.RAdam, {}, False),
    "Adamax": (optim.Adamax, torch.optim.Adamax, {}, False),
    # Its own kernel (factored second moment; reads the param twice, the gradient 3 times).
    "Adafactor": (optim.Adafactor, getattr(torch.optim, "Adafactor", None), {}, False),
    # Not in torch.optim (lr: lion-pytorch's default and optimi's example).
    "Lion": (optim.Lion, None, {"lr": 1e-4}, False),
    "AdEMAMix": (optim.AdEMAMix, None, {}, False),
    "ScheduleFreeAdamW": (optim.ScheduleFreeAdamW, None, {}, False),
    "StableAdamW": (optim.StableAdamW, None, {"lr": 1e-3}, False),
    "ADOPT": (optim.ADOPT, None, {}, False),
    "cautious AdamW": (optim.AdamW, None, {"cautious": True}, False),
}
# Algorithms that move Adam's bytes (read p, g and two state tensors, write p and the two):
# their ceiling is the memory-limit loop (Schedule-Free's z and v too).
TWO_STATE_SLOTS = {
    "Adam", "AdamW", "NAdam", "RAdam", "Adamax", "ScheduleFreeAdamW", "StableAdamW", "ADOPT",
    "cautious AdamW",
}  # fmt: skip

Maker = Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]


def _makers(algorithm: str, peers: Mapping[str, Maker] | None) -> dict[str, Maker]:
    ours, theirs, hyper, has_fused = ALGORITHMS[algorithm]
    makers: dict[str, Maker] = {"adamkit default": lambda ps: ours(ps, **hyper)}
    if theirs is not None:
        makers["torch default"] = lambda ps: theirs(ps, **hyper)
        makers["torch foreach"] = lambda ps: theirs(ps, **hyper, foreach=True)
        if has_fused:
            makers["torch fused"] = lambda ps: theirs(ps, **hyper, fused=True)
    elif peers:
        makers.update({f"peer {name}": make for name, make in peers.items()})
    else:  # adamkit's torch-ops step: what the fused kernel saves
        makers["adamkit foreach"] = lambda ps: ours(ps, **hyper, foreach=True)
    return makers


def steps(
    workload: str, algorithm: str, peers: Mapping[str, Maker] | None = None
) -> dict[str, Callable[[], Any]]:
    """Each contender's step on ``workload``'s tensors (same params, grads), warmed up."""
    gen = torch.Generator().manual_seed(0)
    shapes = workload_shapes(workload)
    init = [torch.randn(s, generator=gen) for s in shapes]
    grads = [torch.randn(s, generator=gen) * 1e-2 for s in shapes]
    out: dict[str, Callable[[], Any]] = {}
    if algorithm in TWO_STATE_SLOTS:
        states = [(torch.zeros(s), torch.zeros(s)) for s in shapes]
        plain = [t.clone() for t in init]
        out["memory-limit"] = _memory_limit_step(plain, grads, states)
    for name, make in _makers(algorithm, peers).items():
        params = [torch.nn.Parameter(t.clone()) for t in init]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt = make(params)
        getattr(opt, "train", lambda: None)()  # (Schedule-Free starts in eval mode)
        out[name] = opt.step
        out[name]()  # warm-up: state, kernel cache load
    return out


def measure(
    workload: str, algorithm: str, rounds: int, peers: Mapping[str, Maker] | None = None
) -> list[dict[str, Any]]:
    """Median µs per step of each contender, with ratios to the baseline's default and to the
    fastest baseline (torch's kernels, the peers, or adamkit's torch-ops step)."""
    contenders = steps(workload, algorithm, peers)
    shapes = workload_shapes(workload)
    n_params = sum(torch.Size(s).numel() for s in shapes)
    # Samples of ~20 ms or more, as adamkit bench; a tensor costs about as much as 1,000 elements.
    inner = max(1, int(2e7 // (n_params + 1000 * len(shapes))))
    samples = interleaved(contenders, rounds, mean_seconds(inner))
    medians = {name: statistics.median(values) * 1e6 for name, values in samples.items()}
    baselines = {
        name: us
        for name, us in medians.items()
        if name.startswith(("torch", "peer")) or name == "adamkit foreach"
    }
    fastest = min(baselines.values())
    default = medians.get("torch default", next(iter(baselines.values())))
    limit = medians.get("memory-limit")
    return [
        {
            "workload": workload,
            "algorithm": algorithm,
            "contender": name,
            "median_us": us,
            "ratio_to_torch_default": default / us,
            "ratio_to_fastest_torch": fastest / us,
            "share_of_memory_limit": limit / us if limit else None,
        }
        for name, us in medians.items()
    ]


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The table: "torch" in the ratio columns is the baseline (torch.optim's namesake, the
    peers, or adamkit's torch-ops step for an algorithm torch lacks)."""
    lines = [
        f"{'workload':18} {'algorithm':17} {'contender':26} {'median us':>10} "
        f"{'x torch default':>16} {'x fastest torch':>16} {'% ceiling':>10}"
    ]
    for row in rows:
        share = row["share_of_memory_limit"]
        lines.append(
            f"{row['workload']:18} {row['algorithm']:17} {row['contender']:26} "
            f"{row['median_us']:>10.1f} {row['ratio_to_torch_default']:>15.2f}x "
            f"{row['ratio_to_fastest_torch']:>15.2f}x "
            + (f"{share:>9.0%}" if share else f"{'':>10}")
        )
    return "\n".join(lines)
