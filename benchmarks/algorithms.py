"""SGD (momentum), RMSprop, Adam/AdamW, NAdam/RAdam/Adamax, Adafactor, Lion, AdEMAMix, Schedule-Free
AdamW, StableAdamW, ADOPT and cautious AdamW steps: adamkit vs torch.optim (those torch lacks
vs their peers: Lion vs lion-pytorch and timm, AdEMAMix vs bitsandbytes and pytorch_optimizer,
Schedule-Free vs schedulefree, StableAdamW vs torch-optimi, ADOPT vs the authors' and timm,
cautious AdamW vs timm's ``caution=True``), interleaved.

``adamkit bench`` times Adam, whose targets the fused CPU kernels were built for; this
script checks the other algorithms' fused kernels on the same workloads ((b) the 145-tensor
transformer, (c) the 4-tensor MLP), and every algorithm on (d) 10,000 one-element tensors,
where only the per-tensor cost counts. Prints a table and writes JSON. "torch" in the columns
means the algorithm's peer: torch.optim's class, or for those torch lacks the fastest of the
peers found installed (``requirements-peers.txt``).

    .venv/bin/python benchmarks/algorithms.py [--rounds 9] [--json algorithms.json]
        [--workload c-tiny-mlp-50k ...] [--algorithm AdEMAMix ...]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import statistics
import sys
import types
from pathlib import Path

import torch

import adamkit
from adamkit.bench import _memory_limit_step, interleaved, mean_seconds, workload_shapes

WORKLOADS = ["c-tiny-mlp-50k", "b-transformer-54M", "d-10k-one-element"]
# Algorithms that move Adam's bytes (read p, g and two state tensors, write p and the two):
# their ceiling is the memory-limit loop of ``adamkit bench`` (Schedule-Free's z and v too).
TWO_STATE_SLOTS = {
    "Adam", "AdamW", "NAdam", "RAdam", "Adamax", "ScheduleFreeAdamW", "StableAdamW", "ADOPT",
    "cautious AdamW",
}  # fmt: skip
ALGORITHMS = {
    # name: (adamkit class, torch class, hyperparameters, torch has a fused kernel)
    "SGD momentum": (adamkit.SGD, torch.optim.SGD, {"lr": 0.01, "momentum": 0.9}, True),
    "RMSprop": (adamkit.RMSprop, torch.optim.RMSprop, {"lr": 0.01}, False),
    "AdamW": (adamkit.AdamW, torch.optim.AdamW, {}, True),
    "Adam": (adamkit.Adam, torch.optim.Adam, {}, True),
    # The Adam family on the algorithm specs (torch has no fused kernel for them).
    "NAdam": (adamkit.NAdam, torch.optim.NAdam, {}, False),
    "RAdam": (adamkit.RAdam, torch.optim.RAdam, {}, False),
    "Adamax": (adamkit.Adamax, torch.optim.Adamax, {}, False),
    # Its own kernel (factored second moment; reads the param twice, the gradient 3 times).
    "Adafactor": (adamkit.Adafactor, torch.optim.Adafactor, {}, False),
    # Not in torch.optim: its peers instead (below), at lion-pytorch's default lr.
    "Lion": (adamkit.Lion, None, {"lr": 1e-4}, False),
    "AdEMAMix": (adamkit.AdEMAMix, None, {}, False),
    "ScheduleFreeAdamW": (adamkit.ScheduleFreeAdamW, None, {}, False),
    "StableAdamW": (adamkit.StableAdamW, None, {"lr": 1e-3}, False),
    "ADOPT": (adamkit.ADOPT, None, {}, False),
    "cautious AdamW": (adamkit.AdamW, None, {"cautious": True}, False),
}


def _timm_module(name: str) -> types.ModuleType:
    """``timm.optim.<name>`` without timm/__init__ (it needs a torchvision matching torch)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        raise ImportError("timm is not installed")
    package = "_bench_timm_optim"
    if package not in sys.modules:
        stub = types.ModuleType(package)
        stub.__path__ = [str(Path(spec.origin).parent / "optim")]
        sys.modules[package] = stub
    return importlib.import_module(f"{package}.{name}")


