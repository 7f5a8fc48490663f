"""``snapshot(optimizer)``: how m̂ and √v̂ steer each param group's step, in a few numbers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..algorithms import ADAM_FAMILY
from .elementwise import Elements, algorithm_of, group_elements, unwrap

# effective_lr's summary statistics (p10 and p90 are the 10th and 90th percentiles).
EFFECTIVE_LR_STATS = ("min", "p10", "median", "p90", "max")
_EFFECTIVE_LR = [f"effective_lr.{stat}" for stat in EFFECTIVE_LR_STATS]
# The same percentiles over the elements √v̂ (not ε) scales: √v̂ ≥ ε. The others, ε-dominated
# (a gradient that has stayed at or near zero), sit near α/ε and would swamp a plot.
ADAPTIVE_STATS = ("p10", "median", "p90")
_ADAPTIVE = [f"effective_lr_adaptive.{stat}" for stat in ADAPTIVE_STATS]

# The summaries each algorithm has, flattened as CSV columns / TensorBoard tags.
QUANTITIES: dict[str, list[str]] = {
    "adam": [
        *_EFFECTIVE_LR,
        "m_hat_rms",
        "sqrt_v_hat_rms",
        "snr",
        "update_rms",
        "update_to_param",
        "eps_dominated",
        *_ADAPTIVE,
        "momentum_agreement",
        "grad_rms",
    ],
    "rmsprop": [
        *_EFFECTIVE_LR,
        "sqrt_v_rms",
        "update_rms",
        "update_to_param",
        "eps_dominated",
        *_ADAPTIVE,
        "momentum_rms",
        "momentum_agreement",
        "grad_rms",
    ],
    "sgd": [
        *_EFFECTIVE_LR,
        "momentum_rms",
        "update_rms",
        "update_to_param",
        "momentum_agreement",
        "grad_rms",
    ],
}
# The Adam family built from specs reports what Adam does (m̂ and the scale per element).
QUANTITIES.update(dict.fromkeys(ADAM_FAMILY, QUANTITIES["adam"]))
# Lion: its momentum and the sign step α·sign(c); no scale (every coordinate moves by α).
QUANTITIES["lion"] = QUANTITIES["sgd"]
# AdEMAMix: Adam's, with the mixed numerator m̂1 + α_t·m2 where Adam has m̂, and the slow EMA
# m2 on its own.
QUANTITIES["ademamix"] = [*QUANTITIES["adam"], "slow_ema_rms"]
# Schedule-Free AdamW: Adam's scale and effective lr, no momentum buffer (its momentum is the
# average x), and the group's averaging weight c and warmed-up lr.
QUANTITIES["schedule_free_adamw"] = [
    *_EFFECTIVE_LR,
    "sqrt_v_hat_rms",
    "update_rms",
    "update_to_param",
    "eps_dominated",
    *_ADAPTIVE,
    "grad_rms",
    "averaging_weight",
    "scheduled_lr",
]
# Adafactor: no first moment; its √V̂ rebuilt from the factors, the effective lr
# α_t/(d_t·√max(V̂, ε1²)) with its relative step size and update clipping, ε1 for ε; the
# group's ρ_t and the share of its tensors whose update was clipped.
QUANTITIES["adafactor"] = [
    *_EFFECTIVE_LR,
    "sqrt_v_hat_rms",
    "update_rms",
    "update_to_param",
    "eps_dominated",
    *_ADAPTIVE,
    "grad_rms",
    "relative_step",
    "clipped_fraction",
]
ADAM_LIKE = (*ADAM_FAMILY, "ademamix")
BIAS_CORRECTED_SCALE = (*ADAM_LIKE, "schedule_free_adamw", "adafactor")  # √v̂, not √v


def _on_one_thread(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with torch's intra-op threads set to one while it runs. A snapshot reads
    at most about ``max_elements`` per group, too few for a second thread to pay off, and on a
    loaded machine each parallel op waited for a descheduled thread: with another process
    busy on one of two cores, a snapshot of the 50k-parameter MLP took 280 ms (median; 3.5 ms
    on one thread), which is where Recorder(every=1)'s 60-107 ms per step came from.
    (torch keeps one process-wide default: a thread whose first torch call falls inside a
    snapshot starts with one thread; the caller's count is restored.)"""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        threads = torch.get_num_threads()
        if threads == 1:
            return function(*args, **kwargs)
        torch.set_num_threads(1)
        try:
            return function(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)

    return wrapper


