"""SGD (momentum), RMSprop, Adam/AdamW, NAdam/RAdam/Adamax, Adafactor, Lion, AdEMAMix, Schedule-Free
AdamW, StableAdamW, ADOPT and cautious AdamW steps: adamkit vs torch.optim (those torch lacks
vs their peers: Lion vs lion-pytorch and timm, AdEMAMix vs bitsandbytes and pytorch_optimizer,
Schedule-Free vs schedulefree, StableAdamW vs torch-optimi, ADOPT vs the authors' and timm,
cautious AdamW vs timm's ``caution=True``), interleaved.

``adamkit bench --algorithm NAME`` times one algorithm against torch.optim's namesake
(:mod:`adamkit.bench_algorithms`, whose table and timing this script uses); this script adds
the peers of the algorithms torch lacks, which adamkit does not depend on. Workloads: (b) the
145-tensor transformer, (c) the 4-tensor MLP, and (d) 10,000 one-element tensors, where only
the per-tensor cost counts. Prints a table and writes JSON. "torch" in the columns means the
algorithm's peer: torch.optim's class, or for those torch lacks the fastest of the peers found
installed (``requirements-peers.txt``).

    .venv/bin/python benchmarks/algorithms.py [--rounds 9] [--json algorithms.json]
        [--workload c-tiny-mlp-50k ...] [--algorithm AdEMAMix ...]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import types
from pathlib import Path

import torch

from adamkit.bench_algorithms import ALGORITHMS, WORKLOADS, format_rows, measure


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


def _peers(algorithm: str) -> dict | None:
    """The peers installed for an algorithm torch.optim lacks (None for the others)."""
    if algorithm not in PEERS:
        return None
    return PEERS[algorithm](ALGORITHMS[algorithm][2])


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
        for row in measure(workload, algorithm, args.rounds, _peers(algorithm))
    ]
    print(format_rows(rows))
    with open(args.json, "w") as f:
        json.dump({"torch_threads": torch.get_num_threads(), "rows": rows}, f, indent=2)
    print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
