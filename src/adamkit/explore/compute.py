"""What the explorer page shows, computed by the NumPy reference.

Four optimizers run from one start point on a test function. Each step, one batched autograd
call gives all four gradients (the function's own derivative, not the optimizer's math), and
each optimizer's update is its reference step (:mod:`adamkit.reference`). For the optimizer
being inspected, the per-coordinate m̂, √v̂, effective learning rate α/(√v̂+ε) and update of
every step come from the reference's own intermediates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..reference import adam, rmsprop, sgd
from ..viz.functions import FUNCTIONS, get

OPTIMIZERS = ("SGD", "Momentum", "RMSProp", "Adam")
MAX_STEPS = 2000


class BadSetting(ValueError):
    """A setting the page (or a caller) sent that cannot be used; the message names it."""


def _number(query: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise BadSetting(f"{name} must be a number; got {text!r}") from None
    if not (math.isfinite(value) and low <= value <= high):
        raise BadSetting(f"{name} must lie in [{low:g}, {high:g}]; got {value:g}")
    return value


@dataclass(frozen=True)
class Settings:
    """One setting of the page's controls."""

    function: str = "rosenbrock"
    start: tuple[float, float] | None = None  # None: the function's own start
    lrs: dict[str, float] = field(default_factory=dict)  # by optimizer; missing: the default
    beta1: float = 0.9  # Adam's β1 and Momentum's μ
    beta2: float = 0.999  # Adam's β2 and RMSProp's averaging constant
    eps: float = 1e-8
    bias_correction: bool = True
    steps: int = 500
    show: tuple[str, ...] = OPTIMIZERS
    inspect: str = "Adam"

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> Settings:
        """Settings from the page's query parameters; BadSetting names a bad one."""
        name = query.get("function", cls.function)
        if name not in FUNCTIONS:
            raise BadSetting(f"unknown function {name!r}; choose from {', '.join(FUNCTIONS)}")
        start = None
        if query.get("x") not in (None, "") or query.get("y") not in (None, ""):
            start = (
                _number(query, "x", 0.0, -1e6, 1e6),
                _number(query, "y", 0.0, -1e6, 1e6),
            )
        lrs = {
            opt: _number(query, f"lr_{opt}", 0.0, 1e-8, 1e3)
            for opt in OPTIMIZERS
            if query.get(f"lr_{opt}") not in (None, "")
        }
        show = tuple(s for s in query.get("show", ",".join(OPTIMIZERS)).split(",") if s)
        unknown = [s for s in (*show, query.get("inspect", "Adam")) if s not in OPTIMIZERS]
        if unknown:
            raise BadSetting(
                f"unknown optimizer {unknown[0]!r}; choose from {', '.join(OPTIMIZERS)}"
            )
        bias = query.get("bias_correction", "1")
        if bias not in ("0", "1"):
            raise BadSetting(f"bias_correction must be 0 or 1; got {bias!r}")
        return cls(
            function=name,
            start=start,
            lrs=lrs,
            beta1=_number(query, "beta1", 0.9, 0.0, 0.9999),
            beta2=_number(query, "beta2", 0.999, 0.0, 0.99999),
            eps=_number(query, "eps", 1e-8, 0.0, 1.0),
            bias_correction=bias == "1",
            steps=int(_number(query, "steps", 500, 1, MAX_STEPS)),
            show=show,
            inspect=query.get("inspect", "Adam"),
        )


def _hyper(name: str, lr: float, s: Settings) -> Any:
    if name == "SGD":
        return sgd, sgd.SGDHyper(lr=lr)
    if name == "Momentum":
        return sgd, sgd.SGDHyper(lr=lr, momentum=s.beta1)
    if name == "RMSProp":
        return rmsprop, rmsprop.RMSpropHyper(lr=lr, alpha=s.beta2, eps=s.eps)
    return adam, adam.AdamHyper(
        lr=lr, beta1=s.beta1, beta2=s.beta2, eps=s.eps, bias_correction=s.bias_correction
    )


def _inspected(name: str, hyper: Any, state: Any, aux: Any) -> list[list[float] | None]:
    """[m̂, √v̂, effective lr, update] of one step, per coordinate (None where the optimizer has
    no such quantity)."""
    if name == "Adam":
        return [aux.m_hat, np.sqrt(aux.v_hat), aux.effective_lr, aux.update]
    if name == "RMSProp":  # its denominator is √v + ε: no bias correction
        return [None, aux.denom - hyper.eps, aux.effective_lr, aux.update]
    momentum = state.buf if name == "Momentum" else None
    return [momentum, None, np.full(2, hyper.lr), aux.update]


def run(settings: Settings) -> dict[str, Any]:
    """The paths of the shown optimizers and the inspected one's per-step quantities."""
    function = get(settings.function)
    start = np.array(settings.start or function.start, dtype=np.float64)
    names = [n for n in OPTIMIZERS if n in settings.show or n == settings.inspect]
    specs = {n: _hyper(n, settings.lrs.get(n, function.lrs[n]), settings) for n in names}
    params = {n: start.copy() for n in names}
    states = {n: specs[n][0].init(start) for n in names}
    points = {n: [start.tolist()] for n in names}
    values = {n: [] for n in names}
    quantities: list[list[list[float] | None]] = []
    alive = list(names)
    for _ in range(settings.steps):
        if not alive:
            break
        xy = torch.tensor(np.stack([params[n] for n in alive]), requires_grad=True)
        f = function(xy)
        (grads,) = torch.autograd.grad(f.sum(), xy)
        f_values, g_values = f.detach().numpy(), grads.numpy()
        for i, n in enumerate(list(alive)):
            module, hyper = specs[n]
            values[n].append(float(f_values[i]))
            params[n], states[n], aux = module.step(params[n], g_values[i], states[n], hyper)
            if n == settings.inspect:
                quantities.append(
                    [None if q is None else np.asarray(q, float).tolist() for q in
                     _inspected(n, hyper, states[n], aux)]
                )  # fmt: skip
            if not np.isfinite(params[n]).all():
                alive.remove(n)  # diverged: the path ends here
                continue
            points[n].append(params[n].tolist())
    series = ("m_hat", "sqrt_v_hat", "effective_lr", "update")
    return {
        "function": function.name,
        "start": start.tolist(),
        "paths": {
            n: {"lr": specs[n][1].lr, "points": points[n], "values": values[n]}
            for n in names
            if n in settings.show
        },
        "inspect": {
            "name": settings.inspect,
            **{key: [q[k] for q in quantities] for k, key in enumerate(series)},
        },
    }


def contour(name: str, size: int = 120) -> dict[str, Any]:
    """The function on a ``size``×``size`` grid over its plot range (rows are y), as
    log(f - f_min + 1e-3) when its levels are logarithmic."""
    if name not in FUNCTIONS:
        raise BadSetting(f"unknown function {name!r}; choose from {', '.join(FUNCTIONS)}")
    function = get(name)
    xs = torch.linspace(*function.x_range, size, dtype=torch.float64)
    ys = torch.linspace(*function.y_range, size, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    z = function(torch.stack([gx, gy], dim=-1))
    if function.log_levels:
        z = torch.log(z - z.min() + 1e-3)
    return {
        "function": name,
        "formula": function.formula,
        "x_range": list(function.x_range),
        "y_range": list(function.y_range),
        "start": list(function.start),
        "minima": [list(m) for m in function.minima],
        "lrs": function.lrs,
        "z": z.numpy().round(4).tolist(),
    }