@_on_one_thread
def snapshot(
    optimizer: torch.optim.Optimizer, *, per_param: bool = False, max_elements: int = 1 << 16
) -> Any:
    """Summaries of the last step, for each param group (a list) or each parameter (a dict).

    Adam's summaries (over all elements of the group; see :data:`QUANTITIES` for the others):

    * ``effective_lr``: α/(√v̂+ε) — ``{"min", "p10", "median", "p90", "max"}`` (p10 and p90
      are the 10th and 90th percentiles);
    * ``m_hat_rms``, ``sqrt_v_hat_rms``: root mean squares of m̂ and √v̂;
    * ``snr``: median of |m̂|/√v̂ (elements with v̂ > 0), how consistently a gradient points;
    * ``update_rms``: RMS of the step α·m̂/(√v̂+ε); ``update_to_param``: ‖Δφ‖/‖φ‖;
    * ``eps_dominated``: fraction of elements with √v̂ < ε, where ε, not v̂, sets the step;
    * ``effective_lr_adaptive``: ``{"p10", "median", "p90"}`` of α/(√v̂+ε) over the other
      elements (√v̂ ≥ ε; NaN if there are none): the step sizes v̂ adapts, without the ones
      near α/ε;
    * ``momentum_agreement``: fraction where sign(m) = sign(g) for the gradient still in .grad;
    * ``grad_rms``: RMS of that gradient (|g| beside m̂: momentum's smoothing shows as m̂ < |g|).

    AdEMAMix's m̂ is its mixed numerator m̂1 + α_t·m2, and ``slow_ema_rms`` is the RMS of the
    slow EMA m2 alone (how much of the step the old gradients carry). Schedule-Free AdamW has
    no momentum buffer; its ``averaging_weight`` is c, the weight of the newest z in the
    average x, and ``scheduled_lr`` the warmed-up lr; its update is the step z took.
    Adafactor has no first moment: √V̂ is rebuilt from its row and column factors, its
    effective lr is α_t/(d_t·√max(V̂, ε1²)) (``eps_dominated``: √V̂ < ε1), ``relative_step``
    is ρ_t = min(lr, 1/√t) and ``clipped_fraction`` the share of the group's tensors whose
    update RMS exceeded d (see :mod:`adamkit.diagnostics._adafactor`).

    ``step`` is the group's step count (SGD, which keeps none in its state: the steps adamkit's
    SGD has taken, None for torch.optim.SGD). Wrapped optimizers (accelerate's
    ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``) are unwrapped. Weight decay
    is not part of ``update``. Groups with
    more than ``max_elements`` elements are summarised on a sample of about that many; the
    percentiles (median, p10, p90, snr) on every k-th of those, at most 4096 (snr: of those,
    the ones with v̂ > 0).
    With ``per_param=True`` the keys are parameter names (when the optimizer was given
    ``named_parameters()``) or ``"group{g}.param{i}"``, and each summary also has
    ``state_format``: the format of that parameter's m and v, "fp32", "bf16" or "8bit" (with
    ``amsgrad``, "8bit" keeps v and its max in bf16; see :func:`state_formats`).
    """
    optimizer = unwrap(optimizer)
    algorithm = algorithm_of(optimizer)
    steps_taken = getattr(optimizer, "steps_taken", None)  # adamkit's optimizers count them
    if not per_param:
        return [
            summarize(
                group_elements(
                    algorithm,
                    g,
                    optimizer.state,
                    max_elements=max_elements,
                    steps_taken=steps_taken,
                )
            )
            for g in optimizer.param_groups
        ]
    out = {}
    formats = state_formats(optimizer)
    for gi, group in enumerate(optimizer.param_groups):
        for name, p in zip(_names(gi, group), group["params"], strict=True):
            elements = group_elements(
                algorithm, group, optimizer.state, [p], max_elements, steps_taken
            )
            if elements is not None:
                out[name] = {"state_format": formats[name], **summarize(elements)}
    return out


def _names(gi: int, group: dict[str, Any]) -> list[str]:
    return group.get("param_names") or [f"group{gi}.param{i}" for i in range(len(group["params"]))]