def _lion_peers(hyper: dict) -> dict:
    """The installed Lion peers' steps makers: lion-pytorch (one kernel) and timm (for-loop
    and foreach)."""
    makers = {}
    try:
        from lion_pytorch import Lion

        makers["lion-pytorch"] = lambda ps: Lion(ps, **hyper)
    except ImportError:
        pass
    try:
        timm_lion = _timm_module("lion").Lion
        makers["timm"] = lambda ps: timm_lion(ps, **hyper, foreach=False)
        makers["timm foreach"] = lambda ps: timm_lion(ps, **hyper, foreach=True)
    except ImportError:
        pass
    return makers


def _ademamix_peers(hyper: dict) -> dict:
    """The installed AdEMAMix peers' step makers, at bitsandbytes' defaults: bitsandbytes
    (32-bit state; its CPU kernel) and pytorch_optimizer (for-loop and foreach; decoupled
    decay as bitsandbytes)."""
    makers = {}
    try:
        from bitsandbytes.optim import AdEMAMix

        makers["bitsandbytes"] = lambda ps: AdEMAMix(ps, **hyper, optim_bits=32)
    except ImportError:
        pass
    try:
        from pytorch_optimizer import AdEMAMix as PoAdEMAMix

        po = {"weight_decay": 1e-2, "weight_decouple": True, **hyper}
        makers["pytorch_optimizer"] = lambda ps: PoAdEMAMix(ps, **po, foreach=False)
        makers["pytorch_optimizer foreach"] = lambda ps: PoAdEMAMix(ps, **po, foreach=True)
    except ImportError:
        pass
    return makers


def _schedule_free_peers(hyper: dict) -> dict:
    """schedulefree's AdamWScheduleFree (for-loop and foreach; put in train mode by
    :func:`_steps`, as adamkit's)."""
    try:
        from schedulefree import AdamWScheduleFree
    except ImportError:
        return {}
    return {
        "schedulefree": lambda ps: AdamWScheduleFree(ps, **hyper, foreach=False),
        "schedulefree foreach": lambda ps: AdamWScheduleFree(ps, **hyper, foreach=True),
    }


def _stable_adamw_peers(hyper: dict) -> dict:
    """torch-optimi's StableAdamW (for-loop and foreach; its triton path needs CUDA)."""
    try:
        from optimi import StableAdamW
    except ImportError:
        return {}
    return {
        "optimi": lambda ps: StableAdamW(ps, **hyper, foreach=False),
        "optimi foreach": lambda ps: StableAdamW(ps, **hyper, foreach=True),
    }


def _adopt_peers(hyper: dict) -> dict:
    """The authors' ADOPT (for-loop and foreach) and timm's Adopt at the authors' clip."""
    makers = {}
    try:
        from adopt import ADOPT

        makers["authors"] = lambda ps: ADOPT(ps, **hyper, foreach=False)
        makers["authors foreach"] = lambda ps: ADOPT(ps, **hyper, foreach=True)
    except ImportError:
        pass
    try:
        timm_adopt = _timm_module("adopt").Adopt
        makers["timm"] = lambda ps: timm_adopt(ps, **hyper, clip_exp=0.25, foreach=False)
        makers["timm foreach"] = lambda ps: timm_adopt(ps, **hyper, clip_exp=0.25, foreach=True)
    except ImportError:
        pass
    return makers


def _cautious_adamw_peers(hyper: dict) -> dict:
    """timm's AdamW with ``caution=True`` (for-loop and foreach): its ``cadamw``."""
    try:
        timm_adamw = _timm_module("adamw").AdamWLegacy
    except ImportError:
        return {}
    return {
        "timm": lambda ps: timm_adamw(ps, caution=True, foreach=False),
        "timm foreach": lambda ps: timm_adamw(ps, caution=True, foreach=True),
    }


