"""Adafactor's per-element quantities, read from its factored state (for :mod:`.elementwise`).

Adafactor keeps no first moment and, for a matrix, no per-element second moment: V̂ is rebuilt
at the sampled elements from the row and column statistics the last step used,
V̂ = R·C / max(mean(R), ε1) (a vector keeps V itself). Per tensor, as that step computed them
(:mod:`adamkit.reference.adafactor`):

* ρ_t = min(lr, 1/√t) and α_t = max(ε2, RMS(φ))·ρ_t, with the param as it is now (the step
  took the RMS before its own update and decay, which change it by about ρ_t + lr·λ);
* the clip divisor d_t = max(1, RMS(U)/d) of U = g/√max(V̂, ε1²), over the whole tensor, from
  the gradient still in ``.grad`` (a chunk of rows at a time: no param-sized temporary); 1
  where there is none.

The effective learning rate of an element is α_t/(d_t·√max(V̂, ε1²)): its step per unit of
gradient. ε1 is resolved as the step resolved it (:func:`adamkit.optim.adafactor.step_eps1`),
and ε1 and ε1² are floors in the param's dtype, as torch's step applies them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ..optim.adafactor import step_eps1
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
    stepped = [q for q in group["params"] if q.grad is not None] or params
    eps1 = float(step_eps1(group, stepped))
    eps2 = float(group["eps"][1])
    sqrt_v, effective_lr, update = [], [], []
    clipped, with_grad = 0, 0
    for p, state, share in zip(params, states, plan.shares, strict=True):
        if not p.numel():
            continue  # (an empty param: nothing sampled, nothing stepped)
        row_floor, floor = (_in_dtype(x, p.dtype) for x in (eps1, eps1 * eps1))
        index = _sample_index(p.numel(), share)
        v_hat = _v_hat(state, p.shape, row_floor)
        v = v_hat(index)
        t = float(state["step"])
        # RMS(φ) as torch's step takes it: the norm in the param's dtype (no float64 copy)
        alpha = max(eps2, float(p.detach().norm()) / p.numel() ** 0.5) * min(lr, 1 / math.sqrt(t))
        grad = p.grad
        divisor = 1.0
        if grad is not None and not grad.is_sparse:
            g = -grad if group.get("maximize") else grad
            rms_u = math.sqrt(_sum_u2(g, state, row_floor, floor) / p.numel())
            divisor = max(1.0, rms_u / float(group["d"]))
            with_grad += 1
            clipped += divisor > 1.0
            g_sample = g.detach().reshape(-1)[index].double()
        else:
            g_sample = torch.zeros_like(v)
        lr_per_element = alpha / divisor / v.clamp_min(floor).sqrt()
        sqrt_v.append(v.sqrt())
        effective_lr.append(lr_per_element)
        update.append(lr_per_element * g_sample)
    e.sqrt_v, e.eps = torch.cat(sqrt_v), eps1
    e.effective_lr, e.update = torch.cat(effective_lr), torch.cat(update)
    e.group_values = {
        "relative_step": min(lr, 1.0 / math.sqrt(e.step)) if e.step else float("nan"),
        "clipped_fraction": clipped / with_grad if with_grad else float("nan"),
    }


def _in_dtype(x: float, dtype: torch.dtype) -> float:
    """``x`` rounded to ``dtype``, as torch's clamp of a tensor of that dtype applies it (ε1² of
    float32 is 0 in float16)."""
    return float(torch.tensor(x, dtype=torch.float64).to(dtype))


def _sample_index(numel: int, share: int) -> Tensor:
    """The flat indices :func:`adamkit.diagnostics._sampling.blocks` samples, in its order."""
    layout = _sampling.blocks(numel, share)
    if layout is None:
        return torch.arange(numel)
    starts = torch.arange(layout.count) * layout.spacing
    return (starts[:, None] + torch.arange(layout.length)[None, :]).reshape(-1)


def _factors(state: dict[str, Any], shape: torch.Size, row_floor: float):
    """(R/max(mean R, ε1) of shape (batch, n), C of shape (batch, m)), float64: V̂ = r_i·c_j."""
    n, m = shape[-2], shape[-1]
    rows = state["row_var"].detach().double().reshape(-1, n)
    cols = state["col_var"].detach().double().reshape(-1, m)
    return rows / rows.mean(dim=1, keepdim=True).clamp_min(row_floor), cols


def _v_hat(state: dict[str, Any], shape: torch.Size, row_floor: float):
    """A function of flat indices to V̂ there (float64)."""
    if "variance" in state:
        variance = state["variance"].detach().reshape(-1).double()
        return lambda index: variance[index]
    n, m = shape[-2], shape[-1]
    rows, cols = _factors(state, shape, row_floor)
    rows = rows.reshape(-1)

    def at(index: Tensor) -> Tensor:
        return rows[index // m] * cols[index // (n * m), index % m]

    return at


def _sum_u2(g: Tensor, state: dict[str, Any], row_floor: float, floor: float) -> float:
    """Σ g²/max(V̂, ε1²) over the whole tensor, a chunk of rows at a time. Where no V̂ of a
    matrix reaches the floor, Σ_ij g²_ij/(r_i·c_j) is a product with 1/c and a division by r."""
    if "variance" in state:
        v = state["variance"].detach().reshape(-1).double().clamp_min(floor)
        return float((g.detach().reshape(-1).double().square() / v).sum())
    n, m = g.shape[-2], g.shape[-1]
    # float32 sums (rows of m, then of n) unless the param is float64: a 4096x4096 matrix's
    # sum took 105 ms in float64, 4x its step (the clip divisor only needs a few digits)
    dtype = torch.float64 if g.dtype == torch.float64 else torch.float32
    rows, cols = (x.to(dtype) for x in _factors(state, g.shape, row_floor))
    g = g.detach().reshape(-1, n, m)
    total = 0.0
    for batches, row_range in _blocks(g.shape[0], n, m):
        g2 = g[batches, row_range].to(dtype).square()  # (k, rows, m)
        r, c = rows[batches, row_range], cols[batches]  # (k, rows), (k, m)
        r_min, c_min = float(r.min()), float(c.min())
        if r_min > 0 and c_min > 0 and r_min * c_min >= floor:
            total += float(((g2 @ (1.0 / c)[:, :, None]).squeeze(-1) / r).sum())
        else:
            total += float((g2 / (r[:, :, None] * c[:, None, :]).clamp_min(floor)).sum())
    return total


def _blocks(batches: int, n: int, m: int) -> list[tuple[slice, slice]]:
    """(batch range, row range) pieces of about _CHUNK elements: whole matrices together
    (a conv weight's 3x3 kernels are thousands of tiny ones), a big matrix by rows."""
    if n * m <= _CHUNK:
        k = _CHUNK // (n * m)
        return [(slice(b, b + k), slice(None)) for b in range(0, batches, k)]
    step = max(1, _CHUNK // m)
    return [
        (slice(b, b + 1), slice(r, r + step)) for b in range(batches) for r in range(0, n, step)
    ]