def state_formats(optimizer: torch.optim.Optimizer) -> dict[str, str]:
    """The format each parameter's state is kept in (from its next step on, for a parameter
    not stepped yet): "fp32" (torch's), "bf16" or "8bit", by parameter name (when the
    optimizer was given ``named_parameters()``) or ``"group{g}.param{i}"``.

    ``state_precision`` does not reach every tensor: float64 and complex parameters keep
    torch's state, and with "8bit" so do those of fewer than ``min_8bit_size`` elements.
    With ``amsgrad``, an "8bit" parameter keeps v and its max in bf16 (m stays 8-bit: a max
    over an 8-bit v climbs its rounding noise; see docs/low-memory.md). torch.optim's
    optimizers keep "fp32".

    Example:
        >>> import torch, adamkit
        >>> from adamkit.diagnostics import state_formats
        >>> big, small = torch.nn.Parameter(torch.zeros(8192)), torch.nn.Parameter(torch.zeros(10))
        >>> opt = adamkit.AdamW([("big", big), ("small", small)], state_precision="8bit")
        >>> state_formats(opt)
        {'big': '8bit', 'small': 'fp32'}
    """
    optimizer = unwrap(optimizer)
    precision_of = getattr(optimizer, "precision_of", None)
    return {
        name: precision_of(p, group) if precision_of is not None else "fp32"
        for gi, group in enumerate(optimizer.param_groups)
        for name, p in zip(_names(gi, group), group["params"], strict=True)
    }


def _rms(x: Tensor) -> float:
    return x.square().mean().sqrt().item() if x.numel() else float("nan")


QUANTILE_ELEMENTS = 4096


def _stride(n: int) -> int:
    """k such that every k-th of ``n`` elements is at most QUANTILE_ELEMENTS of them."""
    return max(1, -(-n // QUANTILE_ELEMENTS))


def _quantiles(x: Tensor, qs: list[float]) -> list[float]:
    """Linearly interpolated quantiles (as torch.quantile), on every k-th element when ``x``
    is longer than QUANTILE_ELEMENTS: partitioning is the costliest part of a snapshot."""
    if not x.numel():
        return [float("nan")] * len(qs)
    return [float(v) for v in np.quantile(x[:: _stride(x.numel())].cpu().numpy(), qs)]


def _median(x: Tensor) -> float:
    return _quantiles(x, [0.5])[0]


def summarize(e: Elements | None) -> dict[str, Any]:
    """The summaries of one group's :class:`Elements` (``{}`` before its first step)."""
    if e is None:
        return {}
    out: dict[str, Any] = {"step": e.step}
    lr = e.effective_lr
    p10, median, p90 = _quantiles(lr, [0.1, 0.5, 0.9])
    values = (lr.min().item(), p10, median, p90, lr.max().item())
    out["effective_lr"] = dict(zip(EFFECTIVE_LR_STATS, values, strict=True))
    if e.momentum is not None:
        out["m_hat_rms" if e.algorithm in ADAM_LIKE else "momentum_rms"] = _rms(e.momentum)
    if e.sqrt_v is not None:
        hat = e.algorithm in BIAS_CORRECTED_SCALE
        out["sqrt_v_hat_rms" if hat else "sqrt_v_rms"] = _rms(e.sqrt_v)
        out["eps_dominated"] = (e.sqrt_v < e.eps).double().mean().item()
        k = _stride(lr.numel())  # on every k-th element, as the other percentiles
        adaptive = lr[::k][e.sqrt_v[::k] >= e.eps]
        quantiles = _quantiles(adaptive, [0.1, 0.5, 0.9])
        out["effective_lr_adaptive"] = dict(zip(ADAPTIVE_STATS, quantiles, strict=True))
    if e.algorithm in ADAM_LIKE:
        # On every k-th element first (as the other percentiles), then those with v̂ > 0:
        # masking the whole group first took a third of a small model's snapshot.
        k = _stride(e.sqrt_v.numel())
        m_hat, sqrt_v = e.momentum[::k].abs(), e.sqrt_v[::k]
        has_scale = sqrt_v > 0
        out["snr"] = _median(m_hat[has_scale] / sqrt_v[has_scale])
    out["update_rms"] = _rms(e.update)
    param_norm = e.param.norm().item()
    out["update_to_param"] = e.update.norm().item() / param_norm if param_norm else float("nan")
    if e.momentum is not None and e.grad is not None:
        out["momentum_agreement"] = (e.momentum.sign() == e.grad.sign()).double().mean().item()
    if e.grad is not None:
        out["grad_rms"] = _rms(e.grad)  # |g| of the gradient still in .grad, beside m̂
    if e.slow_ema is not None:
        out["slow_ema_rms"] = _rms(e.slow_ema)
    out.update(e.group_values or {})
    return out


def flatten(summary: dict[str, Any]) -> dict[str, float]:
    """``{"effective_lr": {"min": a}}`` → ``{"effective_lr.min": a}``."""
    flat = {}
    for key, value in summary.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat
