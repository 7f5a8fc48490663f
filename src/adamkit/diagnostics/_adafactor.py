"""Adafactor's per-element quantities, read from its factored state (for :mod:`.elementwise`).

Adafactor keeps no first moment and, for a matrix, no per-element second moment: V̂ is rebuilt
at the sampled elements from the row and column statistics the last step used,
V̂ = R·C / max(mean(R), ε1) (a vector keeps V itself). Per tensor, as that step computed them
(:mod:`adamkit.reference.adafactor`):

* ρ_t = min(lr, 1/√t) and α_t = max(ε2, RMS(φ))·ρ_t, with the param as it is now (the step
  took the RMS before its own update and decay, which change it by about ρ_t);
* the clip divisor d_t = max(1, RMS(U)/d) of U = g/√max(V̂, ε1²), over the whole tensor, from
  the gradient still in ``.grad`` (in row chunks: no param-sized temporary); 1 where there is
  none.

The effective learning rate of an element is α_t/(d_t·√max(V̂, ε1²)): its step per unit of
gradient. ε1 is the group's, or the machine epsilon of the first param's dtype (torch's rule:
the first param it steps decides for the group).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from . import _sampling

# Elements of U per chunk when its whole-tensor RMS is taken.
_CHUNK = 1 << 20


def elements(
    e: Any, group: dict[str, Any], params: list[Tensor], states: list[dict], plan: Any
) -> None:
    """Fill ``e`` (an :class:`~.elementwise.Elements` whose param and grad samples follow
    ``plan``, a :class:`~._sampling.Sample`) with Adafactor's √V̂, ε1, effective lr, update and
    group values."""
    lr = float(group["lr"])
    eps1, eps2 = group["eps"]
    eps1 = torch.finfo(params[0].dtype).eps if eps1 is None else float(eps1)
    sqrt_v, effective_lr, update = [], [], []
    clipped, with_grad = 0, 0
    for p, state, share in zip(params, states, plan.shares, strict=True):
        index = _sample_index(p.numel(), share)
        v_hat = _v_hat(state, p.shape, eps1)
        v = v_hat(index)
        floored = v.clamp_min(eps1 * eps1).sqrt()
        t = float(state["step"])
        alpha = max(float(eps2), _rms(p.detach().double())) * min(lr, 1.0 / math.sqrt(t))
        grad = p.grad
        divisor = 1.0
        if grad is not None and not grad.is_sparse:
            g = -grad if group.get("maximize") else grad
            divisor = max(1.0, _rms_u(g, state, v_hat, eps1) / float(group["d"]))
            with_grad += 1
            clipped += divisor > 1.0
            g_sample = g.detach().reshape(-1)[index].double()
        else:
            g_sample = torch.zeros_like(v)
        lr_per_element = alpha / divisor / floored
        sqrt_v.append(v.sqrt())
        effective_lr.append(lr_per_element)
        update.append(lr_per_element * g_sample)
    e.sqrt_v, e.eps = torch.cat(sqrt_v), eps1
    e.effective_lr, e.update = torch.cat(effective_lr), torch.cat(update)
    e.group_values = {
        "relative_step": min(lr, 1.0 / math.sqrt(e.step)) if e.step else float("nan"),
        "clipped_fraction": clipped / with_grad if with_grad else float("nan"),
    }


def _sample_index(numel: int, share: int) -> Tensor:
    """The flat indices :func:`adamkit.diagnostics._sampling.blocks` samples, in its order."""
    layout = _sampling.blocks(numel, share)
    if layout is None:
        return torch.arange(numel)
    starts = torch.arange(layout.count) * layout.spacing
    return (starts[:, None] + torch.arange(layout.length)[None, :]).reshape(-1)


def _v_hat(state: dict[str, Any], shape: torch.Size, eps1: float):
    """A function of flat indices to V̂ there (float64)."""
    if "variance" in state:
        variance = state["variance"].detach().reshape(-1).double()
        return lambda index: variance[index]
    n, m = shape[-2], shape[-1]
    rows = state["row_var"].detach().double().reshape(-1, n)  # (batch, n)
    cols = state["col_var"].detach().double().reshape(-1, m)  # (batch, m)
    row_mean = rows.mean(dim=1).clamp_min(eps1)  # (batch,)
    rows, cols = rows.reshape(-1), cols

    def at(index: Tensor) -> Tensor:
        batch, col = index // (n * m), index % m
        return rows[index // m] * cols[batch, col] / row_mean[batch]

    return at


def _rms_u(g: Tensor, state: dict[str, Any], v_hat, eps1: float) -> float:
    """RMS(g/√max(V̂, ε1²)) over the whole tensor, a chunk of elements at a time."""
    flat = g.detach().reshape(-1)
    total = 0.0
    for start in range(0, flat.numel(), _CHUNK):
        index = torch.arange(start, min(start + _CHUNK, flat.numel()))
        u2 = flat[index].double().square() / v_hat(index).clamp_min(eps1 * eps1)
        total += float(u2.sum())
    return math.sqrt(total / max(1, flat.numel()))


def _rms(x: Tensor) -> float:
    return float(x.norm()) / math.sqrt(x.numel()) if x.numel() else 0.0
