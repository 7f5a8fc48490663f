"""Fused CPU kernels: one pass over memory by numba loops, no temporaries, one call per group.

Same signatures as :mod:`adamkit.kernels.forloop`. All tensors of a dtype go to one numba call
as a table of data addresses and a chunk table, so the per-step cost does not grow with a
Python round trip per tensor; long groups are cut into one chunk table per thread (the loops
release the GIL). Tensors the loops cannot take as they are (non-contiguous ones, state with
other strides, dtypes other than float32 and float64) go to the for-loop kernel. Complex
tensors are updated through their real views. float16/bfloat16 parameters reach these loops as
float32 copies: the optimizers wrap kernels in :func:`adamkit.kernels.wrappers.half_in_float32`.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from . import _numba_cpu as loops
from . import forloop
from ._tensors import real_view, scalar

_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}
_LIKE = {dtype: np.empty(0, np_dtype) for dtype, np_dtype in _NUMPY.items()}

# Groups with at least this many elements are split across threads; below it, handing work to
# another thread costs more than it saves.
SPLIT_MIN_ELEMENTS = 1 << 18
_ALIGN = 64  # split points fall on multiples of this many elements (whole cache lines)
_pool: ThreadPoolExecutor | None = None
_CHUNK_TABLES: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()


def _chunk_tables(numels: tuple[int, ...], workers: int) -> list[np.ndarray]:
    """One (tensor, lo, hi) table per worker, covering every element once, with equal shares
    of elements; cached by the sizes."""
    key = (numels, workers)
    if key in _CHUNK_TABLES:
        _CHUNK_TABLES.move_to_end(key)
        return _CHUNK_TABLES[key]
    total = sum(numels)
    parts = workers if total >= SPLIT_MIN_ELEMENTS and workers > 1 else 1
    bounds = [total * k // parts // _ALIGN * _ALIGN for k in range(parts)] + [total]
    tables: list[list[tuple[int, int, int]]] = [[] for _ in range(parts)]
    start = 0  # first element of tensor t in the concatenation of all tensors
    for t, n in enumerate(numels):
        for k in range(parts):
            lo, hi = max(start, bounds[k]), min(start + n, bounds[k + 1])
            if lo < hi:
                tables[k].append((t, lo - start, hi - start))
        start += n
    result = [np.array(rows, dtype=np.int64).reshape(-1, 3) for rows in tables if rows]
    _CHUNK_TABLES[key] = result
    if len(_CHUNK_TABLES) > 64:
        _CHUNK_TABLES.popitem(last=False)
    return result


def _run(loop, numels: tuple[int, ...], *args) -> None:
    """``loop(chunk_table, *args)`` over all elements, on several threads when there are many."""
    global _pool
    workers = torch.get_num_threads()
    tables = _chunk_tables(numels, workers)
    if len(tables) == 1:
        loop(tables[0], *args)
        return
    helpers = len(tables) - 1  # the calling thread takes the first table itself
    if _pool is None or _pool._max_workers != helpers:
        _pool = ThreadPoolExecutor(max_workers=helpers, thread_name_prefix="adamkit")
    jobs = [_pool.submit(loop, table, *args) for table in tables[1:]]
    loop(tables[0], *args)
    for job in jobs:
        job.result()


@functools.lru_cache(maxsize=256)
def _typed(dtype: torch.dtype, *values: float) -> tuple:
    """Scalars in the arrays' dtype, so float32 data is computed in float32 as torch does."""
    to_scalar = _NUMPY[dtype]
    return tuple(to_scalar(v) for v in values)


@functools.lru_cache(maxsize=256)
def _complement(dtype: torch.dtype, weight: float) -> float:
    """``1 - weight`` as torch's lerp computes it: in the data's dtype, after rounding weight."""
    to_scalar = _NUMPY[dtype]
    return float(to_scalar(1) - to_scalar(weight))


_LOOP_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def _split(params: Sequence[Tensor], *others: Sequence[Tensor]) -> tuple[list[int], list[int]]:
    """Indices of tensors the loops take directly, and of those that need another path.

    Run on every step for every tensor, so it is written for speed: strided CPU tensors of
    the loops' dtypes, each contiguous (sparse gradients fail the layout test first).
    """
    fast, other = [], []
    strided = torch.strided
    for i, p in enumerate(params):
        ok = p.dtype in _LOOP_DTYPES and p.is_cpu and p.is_contiguous()
        if ok:
            for seq in others:
                t = seq[i]
                if t.layout is not strided or not t.is_contiguous():
                    ok = False
                    break
        if ok and p.numel() == 0:
            continue  # nothing to update
        (fast if ok else other).append(i)
    return fast, other


