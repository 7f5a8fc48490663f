"""What the explorer page shows, computed by the NumPy reference.

The optimizers of the Adam family, the rules it combines and its variants (AdEMAMix, ADOPT,
Lion, Schedule-Free, StableAdamW, Cautious Adam, Adafactor: :mod:`.variants`) run from one start
point on a test function. Each step, one batched call gives the gradients: the function's own
derivative, not the optimizer's math (:mod:`.dual`). Each optimizer's update is its reference
step (:mod:`adamkit.reference`). For every optimizer, the per-coordinate first moment,
second-moment scale, effective learning rate and update of every step, and a variant's own
further series, come from the reference's own intermediates (or its state), labelled as that
optimizer defines them.

Each optimizer's trajectory is cached by what it depends on (function, start, its own
hyperparameters), so moving one optimizer's α recomputes that optimizer only, and more steps
continue a cached trajectory instead of starting again.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..reference import adam, adamax, nadam, radam, rmsprop, sgd
from ..viz.functions import FUNCTIONS, TestFunction, get
from . import variants
from .dual import gradients

CLASSIC = ("SGD", "Momentum", "RMSProp", "Adam", "AdamW", "NAdam", "RAdam", "Adamax")
OPTIMIZERS = CLASSIC + variants.VARIANTS
# The test functions tune α for the four classic rules; AdamW, NAdam and Adamax start from
# Adam's. RAdam's first steps (until ρ_t > 5) are momentum-SGD steps of α·m̂, unnormalised:
# with Adam's α they leave the plot (or overflow), so it has its own.
LR_LIKE = {"AdamW": "Adam", "NAdam": "Adam", "Adamax": "Adam", "RAdam": "Adam"}
RADAM_LRS = {"rosenbrock": 1e-3, "beale": 1e-2, "himmelblau": 2e-2, "saddle": 5e-2}
SERIES = ("m_hat", "sqrt_v_hat", "effective_lr", "update")
MAX_STEPS = 2000
CACHE_SIZE = 64  # trajectories kept (one of 500 steps holds ~0.2 MB)


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


def default_lrs(function: TestFunction) -> dict[str, float]:
    """Each optimizer's starting α on ``function``."""
    lrs = {n: function.lrs.get(n, function.lrs.get(LR_LIKE.get(n, ""), 1e-3)) for n in OPTIMIZERS}
    lrs["RAdam"] = function.lrs.get("RAdam", RADAM_LRS.get(function.name, lrs["RAdam"]))
    for name, by_function in variants.LRS.items():  # a function without its own: Adam's
        lrs[name] = function.lrs.get(name, by_function.get(function.name, lrs["Adam"]))
    return lrs


def lr_symbols() -> dict[str, str]:
    """The symbol of each optimizer's learning rate on the page (α unless it means another
    thing in that optimizer)."""
    return {n: variants.LR_SYMBOLS.get(n, "α") for n in OPTIMIZERS}


@dataclass(frozen=True)
class Settings:
    """One setting of the page's controls."""

    function: str = "rosenbrock"
    start: tuple[float, float] | None = None  # None: the function's own start
    lrs: dict[str, float] = field(default_factory=dict)  # by optimizer; missing: the default
    beta1: float = 0.9  # β1 of the Adam family and its variants, Momentum's μ
    beta2: float = 0.999  # β2 of the Adam family (not Lion's, Adafactor's), RMSProp's constant
    eps: float = 1e-8
    beta3: float = 0.9999  # AdEMAMix's slow EMA (its default)
    alpha: float = 5.0  # AdEMAMix's weight of the slow EMA (its default)
    weight_decay: float = 0.1  # AdamW's decoupled λ (shown: torch's default 0.01 barely shows)
    bias_correction: bool = True  # Adam's and AdamW's
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
            beta3=_number(query, "beta3", cls.beta3, 0.0, 0.99999),
            alpha=_number(query, "alpha", cls.alpha, 0.0, 100.0),
            weight_decay=_number(query, "weight_decay", cls.weight_decay, 0.0, 10.0),
            bias_correction=bias == "1",
            steps=int(_number(query, "steps", 500, 1, MAX_STEPS)),
            show=show,
            inspect=query.get("inspect", "Adam"),
        )


def _hyper(name: str, lr: float, s: Settings) -> tuple[Any, Any]:
    """(reference module, hyperparameters) of optimizer ``name``: only what it depends on, so
    that the hyperparameters are its cache key."""
    if name in variants.VARIANTS:
        return variants.hyper(name, lr, s)
    if name == "SGD":
        return sgd, sgd.SGDHyper(lr=lr)
    if name == "Momentum":
        return sgd, sgd.SGDHyper(lr=lr, momentum=s.beta1)
    if name == "RMSProp":
        return rmsprop, rmsprop.RMSpropHyper(lr=lr, alpha=s.beta2, eps=s.eps)
    betas = {"beta1": s.beta1, "beta2": s.beta2, "eps": s.eps}
    if name in ("Adam", "AdamW"):
        decay = {"weight_decay": s.weight_decay, "decoupled": True} if name == "AdamW" else {}
        return adam, adam.AdamHyper(lr=lr, bias_correction=s.bias_correction, **betas, **decay)
    if name == "NAdam":
        return nadam, nadam.NAdamHyper(lr=lr, **betas)
    if name == "RAdam":
        return radam, radam.RAdamHyper(lr=lr, **betas)
    return adamax, adamax.AdamaxHyper(lr=lr, **betas)


