"""Per-element quantities of an optimizer's last step, read from its state.

Nothing here re-runs the update: m̂, √v̂ and the effective learning rate come from the moments
the optimizer stored, which are the ones its last step used. Works for adamkit's optimizers and
for torch.optim's namesakes (same state format).

For a large group, summaries are computed on a fixed, evenly spread sample of elements (at most
``max_elements`` per group); groups smaller than that are used whole, so the numbers are exact.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..kernels._tensors import real_view


@dataclass
class Elements:
    """Flat float64 vectors over (a sample of) a group's elements; None where it doesn't apply."""

    algorithm: str
    param: Tensor
    update: Tensor  # what the last step subtracted from φ (weight decay not included)
    grad: Tensor | None = None  # the gradient still in .grad (maximize: its negation)
    momentum: Tensor | None = None  # Adam's m̂, or the momentum buffer of SGD/RMSprop
    sqrt_v: Tensor | None = None  # Adam's √v̂, RMSprop's denominator without ε
    effective_lr: Tensor | None = None  # α / (√v̂ + ε) per element
    eps: float = 0.0
    step: int = 0


def algorithm_of(optimizer: torch.optim.Optimizer) -> str:
    """'adam', 'sgd' or 'rmsprop' for adamkit's optimizers and torch.optim's namesakes."""
    name = getattr(optimizer, "algorithm", None)
    if name is not None:
        return name
    for cls, algorithm in (
        (torch.optim.Adam, "adam"),
        (torch.optim.AdamW, "adam"),
        (torch.optim.SGD, "sgd"),
        (torch.optim.RMSprop, "rmsprop"),
    ):
        if isinstance(optimizer, cls):
            return algorithm
    raise TypeError(
        f"diagnostics support Adam, AdamW, SGD and RMSprop (adamkit or torch.optim); "
        f"got {type(optimizer).__name__}"
    )


@functools.lru_cache(maxsize=256)
def _sample_index(n: int, k: int) -> Tensor:
    """k distinct indices spread over range(n) without lining up with rows of a matrix: a
    stride near n/φ (golden ratio) that shares no factor with n."""
    stride = max(1, round(n * 0.6180339887))
    while math.gcd(stride, n) != 1:
        stride += 1
    return (torch.arange(k, dtype=torch.int64) * stride) % n


def _flat(t: Tensor, count: int) -> Tensor:
    flat = real_view(t.detach()).reshape(-1)
    if count < flat.numel():
        flat = flat[_sample_index(flat.numel(), count).to(flat.device)]
    return flat.to(torch.float64)


def _value(x: Any) -> float:
    return float(x.item()) if isinstance(x, Tensor) else float(x)


def group_elements(
    algorithm: str,
    group: dict[str, Any],
    state: dict[Tensor, dict[str, Any]],
    params: list[Tensor] | None = None,
    max_elements: int = 1 << 16,
) -> Elements | None:
    """The per-element quantities of ``params`` (default: the group's stepped params)."""
    # Stepped params: those with state (SGD without momentum keeps none: those with a grad).
    params = [
        p
        for p in (params or group["params"])
        if state.get(p) or (algorithm == "sgd" and p.grad is not None)
    ]
    total = sum(real_view(p).numel() for p in params)
    if total == 0:
        return None
    fraction = min(1.0, max_elements / total)
    counts = [max(1, round(real_view(p).numel() * fraction)) for p in params]
    counts = [min(c, real_view(p).numel()) for c, p in zip(counts, params, strict=True)]
    parts = [
        _per_param(algorithm, group, state.get(p, {}), p, c)
        for p, c in zip(params, counts, strict=True)
    ]
    cat = lambda key: (  # noqa: E731
        torch.cat([part[key] for part in parts]) if parts[0].get(key) is not None else None
    )
    return Elements(
        algorithm=algorithm,
        param=cat("param"),
        update=cat("update"),
        grad=cat("grad") if all(part.get("grad") is not None for part in parts) else None,
        momentum=cat("momentum"),
        sqrt_v=cat("sqrt_v"),
        effective_lr=cat("effective_lr"),
        eps=float(group.get("eps", 0.0)),
        step=max(int(_value(state.get(p, {}).get("step", 0))) for p in params),
    )


def _per_param(
    algorithm: str, group: dict[str, Any], st: dict[str, Any], p: Tensor, count: int
) -> dict[str, Tensor | None]:
    lr = _value(group["lr"])
    sign = -1.0 if group.get("maximize") else 1.0
    grad = _flat(p.grad, count) * sign if p.grad is not None and not p.grad.is_sparse else None
    out: dict[str, Tensor | None] = {"param": _flat(p, count), "grad": grad}
    if algorithm == "adam":
        beta1, beta2 = (_value(b) for b in group["betas"])
        t = _value(st["step"])
        v = st["max_exp_avg_sq"] if group.get("amsgrad") else st["exp_avg_sq"]
        m_hat = _flat(st["exp_avg"], count) / (1 - beta1**t)
        sqrt_v_hat = (_flat(v, count) / (1 - beta2**t)).sqrt()
        effective_lr = lr / (sqrt_v_hat + group["eps"])
        out.update(
            momentum=m_hat,
            sqrt_v=sqrt_v_hat,
            effective_lr=effective_lr,
            update=effective_lr * m_hat,
        )
    elif algorithm == "rmsprop":
        v = _flat(st["square_avg"], count)
        if group.get("centered"):
            v = v - _flat(st["grad_avg"], count) ** 2
        sqrt_v = v.sqrt()
        effective_lr = lr / (sqrt_v + group["eps"])
        buf = st.get("momentum_buffer")
        if buf is not None and group.get("momentum", 0) > 0:
            out.update(momentum=_flat(buf, count), update=lr * _flat(buf, count))
        else:
            out.update(update=effective_lr * grad if grad is not None else torch.zeros(count))
        out.update(sqrt_v=sqrt_v, effective_lr=effective_lr)
    else:  # sgd
        buf = st.get("momentum_buffer")
        if buf is not None:
            buf = _flat(buf, count)
            nesterov = group.get("nesterov") and grad is not None
            direction = grad + group["momentum"] * buf if nesterov else buf
            out.update(momentum=buf, update=lr * direction)
        else:
            out.update(update=lr * grad if grad is not None else torch.zeros(count))
        out.update(effective_lr=torch.full((count,), lr, dtype=torch.float64))
    return out
