"""Run SGD, Momentum, RMSProp and Adam (adamkit's optimizers) on a 2-D function and record
each step's position and, from the optimizer state, the per-coordinate m̂, √v̂ and α/(√v̂+ε)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import optim
from ..diagnostics.elementwise import algorithm_of, group_elements
from .functions import TestFunction

OPTIMIZERS = ("SGD", "Momentum", "RMSProp", "Adam")


@dataclass
class Trajectory:
    """Positions (steps+1, 2) and function values; per-step state quantities (steps, 2) or None."""

    name: str
    lr: float
    points: np.ndarray
    values: np.ndarray
    m_hat: np.ndarray | None  # Adam's m̂ or the momentum buffer
    sqrt_v_hat: np.ndarray | None
    effective_lr: np.ndarray | None

    def steps_until(self, predicate) -> int | None:
        """The first step whose position satisfies ``predicate(x, y)``, or None."""
        for t, (x, y) in enumerate(self.points):
            if predicate(x, y):
                return t
        return None


def make_optimizer(
    name: str, params: list[torch.Tensor], lr: float, betas: tuple[float, float]
) -> torch.optim.Optimizer:
    if name == "SGD":
        return optim.SGD(params, lr=lr)
    if name == "Momentum":
        return optim.SGD(params, lr=lr, momentum=0.9)
    if name == "RMSProp":
        return optim.RMSprop(params, lr=lr)
    if name == "Adam":
        return optim.Adam(params, lr=lr, betas=betas)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")


def run(
    function: TestFunction,
    name: str,
    *,
    steps: int,
    lr: float | None = None,
    start: tuple[float, float] | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
) -> Trajectory:
    """``steps`` steps of optimizer ``name`` on ``function`` (float64), stopping early if the
    position leaves the finite numbers."""
    lr = function.lrs[name] if lr is None else lr
    xy = torch.tensor(start or function.start, dtype=torch.float64, requires_grad=True)
    opt = make_optimizer(name, [xy], lr, betas)
    algorithm = algorithm_of(opt)
    points, values, m_hat, sqrt_v, eff = [xy.detach().clone()], [], [], [], []
    for _ in range(steps):
        opt.zero_grad()
        value = function(xy)
        values.append(value.item())
        value.backward()
        opt.step()
        points.append(xy.detach().clone())
        e = group_elements(algorithm, opt.param_groups[0], opt.state)
        m_hat.append(e.momentum if e.momentum is not None else torch.full((2,), np.nan))
        sqrt_v.append(e.sqrt_v if e.sqrt_v is not None else torch.full((2,), np.nan))
        eff.append(e.effective_lr)
        if not torch.isfinite(xy).all():
            break
    values.append(function(xy.detach()).item())
    stack = lambda xs: torch.stack(xs).numpy()  # noqa: E731
    has = lambda xs: not np.isnan(stack(xs)).all()  # noqa: E731
    return Trajectory(
        name,
        lr,
        stack(points),
        np.array(values),
        stack(m_hat) if has(m_hat) else None,
        stack(sqrt_v) if has(sqrt_v) else None,
        stack(eff),
    )


def run_all(
    function: TestFunction,
    *,
    steps: int,
    lrs: dict[str, float] | None = None,
    start: tuple[float, float] | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
) -> list[Trajectory]:
    """The four optimizers from the same start."""
    lrs = lrs or {}
    return [
        run(function, name, steps=steps, lr=lrs.get(name), start=start, betas=betas)
        for name in OPTIMIZERS
    ]