def labels(name: str, bias_correction: bool = True) -> dict[str, str | None]:
    """What each series is for optimizer ``name``, in its own symbols (None: it has none)."""
    if name in variants.LABELS:
        return variants.LABELS[name]
    if name in ("Adam", "AdamW"):
        if bias_correction:
            return {"m_hat": "m̂", "sqrt_v_hat": "√v̂", "effective_lr": "α/(√v̂+ε)",
                    "update": "α·m̂/(√v̂+ε)"}  # fmt: skip
        return {"m_hat": "m", "sqrt_v_hat": "√v", "effective_lr": "α/(√v+ε)",
                "update": "α·m/(√v+ε)"}  # fmt: skip
    if name == "NAdam":  # m̄: the Nesterov look-ahead mix of g and m, each bias-corrected
        return {"m_hat": "m̄", "sqrt_v_hat": "√v̂", "effective_lr": "α/(√v̂+ε)",
                "update": "α·m̄/(√v̂+ε)"}  # fmt: skip
    if name == "RAdam":  # α·m̂ while ρ_t ≤ 5 (warm-up), then rectified by r_t
        return {"m_hat": "m̂", "sqrt_v_hat": "√v̂", "effective_lr": "α·r_t/(√v̂+ε̃)",
                "update": "α·r_t·m̂/(√v̂+ε̃)"}  # fmt: skip
    if name == "Adamax":
        return {"m_hat": "m̂", "sqrt_v_hat": "u", "effective_lr": "α/u", "update": "α·m̂/u"}
    if name == "RMSProp":
        return {"m_hat": None, "sqrt_v_hat": "√v", "effective_lr": "α/(√v+ε)",
                "update": "α·g/(√v+ε)"}  # fmt: skip
    if name == "Momentum":
        return {"m_hat": "b", "sqrt_v_hat": None, "effective_lr": "α", "update": "α·b"}
    return {"m_hat": None, "sqrt_v_hat": None, "effective_lr": "α", "update": "α·g"}


def _inspected(
    name: str, hyper: Any, g: np.ndarray, state: Any, aux: Any
) -> list[np.ndarray | None]:
    """[first moment, second-moment scale, effective lr, update] of one step, per coordinate
    (None where the optimizer has no such quantity), as :func:`labels` names them."""
    if name in ("Adam", "AdamW"):
        return [aux.m_hat, np.sqrt(aux.v_hat), aux.effective_lr, aux.update]
    if name == "NAdam":
        product = state.mu_product
        bracket = (1.0 - aux.mu) / (1.0 - product) * g + aux.mu_next / (
            1.0 - product * aux.mu_next
        ) * state.m
        return [bracket, np.sqrt(aux.v_hat), hyper.lr / aux.denom, aux.update]
    if name == "RAdam":
        bias_correction2 = 1.0 - hyper.beta2**state.step
        sqrt_v = np.sqrt(state.v)
        if aux.rectified:  # ε̃ = ε/√(1-β2^t): RAdam adds ε to √v, before the correction
            effective = (
                hyper.lr * aux.rectification * math.sqrt(bias_correction2) / (sqrt_v + hyper.eps)
            )
        else:
            effective = np.full(2, hyper.lr)
        return [aux.m_hat, sqrt_v / math.sqrt(bias_correction2), effective, aux.update]
    if name == "Adamax":
        m_hat = state.m / (1.0 - hyper.beta1**state.step)
        return [m_hat, state.u, hyper.lr / state.u, aux.update]
    if name == "RMSProp":  # its denominator is √v + ε: no bias correction
        return [None, aux.denom - hyper.eps, aux.effective_lr, aux.update]
    momentum = state.buf if name == "Momentum" else None
    return [momentum, None, np.full(2, hyper.lr), aux.update]


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _listed(rows: np.ndarray) -> list[Any]:
    """``rows`` as nested lists, NaN and infinities as None (JSON has neither)."""
    if np.isfinite(rows).all():
        return rows.tolist()
    return [[_finite(v) for v in row] for row in rows.tolist()]


@dataclass
class Trajectory:
    """One optimizer's path so far: what the page shows, and where to go on from."""

    name: str
    module: Any
    hyper: Any
    param: np.ndarray
    state: Any
    points: list[list[float]]
    values: list[float] = field(default_factory=list)  # f before each step
    # (4 + extras, 2) a step: the four panels' quantities, then the variant's extras; NaN: none
    quantities: list[np.ndarray] = field(default_factory=list)
    alive: bool = True  # False once diverged: the path ends

    @property
    def steps(self) -> int:
        return len(self.quantities)

    def series(self, steps: int) -> dict[str, Any]:
        """The four series of the first ``steps`` steps (a list of None where it has none),
        and under ``extras`` the optimizer's further ones, each with its label and role (a
        scalar one as one number a step)."""
        has, extras = labels(self.name), variants.EXTRAS.get(self.name, ())
        rows = np.array(self.quantities[:steps]).reshape(-1, len(SERIES) + len(extras), 2)
        out: dict[str, Any] = {
            key: _listed(rows[:, k]) if has[key] is not None else [None] * len(rows)
            for k, key in enumerate(SERIES)
        }
        out["extras"] = []
        for k, e in enumerate(extras):
            column = rows[:, len(SERIES) + k]
            data = [_finite(v) for v in column[:, 0].tolist()] if e.scalar else _listed(column)
            out["extras"].append(
                {"key": e.key, "label": e.label, "role": e.role, "scalar": e.scalar, "data": data}
            )
        return out


_cache: OrderedDict[tuple[Any, ...], Trajectory] = OrderedDict()
_lock = threading.Lock()  # the server answers requests in threads


def clear_cache() -> None:
    with _lock:
        _cache.clear()


_NONE = np.full(2, np.nan)


def _advance(function: TestFunction, jobs: list[Trajectory], steps: int) -> None:
    """Step each trajectory of ``jobs`` on until it has ``steps`` steps or has diverged; one
    batched gradient call a step for all of them."""
    while True:
        active = [t for t in jobs if t.alive and t.steps < steps]
        if not active:
            return
        f_values, g_values = gradients(function, np.stack([t.param for t in active]))
        with np.errstate(all="ignore"):  # a diverging path overflows: its end is shown
            for t, f, g in zip(active, f_values.tolist(), g_values, strict=True):
                t.values.append(f)
                param, before = t.param, t.state
                t.param, t.state, aux = t.module.step(param, g, before, t.hyper)
                if t.name in variants.VARIANTS:
                    quantities, extras = variants.inspected(
                        t.name, t.hyper, param, g, before, t.state, aux
                    )
                else:
                    quantities, extras = _inspected(t.name, t.hyper, g, t.state, aux), []
                rows = [_NONE if q is None else q for q in quantities] + extras
                t.quantities.append(np.stack(rows))
                if not np.isfinite(t.param).all():
                    t.alive = False  # diverged: the path ends here
                    continue
                t.points.append(t.param.tolist())


def trajectories(settings: Settings) -> tuple[dict[str, Trajectory], list[str]]:
    """The trajectories the settings need (shown or inspected), at least ``settings.steps``
    long (or ended), and the names of those that had to be computed (not all from cache)."""
    function = get(settings.function)
    start = tuple(float(v) for v in (settings.start or function.start))
    lrs = default_lrs(function)
    names = [n for n in OPTIMIZERS if n in settings.show or n == settings.inspect]
    found: dict[str, Trajectory] = {}
    jobs: list[Trajectory] = []
    with _lock:  # one computation at a time: two would only share the CPU
        for n in names:
            module, hyper = _hyper(n, settings.lrs.get(n, lrs[n]), settings)
            key = (function.name, start, n, hyper)
            t = _cache.get(key)
            if t is None:
                param = np.array(start, dtype=np.float64)
                state = module.init(param)
                t = _cache[key] = Trajectory(n, module, hyper, param, state, [list(start)])
            _cache.move_to_end(key)
            found[n] = t
            if t.alive and t.steps < settings.steps:
                jobs.append(t)
        _advance(function, jobs, settings.steps)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return found, [t.name for t in jobs]


def run(settings: Settings) -> dict[str, Any]:
    """The paths of the shown optimizers and the inspected one's per-step quantities."""
    started = time.perf_counter()
    function = get(settings.function)
    found, computed = trajectories(settings)
    steps = settings.steps

    def path(t: Trajectory) -> dict[str, Any]:
        # a diverged path keeps the step that diverged (its f), not the non-finite point
        values = [_finite(v) for v in t.values[:steps]]
        point = variants.POINTS.get(t.name)  # what the path is, where not the parameter
        return {"lr": t.hyper.lr, "points": t.points[: steps + 1], "values": values, "point": point}

    return {
        "function": function.name,
        "start": list(settings.start or function.start),
        "paths": {n: path(t) for n, t in found.items() if n in settings.show},
        "inspect": {
            "name": settings.inspect,
            "labels": labels(settings.inspect, settings.bias_correction),
            "roles": variants.ROLES.get(settings.inspect, {}),  # titles unlike the common ones
            **found[settings.inspect].series(steps),
        },
        "computed": computed,  # recomputed for this answer (the others came from the cache)
        "server_ms": round((time.perf_counter() - started) * 1e3, 1),
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
        "lrs": default_lrs(function),
        "lr_symbols": lr_symbols(),
        "z": z.numpy().round(4).tolist(),
    }
