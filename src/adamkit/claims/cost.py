"""The cost claims: time of one step, and bytes of state per parameter, of every optimizer the
claims compare (Adam's variants beside the four rules)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import demo
from ..viz.plot import _pyplot
from .claim import Claim
from .claim import judged as _judged
from .optimizers import ALL, COLORS, VARIANTS, listed, make


def _stepped(name: str, model: nn.Module) -> torch.optim.Optimizer:
    """Optimizer ``name`` over copies of ``model``'s parameters, after one step (its state
    exists and its kernel is loaded)."""
    gen = torch.Generator().manual_seed(0)
    params = [nn.Parameter(p.detach().clone()) for p in model.parameters()]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-2
    opt = make(name, params, 1e-3)
    opt.step()
    return opt


def _bars(
    values: dict[str, float],
    ylabel: str,
    title: str,
    path: Path,
    upper: dict[str, float] | None = None,
) -> None:
    """A bar per optimizer (a variant's hatched, as its line is dashed elsewhere); ``upper``:
    a whisker from each bar's top up to that value."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4), constrained_layout=True)
    yerr = None
    if upper is not None:
        yerr = [[0.0] * len(values), [upper[n] - v for n, v in values.items()]]
    bars = ax.bar(list(values), list(values.values()), color=[COLORS[n] for n in values], yerr=yerr)
    for bar, name in zip(bars, values, strict=True):
        if name in VARIANTS:
            bar.set(hatch="//", edgecolor="white")
    ax.set(ylabel=ylabel)
    ax.tick_params(axis="x", labelsize=8)
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right")  # eleven names side by side
    ax.set_title(title, fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# The compute claim holds when an Adam step costs at most this many SGD steps.
COMPUTE_LIMIT = 3.0


def compute_verdict(samples: dict[str, list[float]], limit: float = COMPUTE_LIMIT) -> str:
    """The compute claim's verdict from interleaved samples of seconds per step.

    A busy machine only ever adds time to a sample, so each optimizer's step time is its
    fastest sample, and the lower quartile says how far from that the samples lie. The
    Adam/SGD ratio of the fastest samples decides; but when the ratio could lie on either side
    of ``limit`` (fastest Adam over SGD's lower quartile below it, Adam's lower quartile over
    the fastest SGD above it), the samples cannot tell, and the verdict says "Inconclusive".
    """
    best = {name: min(values) * 1e6 for name, values in samples.items()}  # µs
    quartile = {name: float(np.quantile(values, 0.25)) * 1e6 for name, values in samples.items()}
    ratio = best["Adam"] / best["SGD"]
    low, high = best["Adam"] / quartile["SGD"], quartile["Adam"] / best["SGD"]
    spread = (
        f"fastest of {len(samples['Adam'])} interleaved samples each; lower quartiles: Adam "
        f"{quartile['Adam']:.1f} µs, SGD {quartile['SGD']:.1f} µs"
    )
    others = ", ".join(f"{n} {best[n]:.1f} µs" for n in best if n not in ("Adam", "SGD"))
    if low < limit < high:
        return (
            "Inconclusive: step times varied too much on this machine to decide; Adam's step "
            f"lies between {low:.2f}× and {high:.2f}× an SGD step, around the {limit:g}× "
            f"limit (Adam {best['Adam']:.1f} µs, SGD {best['SGD']:.1f} µs; {others}; "
            f"{spread}). Rerun on a quieter machine."
        )
    return _judged(limit - ratio) + (
        f"an Adam step takes {best['Adam']:.1f} µs, {ratio:.2f}× an SGD step "
        f"({best['SGD']:.1f} µs); {others} ({spread})."
    )


def compute_cost(out: Path, quick: bool) -> Claim:
    from ..bench import interleaved, mean_seconds

    model = demo.make_mlp(0)
    steps = {}
    for n in ALL:
        steps[n] = _stepped(n, model).step  # state and kernel ready
    # Many short samples, the optimizers in turn: a busy machine's stalls (numba's threads
    # waiting for a core) land on some samples; the fastest ones show the step's own cost.
    rounds, inner = (25, 20) if quick else (60, 50)
    samples = interleaved(steps, rounds, mean_seconds(inner))
    n_params = sum(p.numel() for p in model.parameters())
    _bars(
        {n: min(v) * 1e6 for n, v in samples.items()},
        "µs per optimizer step",
        f"One step on the digits MLP ({n_params:,} parameters), adamkit's default kernels:\n"
        f"fastest of {rounds} samples, whisker to their lower quartile",
        out / "compute.png",
        upper={n: float(np.quantile(v, 0.25)) * 1e6 for n, v in samples.items()},
    )
    return Claim(
        "Computationally efficient",
        "Adam costs little more per step than SGD: a few element-wise operations.",
        f"Time of one optimizer step (adamkit's default fused kernels) on the digits MLP's "
        f"parameters, Adam's variants (hatched) beside the four rules: {rounds} samples of "
        f"{inner} steps per optimizer, the optimizers taking turns; each optimizer's fastest "
        "sample, with the lower quartile as its spread. "
        f"Supported when an Adam step costs at most {COMPUTE_LIMIT:g} SGD steps; inconclusive "
        "when the spread leaves both sides open.",
        compute_verdict(samples),
        "compute.png",
    )


def memory(out: Path, quick: bool) -> Claim:
    model = demo.make_mlp(0)
    n_params = sum(p.numel() for p in model.parameters())
    per_param, numbers = {}, {}
    for n in ALL:
        opt = _stepped(n, model)
        slots = [
            t
            for s in opt.state.values()
            for key, t in s.items()
            if torch.is_tensor(t) and key != "step"
        ]
        per_param[n] = sum(t.numel() * t.element_size() for t in slots) / n_params
        numbers[n] = sum(t.numel() for t in slots)
    _bars(
        per_param,
        "optimizer state, bytes per parameter (float32)",
        "State the optimizer keeps besides the parameters",
        out / "memory.png",
    )
    return Claim(
        "Low memory requirement",
        "Adam keeps two numbers per parameter (m and v), no second-order matrices.",
        "Bytes of the optimizer's state tensors per parameter after one step (step counters "
        "excluded: one scalar per tensor), Adam's variants (hatched) beside the four rules.",
        _judged(8.5 - per_param["Adam"])
        + f"Adam keeps {per_param['Adam']:.1f} bytes per float32 parameter, Momentum "
        f"{per_param['Momentum']:.1f}, RMSProp {per_param['RMSProp']:.1f}, SGD "
        f"{per_param['SGD']:.1f}; a second-order method would keep O(n²). Variants: "
        f"{listed(per_param, VARIANTS, '.1f')} (AdEMAMix's slow EMA is a third slot, Lion "
        "keeps its momentum alone, Schedule-Free z and v, StableAdamW and Cautious Adam Adam's "
        "m and v; Adafactor no first moment and a factored second one, a row and a column "
        f"statistic per weight matrix and a full vector per bias: {numbers['Adafactor']:,} "
        f"numbers for {n_params:,} parameters).",
        "memory.png",
    )
