"""Fused CUDA kernels in Triton: every tensor of a group in one launch, one pass over memory.

Same signatures as :mod:`adamkit.kernels.forloop`, plus GradScaler's ``grad_scale`` and
``found_inf`` (unscale inside the kernel; with an Inf found nothing is written). On a machine
without a GPU the same kernels run on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1``), which is how CI checks them.

How a launch is laid out: tensors are grouped by device and dtypes; each group gets tables of
data addresses (one int64 per tensor for p, g and each state) and a block table (for every
block of BLOCK elements: which tensor, and where in it it starts). One program per block looks
its tensor up, loads the addresses and updates its elements. Tables are cached by the tensors'
addresses and sizes, so a training loop whose tensors stay put (static grads, CUDA graphs)
builds them once. Bias corrections come from a per-tensor table computed once per step: on the
device with torch ops when the step counts live there (``capturable``/``fused=True``), so the
step needs no host synchronisation.

Arithmetic is float32 for float32/float16/bfloat16 parameters (state may be float32 for half
parameters) and float64 for float64. No autotuning: a kernel that updates in place must not be
run several times by a tuner, and a memory-bound elementwise kernel has little to tune.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import _triton_tables as tables
from . import forloop, wrappers
from ._tensors import pick, real_view

# --------------------------------------------------------------------------- kernels

BLOCK, TL = tables.BLOCK, tables.TL  # elements per program; torch dtype -> Triton dtype


@triton.jit
def _locate(
    block_tensor, block_start, numels, found_inf, HAS_FOUND_INF: tl.constexpr, B: tl.constexpr
):
    pid = tl.program_id(0)
    t = tl.load(block_tensor + pid)
    offs = tl.load(block_start + pid) + tl.arange(0, B)
    n = tl.load(numels + t)
    if HAS_FOUND_INF:  # GradScaler found an Inf: mask every element off
        n = tl.where(tl.load(found_inf) == 0, n, 0)
    mask = offs < n
    return t, offs, mask


@triton.jit
def _load_grad(
    g_addr,
    t,
    offs,
    mask,
    grad_scale,
    G: tl.constexpr,
    C: tl.constexpr,
    HAS_SCALE: tl.constexpr,
    MAXIMIZE: tl.constexpr,
):
    g = tl.load(tl.load(g_addr + t).to(tl.pointer_type(G)) + offs, mask=mask).to(C)
    if HAS_SCALE:
        g = g / tl.load(grad_scale).to(C)
    if MAXIMIZE:
        g = -g
    return g


@triton.jit
def _sgd_kernel(
    block_tensor, block_start, numels, p_addr, g_addr, buf_addr, first, hyper, lr_ptr,
    grad_scale, found_inf,
    P: tl.constexpr, G: tl.constexpr, S: tl.constexpr, C: tl.constexpr,
    MAXIMIZE: tl.constexpr, WD: tl.constexpr, MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr,
    HAS_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr, B: tl.constexpr,
):  # fmt: skip
    t, offs, mask = _locate(block_tensor, block_start, numels, found_inf, HAS_FOUND_INF, B)
    lr = tl.load(lr_ptr).to(C)
    p_ptr = tl.load(p_addr + t).to(tl.pointer_type(P))
    p = tl.load(p_ptr + offs, mask=mask).to(C)
    d = _load_grad(g_addr, t, offs, mask, grad_scale, G, C, HAS_SCALE, MAXIMIZE)
    if WD:
        d = d + tl.load(hyper + 2).to(C) * p
    if MOMENTUM:
        momentum = tl.load(hyper + 0).to(C)
        buf_ptr = tl.load(buf_addr + t).to(tl.pointer_type(S))
        if tl.load(first + t) != 0:
            buf = d
        else:
            buf = momentum * tl.load(buf_ptr + offs, mask=mask).to(C) + tl.load(hyper + 1).to(C) * d
        tl.store(buf_ptr + offs, buf.to(S), mask=mask)
        if NESTEROV:
            d = d + momentum * buf
        else:
            d = buf
    tl.store(p_ptr + offs, (p - lr * d).to(P), mask=mask)


def _lr_tensor(lr: float | Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    if isinstance(lr, Tensor):
        return lr.to(device=device, dtype=dtype)  # stays on the device: no synchronisation
    return tables.scalars((float(lr),), device, dtype)


def _flags(grad_scale: Tensor | None, found_inf: Tensor | None, device) -> tuple:
    dummy = tables.scalars((0.0,), device, torch.float32)
    return (
        grad_scale if grad_scale is not None else dummy,
        found_inf if found_inf is not None else dummy,
        grad_scale is not None,
        found_inf is not None,
    )


def _fallback(kernel, found_inf, grad_scale):
    """The for-loop kernel (half precision in float32) for tensors the launches don't take."""
    if grad_scale is not None or found_inf is not None:
        raise ValueError(
            "grad_scale/found_inf need contiguous float tensors on one device; "
            "got a tensor the Triton kernels cannot take"
        )
    return wrappers.half_in_float32(kernel)


# --------------------------------------------------------------------------- entry points


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
    """SGD; see :func:`adamkit.kernels.forloop.sgd` for the math. New momentum buffers are
    float32 for half-precision parameters."""
    grads = tables.readable(grads)
    bufs = momentum_buffers if momentum != 0 else []
    first = [False] * len(params)
    for i in range(len(bufs)):
        if bufs[i] is None and tables.fits([params[i], grads[i]]):
            first[i] = True
            dtype = torch.float32 if params[i].dtype in wrappers.HALF_DTYPES else None
            bufs[i] = torch.empty_like(grads[i], dtype=dtype)
    groups, other = tables.groups(params, grads, bufs)
    for idx in groups:
        p0 = params[idx[0]]
        roles = [[real_view(t) for t in pick(ts, idx)] for ts in (params, grads)]
        roles.append([real_view(t) for t in pick(bufs, idx)] or roles[1])
        plan = tables.plan(roles, p0.device)
        c = tables.compute_dtype(real_view(p0).dtype)
        first_flags = tables.scalars(tuple(float(first[i]) for i in idx), p0.device, torch.float32)
        hyper = tables.scalars(
            (float(momentum), 1.0 - dampening, float(weight_decay)), p0.device, c
        )
        scale, found, has_scale, has_found = _flags(grad_scale, found_inf, p0.device)
        _sgd_kernel[(plan.n_blocks,)](
            plan.block_tensor, plan.block_start, plan.numels, *plan.addresses, first_flags,
            hyper, _lr_tensor(lr, p0.device, c), scale, found,
            P=TL[roles[0][0].dtype], G=TL[roles[1][0].dtype], S=TL[roles[2][0].dtype],
            C=TL[c], MAXIMIZE=bool(maximize), WD=weight_decay != 0, MOMENTUM=momentum != 0,
            NESTEROV=bool(nesterov), HAS_SCALE=has_scale, HAS_FOUND_INF=has_found, B=BLOCK,
        )  # fmt: skip
    if other:
        sub = pick(bufs, other)
        _fallback(forloop.sgd, found_inf, grad_scale)(
            pick(params, other), pick(grads, other), sub, lr=lr, momentum=momentum,
            dampening=dampening, weight_decay=weight_decay, nesterov=nesterov, maximize=maximize,
        )  # fmt: skip
        for j, i in enumerate(other if bufs else []):
            bufs[i] = sub[j]
