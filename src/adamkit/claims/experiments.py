"""The experiments behind the claims report, each small enough for two CPU cores.

``quick=True`` shrinks every experiment to a few seconds (the tests use it); the numbers are
then rougher, and the report says it was a quick run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import demo, optim
from ..diagnostics import Recorder
from ..viz.plot import COLORS, _pyplot
from ..viz.trajectory import make_optimizer

NAMES = ("SGD", "Momentum", "RMSProp", "Adam")


@dataclass
class Claim:
    """One claim, what was run, and what it showed."""

    title: str
    claim: str
    method: str
    verdict: str  # one line, with the measured number
    picture: str  # file name beside report.html


def _judged(margin: float) -> str:
    """The verdict's first words: the measured margin in the claim's favour (> 0), against
    it (< 0), or none."""
    if margin > 0:
        return "Supported: "
    if margin < 0:
        return "Not supported here: "
    return "A tie: "


def _make(name: str, params, lr: float) -> torch.optim.Optimizer:
    return make_optimizer(name, list(params), lr, (0.9, 0.999))


def _train_digits(name: str, lr: float, epochs: int, data, seed: int = 0) -> float:
    """Test accuracy of the digits MLP after ``epochs`` epochs (0 if it diverged)."""
    model = demo.make_mlp(seed)
    opt = _make(name, model.parameters(), lr)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in demo.batch_orders(len(data.y_train), 64, epochs, seed):
        for idx in epoch:
            opt.zero_grad()
            loss_fn(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
    with torch.no_grad():
        logits = model(data.x_test)
        if not torch.isfinite(logits).all():
            return 0.0
        return (logits.argmax(dim=1) == data.y_test).float().mean().item()


GOOD_ACCURACY = 0.9


def lr_sweep(out: Path, quick: bool) -> Claim:
    data = demo.load_digits(0)
    lrs = np.logspace(-3, 0, 4) if quick else np.logspace(-4, 0, 13)
    epochs = 2 if quick else 10
    accuracy = {n: [_train_digits(n, float(lr), epochs, data) for lr in lrs] for n in NAMES}
    step = float(np.log10(lrs[1] / lrs[0]))
    # A learning rate is good when the test accuracy reaches 90%: the width of the range is
    # the number of good grid points times the grid's spacing, in decades.
    width = {n: step * sum(a >= GOOD_ACCURACY for a in accuracy[n]) for n in NAMES}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for n in NAMES:
        label = f"{n} ({width[n]:.2f} decades)"
        ax.plot(lrs, accuracy[n], "-o", color=COLORS[n], label=label)
    ax.axhline(GOOD_ACCURACY, color="0.4", linestyle=":", label="good: 90% test accuracy")
    ax.set(xscale="log", xlabel="learning rate α", ylim=(0, 1))
    ax.set_ylabel(f"test accuracy after {epochs} epochs")
    ax.set_title("Digits MLP: accuracy against the learning rate")
    ax.legend(fontsize=8)
    fig.savefig(out / "lr_sweep.png", dpi=100)
    plt.close(fig)
    others = max(width["SGD"], width["Momentum"])  # the claim's comparison
    return Claim(
        "Less sensitive to the learning rate",
        "Adam works over a wider range of initial learning rates than SGD or momentum.",
        f"The digits MLP (64-64-10) trained {epochs} epochs at {len(lrs)} learning rates from "
        f"{lrs[0]:g} to {lrs[-1]:g} ({1 / step:.0f} per decade); a learning rate is good when "
        "the test accuracy reaches 90%.",
        _judged(width["Adam"] - others)
        + f"Adam's good range spans {width['Adam']:.2f} decades against {others:.2f} for the "
        f"better of SGD ({width['SGD']:.2f}) and Momentum ({width['Momentum']:.2f}); RMSProp "
        f"{width['RMSProp']:.2f}.",
        "lr_sweep.png",
    )


def sparse_gradients(out: Path, quick: bool) -> Claim:
    gen = torch.Generator().manual_seed(0)
    vocab, per_sample = 200, 5
    freq = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64) ** 1.1  # Zipf: many rare tokens
    true = torch.randn(vocab, generator=gen)
    steps = 300 if quick else 2000
    rare = torch.arange(vocab // 2, vocab)  # the less frequent half
    errors = {}
    curves = {}
    for n in ("SGD", "Momentum", "Adam"):
        torch.manual_seed(1)
        bag = nn.EmbeddingBag(vocab, 1, mode="sum")
        nn.init.zeros_(bag.weight)
        opt = _make(n, bag.parameters(), 0.05 if n == "Adam" else 0.02)
        sample_gen = torch.Generator().manual_seed(2)
        curve = []
        for t in range(steps):
            tokens = torch.multinomial(
                freq, 32 * per_sample, replacement=True, generator=sample_gen
            )
            tokens = tokens.view(32, per_sample)
            y = true[tokens].sum(dim=1, keepdim=True).float()
            opt.zero_grad()
            nn.functional.mse_loss(bag(tokens), y).backward()
            opt.step()
            if t % max(1, steps // 50) == 0:
                err = (bag.weight.detach().double()[rare, 0] - true[rare]).square().mean().sqrt()
                curve.append((t, err.item()))
        errors[n] = curve[-1][1]
        curves[n] = curve
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for n, curve in curves.items():
        ax.plot(*zip(*curve, strict=True), color=COLORS[n], label=n)
    ax.set(xlabel="step", ylabel="RMS error of the rare tokens' weights", yscale="log")
    ax.set_title("Linear model over Zipf-distributed tokens (EmbeddingBag)")
    ax.legend()
    fig.savefig(out / "sparse.png", dpi=100)
    plt.close(fig)
    ratio = min(errors["SGD"], errors["Momentum"]) / errors["Adam"]
    return Claim(
        "Good with sparse gradients",
        "Per-parameter step sizes let rarely seen features learn as fast as frequent ones.",
        f"A linear model over {vocab} tokens drawn with Zipf frequencies, {steps} steps; the "
        "error is measured on the weights of the less frequent half of the tokens.",
        _judged(ratio - 1)
        + f"rare-token weight error after {steps} steps: Adam {errors['Adam']:.3g}, SGD "
        f"{errors['SGD']:.3g}, Momentum {errors['Momentum']:.3g} ({ratio:.1f}× lower for Adam "
        "than the better of the two).",
        "sparse.png",
    )


def _track(name: str, lr: float, steps: int, scales: torch.Tensor) -> list[float]:
    """Distance to a moving optimum, step by step, for one optimizer and learning rate."""
    dims = scales.numel()
    gen = torch.Generator().manual_seed(0)  # the same noise for every optimizer
    x = torch.zeros(dims, dtype=torch.float64, requires_grad=True)
    opt = _make(name, [x], lr)
    errs = []
    for t in range(steps):
        target = 2 * torch.sin(torch.tensor(0.01 * t) + torch.arange(dims))  # it moves
        noise = 0.1 * torch.randn(dims, generator=gen, dtype=torch.float64)
        opt.zero_grad()
        (0.5 * (scales * (x - target) ** 2).sum() + (noise * x).sum()).backward()
        opt.step()
        error = (x.detach() - target).norm().item()
        errs.append(error if math.isfinite(error) else float("inf"))
    return errs


def non_stationary(out: Path, quick: bool) -> Claim:
    steps = 300 if quick else 2000
    scales = torch.logspace(-2, 0, 10, dtype=torch.float64)  # curvature over 2 decades
    lrs = np.logspace(-3, 0, 4 if quick else 7)
    tracking, best_lr, curves = {}, {}, {}
    for n in NAMES:  # each optimizer at its own best learning rate of the grid
        runs = {float(lr): _track(n, float(lr), steps, scales) for lr in lrs}
        scores = {lr: float(np.mean(errs[steps // 2 :])) for lr, errs in runs.items()}
        best_lr[n] = min(scores, key=scores.get)
        tracking[n], curves[n] = scores[best_lr[n]], runs[best_lr[n]]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for n in NAMES:
        label = f"{n}, α={best_lr[n]:.2g} ({tracking[n]:.3g})"
        ax.plot(curves[n], color=COLORS[n], label=label, linewidth=1)
    ax.set(xlabel="step", ylabel="distance to the moving optimum", yscale="log")
    ax.set_title("A moving quadratic optimum, curvatures over 2 decades")
    ax.legend(fontsize=8)
    fig.savefig(out / "non_stationary.png", dpi=100)
    plt.close(fig)
    best_other = min(v for n, v in tracking.items() if n != "Adam")
    return Claim(
        "Suited to non-stationary objectives",
        "The moving averages of m and v forget old gradients, so Adam follows a moving optimum.",
        f"A 10-D quadratic whose optimum moves along a circle, curvatures from 0.01 to 1, noisy "
        f"gradients, {steps} steps; each optimizer at its best of {len(lrs)} learning rates "
        "from 1e-3 to 1; tracking error = mean distance over the second half.",
        _judged(best_other - tracking["Adam"])
        + f"mean tracking error: Adam {tracking['Adam']:.3g}, best other {best_other:.3g} "
        f"(SGD {tracking['SGD']:.3g}, Momentum {tracking['Momentum']:.3g}, RMSProp "
        f"{tracking['RMSProp']:.3g}).",
        "non_stationary.png",
    )


def adaptivity(out: Path, quick: bool) -> Claim:
    data = demo.load_digits(0)
    model = demo.make_mlp(0)
    opt = optim.Adam(model.named_parameters(), lr=1e-3)
    recorder = Recorder(opt, every=5, per_param=True)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in demo.batch_orders(len(data.y_train), 64, 1 if quick else 3, 0):
        for idx in epoch:
            opt.zero_grad()
            loss_fn(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
    recorder.close()
    last = {row["label"]: row for row in recorder.rows}
    medians = {k: r["effective_lr.median"] for k, r in last.items()}
    spread = {k: r["effective_lr.p90"] / r["effective_lr.p10"] for k, r in last.items()}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    labels = list(last)
    for i, k in enumerate(labels):
        r = last[k]
        ax.plot(
            [i, i],
            [r["effective_lr.p10"], r["effective_lr.p90"]],
            color=COLORS["Adam"],
            linewidth=6,
            alpha=0.4,
        )
        ax.plot(i, r["effective_lr.median"], "o", color=COLORS["Adam"])
    ax.set_xticks(range(len(labels)), labels)
    ax.set(yscale="log", ylabel="effective lr α/(√v̂+ε): median and 10-90%")
    ax.set_title("Adam on the digits MLP: one α, many step sizes")
    fig.savefig(out / "adaptivity.png", dpi=100)
    plt.close(fig)
    between = max(medians.values()) / min(medians.values())
    return Claim(
        "Per-parameter adaptive step size",
        "Each parameter gets its own step size α/(√v̂+ε) from one α.",
        "Adam (α = 1e-3) on the digits MLP; the effective learning rate of every element, "
        "read from the optimizer state by adamkit.diagnostics at the end of training.",
        _judged(max(between, max(spread.values())) - 2)
        + f"median effective lr differs {between:.1f}× between layers; within a layer the "
        f"10th-90th percentile spread reaches {max(spread.values()):.1f}×.",
        "adaptivity.png",
    )


def _stepped(name: str, model: nn.Module) -> torch.optim.Optimizer:
    """Optimizer ``name`` over copies of ``model``'s parameters, after one step (its state
    exists and its kernel is loaded)."""
    gen = torch.Generator().manual_seed(0)
    params = [nn.Parameter(p.detach().clone()) for p in model.parameters()]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-2
    opt = _make(name, params, 1e-3)
    opt.step()
    return opt


def _bars(
    values: dict[str, float],
    ylabel: str,
    title: str,
    path: Path,
    upper: dict[str, float] | None = None,
) -> None:
    """A bar per optimizer; ``upper``: a whisker from each bar's top up to that value."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    yerr = None
    if upper is not None:
        yerr = [[0.0] * len(values), [upper[n] - v for n, v in values.items()]]
    ax.bar(list(values), list(values.values()), color=[COLORS[n] for n in values], yerr=yerr)
    ax.set(ylabel=ylabel)
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
    if low < limit < high:
        return (
            "Inconclusive: step times varied too much on this machine to decide; Adam's step "
            f"lies between {low:.2f}× and {high:.2f}× an SGD step, around the {limit:g}× "
            f"limit (Adam {best['Adam']:.1f} µs, SGD {best['SGD']:.1f} µs; {spread}). Rerun "
            "on a quieter machine."
        )
    others = ", ".join(f"{n} {best[n]:.1f} µs" for n in best if n not in ("Adam", "SGD"))
    return _judged(limit - ratio) + (
        f"an Adam step takes {best['Adam']:.1f} µs, {ratio:.2f}× an SGD step "
        f"({best['SGD']:.1f} µs); {others} ({spread})."
    )


