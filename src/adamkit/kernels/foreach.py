"""The multi-tensor kernels: each operation applied to a whole list with torch._foreach_* ops.

Same math and operation order as :mod:`adamkit.kernels.forloop` (and torch.optim's foreach
path); fewer dispatches, but each operation makes a pass over memory and some allocate
temporaries the size of the parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._tensors import group_by_device_and_dtype, pick, scalar


def sgd(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float | Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """SGD over lists; see :func:`adamkit.kernels.forloop.sgd` for the math."""
    lr = scalar(lr)
    for idx in group_by_device_and_dtype(params):
        p = pick(params, idx)
        g = pick(grads, idx)
        if maximize:
            g = torch._foreach_neg(g)
        if weight_decay != 0:
            if maximize:
                torch._foreach_add_(g, p, alpha=weight_decay)
            else:
                g = torch._foreach_add(g, p, alpha=weight_decay)
        if momentum != 0:
            bufs = _momentum_buffers(g, momentum_buffers, idx, momentum, dampening)
            # Out of place: torch's foreach path adds into p.grad here; adamkit leaves grads alone.
            g = torch._foreach_add(g, bufs, alpha=momentum) if nesterov else bufs
        torch._foreach_add_(p, g, alpha=-lr)


def _momentum_buffers(
    grads: list[Tensor],
    momentum_buffers: list[Tensor | None],
    idx: list[int],
    momentum: float,
    dampening: float,
) -> list[Tensor]:
    """Update the existing buffers, create missing ones as copies of the gradient."""
    existing = [j for j, i in enumerate(idx) if momentum_buffers[i] is not None]
    if existing:
        bufs = [momentum_buffers[idx[j]] for j in existing]
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, [grads[j] for j in existing], alpha=1 - dampening)
    out = []
    for j, i in enumerate(idx):
        if momentum_buffers[i] is None:
            momentum_buffers[i] = grads[j].detach().clone()
        out.append(momentum_buffers[i])
    return out
