"""Fused CPU kernels: each tensor is updated in one pass by a numba loop, with no temporaries.

Same signatures as :mod:`adamkit.kernels.forloop`. Tensors the single-pass loop cannot take
as they are (non-contiguous ones, state with other strides, dtypes other than float32 and
float64) go to the for-loop kernel. Complex tensors are updated through their real views.
float16/bfloat16 parameters reach these loops as float32 copies: the optimizers wrap every
kernel in :func:`adamkit.kernels.wrappers.half_in_float32`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from . import _numba_cpu as loops
from . import forloop
from ._tensors import real_view, scalar

_FAST_DTYPES = (torch.float32, torch.float64)
_NO_ARRAY = {torch.float32: np.empty(0, np.float32), torch.float64: np.empty(0, np.float64)}


# Arrays at least this long are split across threads (the loops release the GIL); below it,
# handing work to another thread costs more than it saves.
SPLIT_MIN_ELEMENTS = 1 << 18
_pool: ThreadPoolExecutor | None = None


def _run(loop, arrays: list[np.ndarray], hyper: tuple, flags: tuple) -> None:
    """Run ``loop`` over ``arrays`` (same length, or empty placeholders), in parallel chunks
    when they are long."""
    global _pool
    n = arrays[0].size
    workers = torch.get_num_threads()
    if n < SPLIT_MIN_ELEMENTS or workers < 2:
        loop(*arrays, hyper, flags)
        return
    if _pool is None or _pool._max_workers != workers:
        _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="adamkit")
    bounds = [n * k // workers // 64 * 64 for k in range(workers)] + [n]
    jobs = [
        _pool.submit(loop, *[a[lo:hi] if a.size == n else a for a in arrays], hyper, flags)
        for lo, hi in itertools.pairwise(bounds)
    ]
    for job in jobs:
        job.result()


_NUMPY_SCALAR = {torch.float32: np.float32, torch.float64: np.float64}


def _typed(dtype: torch.dtype, *values: float) -> tuple:
    """Scalars in the arrays' dtype, so float32 data is computed in float32 as torch does."""
    to_scalar = _NUMPY_SCALAR[dtype]
    return tuple(to_scalar(v) for v in values)


def _complement(dtype: torch.dtype, weight: float) -> float:
    """``1 - weight`` as torch's lerp computes it: in the data's dtype, after rounding weight."""
    to_scalar = _NUMPY_SCALAR[dtype]
    return float(to_scalar(1) - to_scalar(weight))


def _flat(t: Tensor) -> np.ndarray:
    return real_view(t.detach()).reshape(-1).numpy()


def _split(params: Sequence[Tensor], *others: Sequence[Tensor]) -> tuple[list[int], list[int]]:
    """Indices of tensors the loops take directly, and of those that need another path."""
    fast, other = [], []
    for i, p in enumerate(params):
        real_dtype = real_view(p).dtype if p.is_complex() else p.dtype
        ok = (
            p.device.type == "cpu"
            and real_dtype in _FAST_DTYPES
            and all(seq[i].is_contiguous() and not seq[i].is_sparse for seq in (params, *others))
        )
        (fast if ok else other).append(i)
    return fast, other


def _pick(seq: Sequence[Tensor], idx: list[int]) -> list[Tensor]:
    return [seq[i] for i in idx] if seq else []


def _slow_path(kernel, params, mutable: list[Sequence[Tensor]], other_idx, *extra, **kw) -> None:
    """The for-loop kernel on the tensors ``other_idx``."""
    kernel(
        _pick(params, other_idx),
        *[_pick(m, other_idx) for m in mutable],
        *[_pick(e, other_idx) for e in extra],
        **kw,
    )