def compute_cost(out: Path, quick: bool) -> Claim:
    from ..bench import interleaved, mean_seconds

    model = demo.make_mlp(0)
    steps = {}
    for n in NAMES:
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
        f"parameters: {rounds} samples of {inner} steps per optimizer, the optimizers taking "
        "turns; each optimizer's fastest sample, with the lower quartile as its spread. "
        f"Supported when an Adam step costs at most {COMPUTE_LIMIT:g} SGD steps; inconclusive "
        "when the spread leaves both sides open.",
        compute_verdict(samples),
        "compute.png",
    )


def memory(out: Path, quick: bool) -> Claim:
    model = demo.make_mlp(0)
    n_params = sum(p.numel() for p in model.parameters())
    per_param = {}
    for n in NAMES:
        opt = _stepped(n, model)
        nbytes = sum(
            t.numel() * t.element_size()
            for s in opt.state.values()
            for key, t in s.items()
            if torch.is_tensor(t) and key != "step"
        )
        per_param[n] = nbytes / n_params
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
        "excluded: one scalar per tensor).",
        _judged(8.5 - per_param["Adam"])
        + f"Adam keeps {per_param['Adam']:.1f} bytes per float32 parameter, Momentum "
        f"{per_param['Momentum']:.1f}, RMSProp {per_param['RMSProp']:.1f}, SGD "
        f"{per_param['SGD']:.1f}; a second-order method would keep O(n²).",
        "memory.png",
    )


EXPERIMENTS: dict[str, Callable[[Path, bool], Claim]] = {
    "lr_sweep": lr_sweep,
    "sparse": sparse_gradients,
    "non_stationary": non_stationary,
    "adaptivity": adaptivity,
    "compute": compute_cost,
    "memory": memory,
}


def run_all(out: Path, quick: bool, progress: bool = True) -> tuple[list[Claim], float]:
    from .._extras import progress as bar_of

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    claims = []
    with bar_of(EXPERIMENTS.items(), desc="claims", unit="experiment", disable=not progress) as bar:
        for name, experiment in bar:
            bar.set_postfix_str(name)
            claims.append(experiment(out, quick))
    return claims, time.perf_counter() - start