# The peers of each algorithm torch.optim lacks.
PEERS = {
    "StableAdamW": _stable_adamw_peers,
    "ADOPT": _adopt_peers,
    "cautious AdamW": _cautious_adamw_peers,
    "Lion": _lion_peers,
    "AdEMAMix": _ademamix_peers,
    "ScheduleFreeAdamW": _schedule_free_peers,
}


def _steps(workload: str, algorithm: str) -> dict:
    ours, theirs, hyper, has_fused = ALGORITHMS[algorithm]
    gen = torch.Generator().manual_seed(0)
    shapes = workload_shapes(workload)
    init = [torch.randn(s, generator=gen) for s in shapes]
    grads = [torch.randn(s, generator=gen) * 1e-2 for s in shapes]
    makers = {"adamkit default": lambda ps: ours(ps, **hyper)}
    if theirs is None:  # no torch.optim class: every peer installed
        peers = PEERS[algorithm](hyper)
        makers.update({f"peer {name}": make for name, make in peers.items()})
    else:
        makers["torch default"] = lambda ps: theirs(ps, **hyper)
        makers["torch foreach"] = lambda ps: theirs(ps, **hyper, foreach=True)
    if has_fused:
        makers["torch fused"] = lambda ps: theirs(ps, **hyper, fused=True)
    steps = {}
    if algorithm in TWO_STATE_SLOTS:
        states = [(torch.zeros(s), torch.zeros(s)) for s in shapes]
        plain = [t.clone() for t in init]
        steps["memory-limit"] = lambda: _memory_limit_step(plain, grads, states)
    for name, make in makers.items():
        params = [torch.nn.Parameter(t.clone()) for t in init]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt = make(params)
        getattr(opt, "train", lambda: None)()  # (Schedule-Free starts in eval mode)
        steps[name] = opt.step
        steps[name]()  # warm-up: state, kernel cache load
    return steps


def measure(workload: str, algorithm: str, rounds: int) -> list[dict]:
    steps = _steps(workload, algorithm)
    n_params = sum(torch.Size(s).numel() for s in workload_shapes(workload))
    # Samples of ~20 ms or more, as adamkit bench; a tensor costs about as much as 1,000 elements.
    inner = max(1, int(2e7 // (n_params + 1000 * len(workload_shapes(workload)))))
    samples = interleaved(steps, rounds, mean_seconds(inner))
    medians = {name: statistics.median(values) * 1e6 for name, values in samples.items()}
    peers = {name: us for name, us in medians.items() if name.startswith(("torch", "peer"))}
    fastest_torch = min(peers.values())
    default = medians.get("torch default", next(iter(peers.values())))  # a peer's only kernel
    limit = medians.get("memory-limit")
    return [
        {
            "workload": workload,
            "algorithm": algorithm,
            "contender": name,
            "median_us": us,
            "ratio_to_torch_default": default / us,
            "ratio_to_fastest_torch": fastest_torch / us,
            "share_of_memory_limit": limit / us if limit else None,
        }
        for name, us in medians.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--workload", action="append", choices=WORKLOADS)
    parser.add_argument("--algorithm", action="append", choices=list(ALGORITHMS))
    parser.add_argument("--json", default="algorithms.json")
    args = parser.parse_args(argv)
    rows = [
        row
        for workload in args.workload or WORKLOADS
        for algorithm in args.algorithm or ALGORITHMS
        for row in measure(workload, algorithm, args.rounds)
    ]
    print(
        f"{'workload':18} {'algorithm':17} {'contender':26} {'median us':>10} "
        f"{'x torch default':>16} {'x fastest torch':>16} {'% ceiling':>10}"
    )
    for row in rows:
        share = row["share_of_memory_limit"]
        print(
            f"{row['workload']:18} {row['algorithm']:17} {row['contender']:26} "
            f"{row['median_us']:>10.1f} {row['ratio_to_torch_default']:>15.2f}x "
            f"{row['ratio_to_fastest_torch']:>15.2f}x "
            + (f"{share:>9.0%}" if share else f"{'':>10}")
        )
    with open(args.json, "w") as f:
        json.dump({"torch_threads": torch.get_num_threads(), "rows": rows}, f, indent=2)
    print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
