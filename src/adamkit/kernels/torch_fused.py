"""torch's own fused kernels (``torch._fused_adam_``, ``_fused_adamw_``, ``_fused_sgd_``),
called as torch.optim calls them with ``fused=True``: the CUDA default for Adam, AdamW and SGD
until adamkit's Triton kernels have passed the parity suite on a GPU (docs/triton.md).

Same signatures as :mod:`adamkit.kernels.forloop`, plus GradScaler's ``grad_scale`` and
``found_inf``. torch's fused kernels read their step counters as float32 tensors on the
parameters' device (torch.optim keeps them so for ``fused=True``); adamkit counts in float64
(exact past 2^24), so each call hands them a float32 copy of the counts on the device, made in
one stack and one copy. The tensors torch's kernels cannot take (complex, non-contiguous,
lazy conjugate/negative bits, state of another dtype) take adamkit's torch-order foreach
kernel, in float32 for half parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..algorithms import adam as adam_spec
from . import foreach, wrappers
from ._tensors import add_one, has_lazy_bits, pick, scalar
from .spec_kernels import torch_order

_ADAM_FOREACH = torch_order(adam_spec.SPEC, foreach=True)

_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _takes(tensors: Sequence[Tensor | None]) -> bool:
    """Whether torch's fused kernel takes one parameter's tensors (param, grad, state)."""
    p = tensors[0]
    assert p is not None
    return p.dtype in _FUSED_DTYPES and all(
        t is None
        or (
            t.dtype == p.dtype
            and t.device == p.device
            and t.shape == p.shape
            and t.layout == torch.strided
            and t.is_contiguous()
            and not has_lazy_bits(t)
        )
        for t in tensors
    )


def _split(n: int, lists: Sequence[Sequence[Tensor | None]]) -> tuple[list[list[int]], list[int]]:
    """Indices of the tensors torch's fused kernel takes, grouped by device and dtype, and of
    the rest."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    rest = []
    for i in range(n):
        row = [ts[i] for ts in lists if ts]
        if _takes(row):
            groups.setdefault((row[0].device, row[0].dtype), []).append(i)  # type: ignore[union-attr]
        else:
            rest.append(i)
    return list(groups.values()), rest


def _device_steps(steps: Sequence[Tensor], device: torch.device) -> list[Tensor]:
    """The counts as torch's fused kernels read them: float32 scalars on ``device``."""
    return list(torch.stack(list(steps)).to(device=device, dtype=torch.float32).unbind())


def _on(x: Tensor | None, device: torch.device) -> Tensor | None:
    return None if x is None else x.to(device, non_blocking=True)


def _lr(lr: float | Tensor, device: torch.device) -> float | Tensor:
    """lr as torch's fused optimizers pass it: a float, or a tensor on the parameters' device
    (a tensor on the CPU is read as a float)."""
    if not isinstance(lr, Tensor):
        return float(lr)
    return lr.item() if lr.device.type == "cpu" else lr.to(device)


_AMP_REST = (
    "grad_scale/found_inf need contiguous real float tensors whose gradient and state have "
    "the parameter's dtype (what torch's fused kernels take); got another tensor"
)


def _rest(kernel, grad_scale: Tensor | None, found_inf: Tensor | None):
    """The torch-order foreach kernel (half precision in float32) for the other tensors."""
    if grad_scale is not None or found_inf is not None:
        raise ValueError(_AMP_REST)
    return wrappers.half_in_float32(kernel)


def adam(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    max_exp_avg_sqs: Sequence[Tensor],
    steps: Sequence[Tensor],
    aux: Sequence[Tensor],
    *,
    group: dict[str, Any],
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """Adam/AdamW by torch's fused kernel, with the spec kernels' signature (see
    :mod:`adamkit.kernels.spec_kernels`): the counters are advanced here, except where
    GradScaler found an Inf."""
    amsgrad = bool(group["amsgrad"])
    beta1, beta2 = (scalar(b) for b in group["betas"])
    lists = (params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else [])
    groups, rest = _split(len(params), lists)
    if rest:  # first: an error there leaves every other tensor as it was
        if grad_scale is not None or found_inf is not None:
            raise ValueError(_AMP_REST)
        foreach = wrappers.half_in_float32(_ADAM_FOREACH)  # counts its own steps
        foreach(*[pick(ts, rest) if ts else [] for ts in (*lists, steps)], [], group=group)
    op = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
    for idx in groups:
        device = params[idx[0]].device
        _increment(pick(steps, idx), found_inf)
        op(
            *[pick(ts, idx) for ts in lists], _device_steps(pick(steps, idx), device),
            lr=_lr(group["lr"], device), beta1=beta1, beta2=beta2,
            weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=amsgrad,
            maximize=group["maximize"], grad_scale=_on(grad_scale, device),
            found_inf=_on(found_inf, device),
        )  # fmt: skip


def _increment(steps: Sequence[Tensor], found_inf: Tensor | None) -> None:
    """Each counter one on, unless GradScaler found an Inf (without a synchronisation where
    the counters live on found_inf's device)."""
    if not steps:
        return
    add_one(steps)
    if found_inf is None:
        return
    if all(s.device == found_inf.device for s in steps):
        torch._foreach_sub_(list(steps), [found_inf.to(steps[0].dtype)] * len(steps))
    elif found_inf.item():
        torch._foreach_sub_(list(steps), 1)


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
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """SGD by torch's fused kernel; see :func:`adamkit.kernels.forloop.sgd`. A missing
    momentum buffer is made by the kernel's first step (``is_first_step``: b = g), as torch's
    fused SGD makes it."""
    groups, rest = _split(len(params), (params, grads, momentum_buffers))
    hyper = {
        "weight_decay": weight_decay, "momentum": momentum, "dampening": dampening,
        "nesterov": nesterov, "maximize": maximize,
    }  # fmt: skip
    for idx in groups:
        device = params[idx[0]].device
        amp = {"grad_scale": _on(grad_scale, device), "found_inf": _on(found_inf, device)}
        # Without momentum one call; with it, one for the buffers still to make (b = g) and
        # one for those that exist.
        new = [i for i in idx if momentum != 0 and momentum_buffers[i] is None]
        made = set(new)
        old = [i for i in idx if i not in made]
        for i in new:  # zeros, not torch's empty: a step skipped for an Inf keeps them
            momentum_buffers[i] = torch.zeros_like(grads[i])
        for sub, first in ((new, True), (old, False)):
            if sub:
                torch._fused_sgd_(
                    pick(params, sub), pick(grads, sub), pick(momentum_buffers, sub),  # type: ignore[arg-type]
                    lr=_lr(lr, device), is_first_step=first, **hyper, **amp,
                )  # fmt: skip
    if rest:
        bufs = pick(momentum_buffers, rest)
        _rest(foreach.sgd, grad_scale, found_inf)(
            pick(params, rest), pick(grads, rest), bufs, lr=lr, **hyper
        )
        for j, i in enumerate(rest if bufs else []):
            momentum_buffers[i] = bufs[j]
