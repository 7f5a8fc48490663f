"""The main job: SGD, Momentum, RMSProp and Adam train the same MLP on scikit-learn's digits.

Every optimizer starts from the same initial weights and sees the same minibatches in the
same order, so the differences in the table come from the update rules alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .diagnostics import Recorder
from .optim import SGD, Adam, RMSprop

OptimizerFactory = Callable[[Iterable[nn.Parameter], float], torch.optim.Optimizer]

# name: (factory taking params and lr, default lr). The learning rates are each optimizer's
# usual choice for this problem size, not tuned to win; `adamkit demo --lr NAME=LR` changes one.
OPTIMIZERS: dict[str, tuple[OptimizerFactory, float]] = {
    "SGD": (lambda params, lr: SGD(params, lr=lr), 0.1),
    "Momentum": (lambda params, lr: SGD(params, lr=lr, momentum=0.9), 0.02),
    "RMSProp": (lambda params, lr: RMSprop(params, lr=lr), 1e-3),
    "Adam": (lambda params, lr: Adam(params, lr=lr), 1e-3),
}


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
    seconds: float
    epoch_losses: list[float] = field(default_factory=list)
    # Per-parameter diagnostics rows (adamkit.diagnostics.Recorder), when recorded.
    diagnostics: list[dict[str, Any]] = field(default_factory=list)


def load_digits(seed: int = 0, test_fraction: float = 0.25) -> Digits:
    """scikit-learn's bundled 8×8 digits (no download), standardized, split train/test."""
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


def _warm_up(factory: OptimizerFactory, lr: float, data: Digits, seed: int) -> None:
    """One step of a throwaway model, so that the kernel's one-time cost (numba loading or
    compiling its loops) stays out of the timed run."""
    model = make_mlp(seed)
    optimizer = factory(model.parameters(), lr)
    nn.CrossEntropyLoss()(model(data.x_train[:8]), data.y_train[:8]).backward()
    optimizer.step()


def train_one(
    name: str,
    factory: OptimizerFactory,
    data: Digits,
    batches: list[list[torch.Tensor]],
    seed: int,
    progress: tqdm | None = None,
    record_every: int | None = None,
    lr: float | None = None,
) -> RunResult:
    lr = OPTIMIZERS[name][1] if lr is None else lr
    _warm_up(factory, lr, data, seed)
    model = make_mlp(seed)
    optimizer = factory(model.named_parameters(), lr)
    recorder = Recorder(optimizer, every=record_every, per_param=True) if record_every else None
    loss_fn = nn.CrossEntropyLoss()
    epoch_losses = []
    start = time.perf_counter()
    for epoch in batches:
        for idx in epoch:
            optimizer.zero_grad()
            loss = loss_fn(model(data.x_train[idx]), data.y_train[idx])
            loss.backward()
            optimizer.step()
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
    return RunResult(name, lr, epoch_losses[-1], accuracy, seconds, epoch_losses, rows)


def run_demo(
    epochs: int = 20,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    record_every: int | None = None,
    lrs: dict[str, float] | None = None,
) -> list[RunResult]:
    """Train the four optimizers and return one result each; with ``record_every``, each
    result carries per-layer diagnostics sampled every that many steps (timing includes it).
    ``lrs`` overrides learning rates by optimizer name. The time column leaves out each
    kernel's one-time cost (a warm-up step runs first)."""
    unknown = sorted(set(lrs or {}) - set(OPTIMIZERS))
    if unknown:
        raise ValueError(f"unknown optimizer {unknown[0]!r}; choose from {', '.join(OPTIMIZERS)}")
    data = load_digits(seed)
    batches = batch_orders(len(data.y_train), batch_size, epochs, seed)
    total = len(OPTIMIZERS) * sum(len(epoch) for epoch in batches)
    results = []
    with tqdm(total=total, desc="training", unit="step", disable=not progress) as bar:
        for name, (factory, default_lr) in OPTIMIZERS.items():
            bar.set_postfix_str(name)
            lr = (lrs or {}).get(name, default_lr)
            results.append(train_one(name, factory, data, batches, seed, bar, record_every, lr))
    return results


def format_table(results: list[RunResult]) -> str:
    header = f"{'optimizer':<10} {'lr':>7} {'train loss':>11} {'test acc':>9} {'time (s)':>9}"
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.name:<10} {r.lr:>7g} {r.train_loss:>11.4f} {r.test_accuracy:>8.1%} "
            f"{r.seconds:>9.2f}"
        )
    return "\n".join(lines)
