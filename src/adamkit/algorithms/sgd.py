r"""SGD with momentum (heavy ball or Nesterov), as torch.optim.SGD computes it.

The equations are :mod:`adamkit.reference.sgd`'s: ``b_1 = g_1`` (the buffer starts as the
first gradient, with no dampening), ``b_t = μ·b_{t-1} + (1-τ)·g_t`` after it, and
``φ_t = φ_{t-1} - α·d_t`` with ``d_t = g_t + μ·b_t`` (Nesterov), ``b_t`` or ``g_t`` (μ = 0).

SGD keeps no step count (torch's state is the buffer alone): its "counter" is a marker the
optimizer hands the kernels, :data:`FIRST` for a buffer that starts this step and
:data:`LATER` for the others, which the drivers read and never advance (``counted=False``).
Low-memory state keeps a real count beside its codes (for its rounding seeds); the buffer
starts at count 1 there too.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch.optim.sgd import sgd as torch_sgd

from . import _checks
from ._ops import where
from ._spec import (
    GO_ON_MARKER,
    START_MARKER,
    AlgorithmSpec,
    GroupScalars,
    Hyperparameter,
    rounded,
)

# The engine's markers of an uncounted spec (see adamkit.algorithms._spec).
FIRST, LATER = START_MARKER, GO_ON_MARKER


class Hyper(NamedTuple):  # h: the group's scalars in the data's dtype
    lr: float
    momentum: float
    one_minus_dampening: float
    weight_decay: float


def element(p, g, s0, s1, s2, h, k, f):
    lr, momentum, one_minus_dampening, wd = h[0], h[1], h[2], h[3]
    nesterov, maximize, l2, has_momentum = f[0], f[1], f[2], f[3]
    g = where(maximize, -g, g)
    g = where(l2, g + wd * p, g)
    buf = where(k[0] == 1, g, s0 * momentum + one_minus_dampening * g)  # k[0]: the count
    d = where(nesterov, g + momentum * buf, buf)
    u = lr * where(has_momentum, d, g)
    return p - u, buf, s1, s2, p, u, g


def advance(step, aux, b):
    return step + 1.0, aux  # low-memory state's count; the fp32 markers are not advanced


def tensor_scalars(step, aux, b):
    return step, 0.0, 0.0, 0.0


def group_scalars(group, dtype):
    momentum, wd = float(group["momentum"]), float(group["weight_decay"])
    h = Hyper(float(group["lr"]), momentum, 1 - float(group["dampening"]), wd)
    flags = (bool(group["nesterov"]), bool(group["maximize"]), wd != 0, momentum != 0)
    return GroupScalars(rounded(dtype, *h), (), flags)


def is_first(step: torch.Tensor) -> bool:
    """Whether a marker (or a low-memory count, advanced) says the buffer starts now."""
    return step is FIRST or (step is not LATER and float(step) == 1.0)


def torch_step(params, grads, states, steps, aux, group: dict[str, Any], **flags):
    """torch's functional SGD. It starts a buffer itself where it gets None (b = g); the
    buffers the optimizer made for this step take its values, so state keeps its tensors
    (a sparse gradient's buffer, sparse as in torch, replaces the list's entry instead: the
    optimizer writes the list back)."""
    made = states[0]
    buffers = [None if is_first(s) else b for b, s in zip(made, steps, strict=False)]
    if not made:
        buffers = [None] * len(params)
    wd, maximize = group["weight_decay"], group["maximize"]
    if flags["foreach"] and group["nesterov"] and not maximize and wd == 0:
        # torch's foreach path adds μ·b into the gradients in place: the caller's p.grad
        grads = [g.clone() for g in grads]
    torch_sgd(
        params, grads, buffers, weight_decay=wd, momentum=group["momentum"], lr=flags["lr"],
        dampening=group["dampening"], nesterov=group["nesterov"], maximize=maximize,
        foreach=flags["foreach"],
        has_sparse_grad=any(g.is_sparse for g in grads),
    )  # fmt: skip
    for i, (buf, new) in enumerate(zip(made, buffers, strict=False)):
        if new is buf:
            continue
        if buf is not None and new.layout == buf.layout:
            buf.copy_(new)
        else:
            made[i] = new


SPEC = AlgorithmSpec(
    name="sgd",
    torch_name="SGD",
    hyperparameters=(
        Hyperparameter("lr", 1e-3, _checks.nonnegative),
        Hyperparameter("momentum", 0, _checks.nonnegative),
        Hyperparameter(
            "dampening", 0, lambda n, v: _checks.unit_interval(n, v, upper_inclusive=True)
        ),
        Hyperparameter("weight_decay", 0, _checks.nonnegative),
        Hyperparameter("nesterov", False),
    ),
    tensor_state=("momentum_buffer",),
    element=element,
    group_scalars=group_scalars,
    advance=advance,
    tensor_scalars=tensor_scalars,
    torch_functional=torch_step,
    slot_flags=(3,),  # the buffer with momentum
    slot_options=("momentum",),
    counted=False,
)