def _by_dtype(params: Sequence[Tensor], idx: list[int]) -> dict[torch.dtype, list[int]]:
    groups: dict[torch.dtype, list[int]] = {}
    for i in idx:
        groups.setdefault(real_view(params[i]).dtype, []).append(i)
    return groups


def _addresses(roles: list[Sequence[Tensor]], idx: list[int]) -> np.ndarray:
    """int64 table [role, tensor] of data addresses (a role's list may be a stand-in)."""
    return np.array([[ts[i].data_ptr() for i in idx] for ts in roles], dtype=np.int64)


def _numels(params: Sequence[Tensor], idx: list[int]) -> tuple[int, ...]:
    return tuple(real_view(params[i]).numel() for i in idx)


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
    """Adam/AdamW in one pass; see :func:`adamkit.kernels.forloop.adam` for the math."""
    lr = scalar(lr)
    state = [grads, exp_avgs, exp_avg_sqs] + ([max_exp_avg_sqs] if amsgrad else [])
    fast, other = _split(params, *state)
    wd = float(weight_decay)
    decay = 1 - lr * wd if decoupled_weight_decay and wd != 0 else 1.0
    flags = (bool(maximize), wd != 0 and not decoupled_weight_decay, bool(amsgrad))
    # params stand in for max_exp_avg_sqs without amsgrad: the loop does not touch them then.
    roles = [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else params]
    for dtype, idx in _by_dtype(params, fast).items():
        hyper = _typed(
            dtype, decay, wd, 1 - beta1, _complement(dtype, 1 - beta1), beta2, 1 - beta2, eps
        )
        ts = [steps[i].item() for i in idx]
        per_tensor = np.array(
            [[lr / (1 - beta1**t) for t in ts], [(1 - beta2**t) ** 0.5 for t in ts]],
            dtype=_NUMPY[dtype],
        )
        _run(
            loops.adam_chunks,
            _numels(params, idx),
            _addresses(roles, idx),
            per_tensor,
            _LIKE[dtype],
            hyper,
            flags,
        )
    if other:
        _slow_path(
            forloop.adam,
            params,
            [grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else []],
            other,
            steps,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
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
    """SGD in one pass; see :func:`adamkit.kernels.forloop.sgd` for the math."""
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
    flags = (bool(nesterov), bool(maximize), wd != 0, momentum != 0)
    for dtype, idx in _by_dtype(params, fast).items():
        _run(
            loops.sgd_chunks,
            _numels(params, idx),
            _addresses([params, grads, bufs or params], idx),
            np.array([first[i] for i in idx], dtype=np.uint8),
            _LIKE[dtype],
            _typed(dtype, lr, momentum, 1 - dampening, wd),
            flags,
        )
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
    """RMSprop in one pass; see :func:`adamkit.kernels.forloop.rmsprop` for the math."""
    lr = scalar(lr)
    optional = ([grad_avgs] if centered else []) + ([momentum_buffers] if momentum > 0 else [])
    fast, other = _split(params, grads, square_avgs, *optional)
    flags = (bool(centered), bool(maximize), weight_decay != 0, momentum > 0)
    # square_avgs stand in for the optional state the loop does not touch.
    roles = [
        params,
        grads,
        square_avgs,
        grad_avgs if centered else square_avgs,
        momentum_buffers if momentum > 0 else square_avgs,
    ]
    for dtype, idx in _by_dtype(params, fast).items():
        hyper = _typed(
            dtype,
            lr,
            alpha,
            1 - alpha,
            _complement(dtype, 1 - alpha),
            eps,
            weight_decay,
            momentum,
        )
        _run(
            loops.rmsprop_chunks,
            _numels(params, idx),
            _addresses(roles, idx),
            _LIKE[dtype],
            hyper,
            flags,
        )
    if other:
        _slow_path(
            forloop.rmsprop,
            params,
            [grads, square_avgs, grad_avgs, momentum_buffers],
            other,
            steps,
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
        )