def adam(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    max_exp_avg_sqs: Sequence[Tensor],
    steps: Sequence[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    amsgrad: bool,
    maximize: bool,
    capturable: bool = False,
) -> None:
    """Adam/AdamW in one pass per tensor; see :func:`adamkit.kernels.forloop.adam` for the math."""
    lr = scalar(lr)
    state = [grads, exp_avgs, exp_avg_sqs] + ([max_exp_avg_sqs] if amsgrad else [])
    fast, other = _split(params, *state)
    wd = float(weight_decay)
    decay = 1 - lr * wd if decoupled_weight_decay and wd != 0 else 1.0
    flags = (bool(maximize), wd != 0 and not decoupled_weight_decay, bool(amsgrad))
    for i in fast:
        p = params[i]
        t = steps[i].item()
        dtype = real_view(p).dtype
        hyper = _typed(
            dtype,
            decay,
            wd,
            1 - beta1,
            _complement(dtype, 1 - beta1),
            beta2,
            1 - beta2,
            eps,
            lr / (1 - beta1**t),
            (1 - beta2**t) ** 0.5,
        )
        vmax = _flat(max_exp_avg_sqs[i]) if amsgrad else _NO_ARRAY[dtype]
        arrays = [_flat(p), _flat(grads[i]), _flat(exp_avgs[i]), _flat(exp_avg_sqs[i]), vmax]
        _run(loops.adam, arrays, hyper, flags)
    if other:
        kw = dict(
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
        )
        _slow_path(
            forloop.adam,
            params,
            [grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else []],
            other,
            steps,
            **kw,
        )


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
    """SGD in one pass per tensor; see :func:`adamkit.kernels.forloop.sgd` for the math."""
    fallback_kw = dict(
        lr=lr,
        momentum=momentum,
        dampening=dampening,
        weight_decay=weight_decay,
        nesterov=nesterov,
        maximize=maximize,
    )
    if any(g.is_sparse for g in grads):
        forloop.sgd(params, grads, momentum_buffers, **fallback_kw)
        return
    lr = scalar(lr)
    first = [momentum != 0 and momentum_buffers[i] is None for i in range(len(params))]
    if momentum != 0:
        for i, is_first in enumerate(first):
            if is_first:  # the loop writes b_1 = g_1 into it
                momentum_buffers[i] = torch.empty_like(
                    grads[i], memory_format=torch.preserve_format
                )
    bufs = momentum_buffers if momentum != 0 else []
    fast, other = _split(params, grads, *([bufs] if bufs else []))
    wd = float(scalar(weight_decay))
    for i in fast:
        p = params[i]
        dtype = real_view(p).dtype
        hyper = _typed(dtype, lr, momentum, 1 - dampening, wd)
        buf = _flat(bufs[i]) if bufs else _NO_ARRAY[dtype]
        flags = (bool(nesterov), bool(maximize), bool(first[i]), wd != 0, momentum != 0)
        _run(loops.sgd, [_flat(p), _flat(grads[i]), buf], hyper, flags)
    if other:
        for i in other:
            if first[i]:
                momentum_buffers[i] = None  # let the for-loop kernel start the buffer itself
        sub_bufs = _pick(momentum_buffers, other) if momentum != 0 else []
        forloop.sgd(_pick(params, other), _pick(grads, other), sub_bufs, **fallback_kw)
        for j, i in enumerate(other if momentum != 0 else []):
            momentum_buffers[i] = sub_bufs[j]


def rmsprop(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    square_avgs: Sequence[Tensor],
    grad_avgs: Sequence[Tensor],
    momentum_buffers: Sequence[Tensor],
    steps: Sequence[Tensor],
    *,
    lr: float | Tensor,
    alpha: float,
    eps: float,
    weight_decay: float,
    momentum: float,
    centered: bool,
    maximize: bool,
    capturable: bool = False,
) -> None:
    """RMSprop in one pass per tensor; see :func:`adamkit.kernels.forloop.rmsprop` for the math."""
    lr = scalar(lr)
    optional = ([grad_avgs] if centered else []) + ([momentum_buffers] if momentum > 0 else [])
    fast, other = _split(params, grads, square_avgs, *optional)
    flags = (bool(centered), bool(maximize), weight_decay != 0, momentum > 0)
    for i in fast:
        p = params[i]
        dtype = real_view(p).dtype
        lerp_complement = _complement(dtype, 1 - alpha)
        hyper = _typed(dtype, lr, alpha, 1 - alpha, lerp_complement, eps, weight_decay, momentum)
        none = _NO_ARRAY[dtype]
        gavg = _flat(grad_avgs[i]) if centered else none
        buf = _flat(momentum_buffers[i]) if momentum > 0 else none
        arrays = [_flat(p), _flat(grads[i]), _flat(square_avgs[i]), gavg, buf]
        _run(loops.rmsprop, arrays, hyper, flags)
    if other:
        kw = dict(
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )
        _slow_path(
            forloop.rmsprop,
            params,
            [grads, square_avgs, grad_avgs, momentum_buffers],
            other,
            steps,
            **kw,
        )
