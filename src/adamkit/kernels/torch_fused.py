"""torch's own fused kernels (``torch._fused_adam_``, ``_fused_adamw_``, ``_fused_sgd_``),
called as torch.optim calls them with ``fused=True``: the CUDA default for Adam, AdamW and SGD
until adamkit's Triton kernels have passed the parity suite on a GPU (docs/triton.md).

The signature of the spec kernels (:mod:`adamkit.kernels.spec_kernels`), plus GradScaler's
``grad_scale`` and ``found_inf``. torch's fused kernels read their step counters as float32
tensors on the parameters' device (torch.optim keeps them so for ``fused=True``); adamkit
counts in float64 (exact past 2^24), so each call hands them a float32 copy of the counts on
the device, made in one stack and one copy. The tensors torch's kernels cannot take (complex,
non-contiguous, lazy conjugate/negative bits, state of another dtype) take torch's foreach
functional update, in float32 for half parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..algorithms import adam as adam_spec
from ..algorithms import sgd as sgd_spec
from . import wrappers
from ._tensors import has_lazy_bits, increment, pick, scalar
from .spec_kernels import torch_order

_ADAM_FOREACH = torch_order(adam_spec.SPEC, foreach=True)
_SGD_FOREACH = torch_order(sgd_spec.SPEC, foreach=True)

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
        increment(pick(steps, idx), found_inf)
        op(
            *[pick(ts, idx) for ts in lists], _device_steps(pick(steps, idx), device),
            lr=_lr(group["lr"], device), beta1=beta1, beta2=beta2,
            weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=amsgrad,
            maximize=group["maximize"], grad_scale=_on(grad_scale, device),
            found_inf=_on(found_inf, device),
        )  # fmt: skip


def sgd(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momentum_buffers: Sequence[Tensor],
    steps: Sequence[Tensor],
    aux: Sequence[Tensor],
    *,
    group: dict[str, Any],
    grad_scale: Tensor | None = None,
    found_inf: Tensor | None = None,
) -> None:
    """SGD by torch's fused kernel, with the spec kernels' signature: ``steps`` hold SGD's
    markers (:data:`adamkit.algorithms.sgd.FIRST` where a buffer starts: torch's
    ``is_first_step``, b = g, into the zeros the optimizer made)."""
    lists = (params, grads, momentum_buffers)
    groups, rest = _split(len(params), lists)
    if rest:  # first: an error there leaves every other tensor as it was
        if grad_scale is not None or found_inf is not None:
            raise ValueError(_AMP_REST)
        foreach = wrappers.half_in_float32(_SGD_FOREACH)
        foreach(*[pick(ts, rest) if ts else [] for ts in (*lists, steps)], [], group=group)
    hyper = {
        "weight_decay": group["weight_decay"], "momentum": group["momentum"],
        "dampening": group["dampening"], "nesterov": group["nesterov"],
        "maximize": group["maximize"],
    }  # fmt: skip
    for idx in groups:
        device = params[idx[0]].device
        amp = {"grad_scale": _on(grad_scale, device), "found_inf": _on(found_inf, device)}
        # Without momentum one call; with it, one for the buffers that start now and one for
        # the others.
        new = [i for i in idx if momentum_buffers and sgd_spec.is_first(steps[i])]
        old = [i for i in idx if i not in set(new)]
        for sub, first in ((new, True), (old, False)):
            if sub:
                torch._fused_sgd_(
                    pick(params, sub), pick(grads, sub),
                    pick(momentum_buffers, sub) if momentum_buffers else [],
                    lr=_lr(group["lr"], device), is_first_step=first, **hyper, **amp,
                )  # fmt: skip
