"""The main job: SGD, Momentum, RMSProp and Adam train the same MLP on scikit-learn's digits.

Every run starts from the same initial weights and sees the same minibatches in the same
order, so the differences in the table come from the update rules and learning rates alone.
Each optimizer runs twice: at a learning rate tuned for this problem, and at torch.optim's
default (what a user gets without choosing one), which is where Adam's claim of being less
sensitive to the learning rate shows. Needs scikit-learn (``pip install 'adamkit[demo]'``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._extras import progress as progress_bar
from ._extras import require
from .diagnostics import Recorder
from .optim import SGD, Adam, RMSprop

OptimizerFactory = Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]

# name: (factory taking params and lr, tuned lr). The tuned learning rates are the best test
# accuracy of each optimizer on a grid of 9 from 1e-4 to 1 (1, 3 per decade) at the demo's
# settings (20 epochs, batch 64, seed 0); `adamkit demo --lr NAME=LR` changes one.
OPTIMIZERS: dict[str, tuple[OptimizerFactory, float]] = {
    "SGD": (lambda params, lr: SGD(params, lr=lr), 0.3),
    "Momentum": (lambda params, lr: SGD(params, lr=lr, momentum=0.9), 0.03),
    "RMSProp": (lambda params, lr: RMSprop(params, lr=lr), 3e-3),
    "Adam": (lambda params, lr: Adam(params, lr=lr), 3e-3),
}
# torch.optim's default learning rates (what SGD(params), RMSprop(params), Adam(params) use).
DEFAULT_LRS: dict[str, float] = {"SGD": 1e-3, "Momentum": 1e-3, "RMSProp": 1e-2, "Adam": 1e-3}
SETTINGS = ("tuned", "default")


@dataclass
class Digits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@dataclass
class RunResult:
    name: str
    lr: float
    train_loss: float
    test_accuracy: float
    seconds: float  # training time, the first step's one-time cost left out
    epoch_losses: list[float] = field(default_factory=list)
    # Per-parameter diagnostics rows (adamkit.diagnostics.Recorder), when recorded.
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    setting: str = "tuned"  # "tuned" or "default" (torch.optim's default learning rate)
    # The warm-up step's time: numba compiling (first run in an environment) or loading
    # (later runs, from its cache) the optimizer's kernel, once per process.
    first_step_seconds: float = 0.0
    # Median time of one training iteration (forward, backward, update) in milliseconds: a
    # busy machine's stalls move the total, hardly the median.
    step_ms: float = float("nan")


def load_digits(seed: int = 0, test_fraction: float = 0.25) -> Digits:
    """scikit-learn's bundled 8×8 digits (no download), standardized, split train/test."""
    require("sklearn", "demo", "the digits data")
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    data = sk_load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        data.data, data.target, test_size=test_fraction, random_state=seed, stratify=data.target
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    as_x = lambda a: torch.tensor((a - mean) / std, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return Digits(as_x(x_train), as_y(y_train), as_x(x_test), as_y(y_test))


def make_mlp(seed: int, hidden: int = 64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def batch_orders(n: int, batch_size: int, epochs: int, seed: int) -> list[list[torch.Tensor]]:
    """The minibatch indices of every epoch, shared by all optimizers."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=gen).split(batch_size) for _ in range(epochs)]


def _warm_up(factory: OptimizerFactory, lr: float, data: Digits, seed: int) -> float:
    """One step of a throwaway model, so that the kernel's one-time cost (numba loading or
    compiling its loops) stays out of the timed run; returns its seconds."""
    start = time.perf_counter()
    model = make_mlp(seed)
    optimizer = factory(model.parameters(), lr)
    nn.CrossEntropyLoss()(model(data.x_train[:8]), data.y_train[:8]).backward()
    optimizer.step()
    return time.perf_counter() - start


def train_one(
    name: str,
    factory: OptimizerFactory,
    data: Digits,
    batches: list[list[torch.Tensor]],
    seed: int,
    progress: Any = None,
    record_every: int | None = None,
    lr: float | None = None,
    setting: str = "tuned",
) -> RunResult:
    """Train one optimizer (``lr``: default its tuned one); ``progress``, a bar to update
    once a step."""
    lr = OPTIMIZERS[name][1] if lr is None else lr
    first_step = _warm_up(factory, lr, data, seed)
    model = make_mlp(seed)
    optimizer = factory(model.named_parameters(), lr)
    recorder = Recorder(optimizer, every=record_every, per_param=True) if record_every else None
    loss_fn = nn.CrossEntropyLoss()
    epoch_losses, step_seconds = [], []
    clock = time.perf_counter
    start = clock()
    for epoch in batches:
        for idx in epoch:
            began = clock()
            optimizer.zero_grad()
            loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
            loss.backward()
            optimizer.step()
            step_seconds.append(clock() - began)
            if progress is not None:
                progress.update(1)
        with torch.no_grad():
            epoch_losses.append(loss_fn(model(data.x_train), data.y_train).item())
    seconds = time.perf_counter() - start
    if recorder is not None:
        recorder.close()
    with torch.no_grad():
        accuracy = (model(data.x_test).argmax(dim=1) == data.y_test).float().mean().item()
    rows = recorder.rows if recorder is not None else []
    return RunResult(
        name,
        lr,
        epoch_losses[-1],
        accuracy,
        seconds,
        epoch_losses,
        rows,
        setting=setting,
        first_step_seconds=first_step,
        step_ms=1e3 * statistics.median(step_seconds),
    )


def run_demo(
    epochs: int = 20,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    record_every: int | None = None,
    lrs: dict[str, float] | None = None,
    defaults: bool = True,
) -> list[RunResult]:
    """Train the four optimizers at their tuned learning rates, then (``defaults``) at
    torch.optim's defaults; one result per run, in that order. ``lrs`` overrides tuned
    learning rates by optimizer name. With ``record_every``, each tuned run carries
    per-layer diagnostics sampled every that many steps (its times include them). The times
    leave out each kernel's one-time cost (a warm-up step runs first; its time is
    ``first_step_seconds``)."""
    unknown = sorted(set(lrs or {}) - set(OPTIMIZERS))
    if unknown:
        raise ValueError(f"unknown optimizer {unknown[0]!r}; choose from {', '.join(OPTIMIZERS)}")
    data = load_digits(seed)
    batches = batch_orders(len(data.y_train), batch_size, epochs, seed)
    runs = [
        (name, "tuned", (lrs or {}).get(name, tuned)) for name, (_, tuned) in OPTIMIZERS.items()
    ]
    if defaults:
        runs += [(name, "default", DEFAULT_LRS[name]) for name in OPTIMIZERS]
    total = len(runs) * sum(len(epoch) for epoch in batches)
    results = []
    with progress_bar(total=total, desc="training", unit="step", disable=not progress) as bar:
        for name, setting, lr in runs:
            bar.set_postfix_str(f"{name}, {setting} lr")
            record = record_every if setting == "tuned" else None
            factory = OPTIMIZERS[name][0]
            results.append(train_one(name, factory, data, batches, seed, bar, record, lr, setting))
    return results


def format_table(results: list[RunResult]) -> str:
    """One row per optimizer: its tuned run, its default-lr run (when there is one) and the
    median time of one training step (forward, backward, update) of its tuned run."""
    runs = {(r.name, r.setting): r for r in results}
    names = list(dict.fromkeys(r.name for r in results))
    with_defaults = any(r.setting == "default" for r in results)
    cells = f"{'lr':>7} {'train loss':>11} {'test acc':>9}"
    header = f"{'optimizer':<10} {cells}"
    top = f"{'':<10} {'at the tuned lr':-^29}"
    if with_defaults:
        header += f"   {cells}"
        default_title = "at torch.optim's default lr"
        top += f"   {default_title:-^29}"
    header += f" {'ms/step':>8}"
    lines = [top, header, "-" * len(header)]

    def cell(r: RunResult) -> str:
        return f"{r.lr:>7g} {r.train_loss:>11.4f} {r.test_accuracy:>8.1%}"

    for name in names:
        tuned = runs.get((name, "tuned"))
        default = runs.get((name, "default"))
        first = tuned or default
        line = f"{name:<10} {cell(first)}"
        if with_defaults:
            line += f"   {cell(default)}" if tuned is not None and default is not None else ""
        lines.append(f"{line} {first.step_ms:>8.2f}")
    return "\n".join(lines)


def what_it_shows(results: list[RunResult]) -> str:
    """One line: what moving from the tuned learning rate to torch.optim's default cost each
    optimizer in test accuracy, and whether the adaptive ones lost less."""
    runs = {(r.name, r.setting): r for r in results}
    drops = {
        name: runs[name, "tuned"].test_accuracy - runs[name, "default"].test_accuracy
        for name in OPTIMIZERS
        if (name, "tuned") in runs and (name, "default") in runs
    }
    if not drops:
        return "Each row: one optimizer from the same init on the same minibatches."
    changes = ", ".join(f"{name} {-100 * drop:+.1f}" for name, drop in drops.items())
    adaptive = [drops[n] for n in ("RMSProp", "Adam") if n in drops]
    plain = [drops[n] for n in ("SGD", "Momentum") if n in drops]
    if adaptive and plain and max(adaptive) < min(plain):
        verdict = (
            "RMSProp and Adam, which scale each parameter's step, are the least sensitive to "
            "the learning rate"
        )
    else:
        verdict = "here the adaptive optimizers were not the least sensitive to it"
    return (
        "What it shows: at torch.optim's default lr instead of the tuned one, test accuracy "
        f"changes by {changes} points: {verdict}."
    )


def first_step_note(results: list[RunResult]) -> str:
    """One line on the times: median per step, the first steps' one-time cost apart."""
    seconds = sum(r.first_step_seconds for r in results)
    return (
        "ms/step: the median training step (forward, backward, update). Not in it: the first "
        f"steps, {seconds:.1f} s: numba compiling adamkit's kernels (in a fresh environment: "
        "several seconds) or loading them from its cache."
    )
