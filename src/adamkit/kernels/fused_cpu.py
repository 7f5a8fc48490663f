"""Fused CPU kernels: one pass over memory by numba loops, no temporaries, one call per group.

Same signatures as :mod:`adamkit.kernels.forloop`. All tensors of a dtype go to one numba call
as a table of data addresses and a chunk table, so the per-step cost does not grow with a
Python round trip per tensor; long groups are cut into one chunk table per thread and run on
numba's thread pool. Tensors the loops cannot take as they are (non-contiguous ones, dtypes
other than float32 and float64, grads or state that are not contiguous CPU tensors of their
param's dtype and size, step counters that are not CPU float64 scalars) go to the for-loop
kernel. Complex tensors are updated through their real views. float16/bfloat16 parameters
reach these loops as float32 copies: the optimizers wrap kernels in
:func:`adamkit.kernels.wrappers.half_in_float32`.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from typing import NamedTuple

import numba
import numpy as np
import torch
from torch import Tensor

from . import _numba_cpu as loops
from . import forloop
from ._tensors import (
    LIKE,
    NUMPY_DTYPES,
    REAL_DTYPES,
    BoundedCache,
    add_one,
    pick,
    resolved,
    scalar,
)

# Groups with at least this many elements are split across threads; below it, launching the
# parallel loop costs more than the second thread saves (measured: 49k float32 Adam elements
# take 21 µs on one thread and 13 µs on two, launch included).
SPLIT_MIN_ELEMENTS = 1 << 14
_ALIGN = 64  # split points fall on multiples of this many elements (whole cache lines)


class ChunkTables(NamedTuple):
    """Rows (tensor, first element, end element); rows bounds[k]:bounds[k+1] are thread k's."""

    chunks: np.ndarray
    bounds: np.ndarray

    def table(self, k: int) -> np.ndarray:
        return self.chunks[self.bounds[k] : self.bounds[k + 1]]


_CHUNK_TABLES = BoundedCache(64)


def _chunk_tables(numels: tuple[int, ...], workers: int) -> ChunkTables:
    """One chunk table per worker, covering every element once, with equal shares of elements;
    cached by the sizes."""
    return _CHUNK_TABLES.get((numels, workers), lambda: _make_chunk_tables(numels, workers))


def _make_chunk_tables(numels: tuple[int, ...], workers: int) -> ChunkTables:
    total = sum(numels)
    parts = workers if total >= SPLIT_MIN_ELEMENTS and workers > 1 else 1
    edges = [total * k // parts // _ALIGN * _ALIGN for k in range(parts)] + [total]
    tables: list[list[tuple[int, int, int]]] = [[] for _ in range(parts)]
    start = 0  # first element of tensor t in the concatenation of all tensors
    for t, n in enumerate(numels):
        for k in range(parts):
            lo, hi = max(start, edges[k]), min(start + n, edges[k + 1])
            if lo < hi:
                tables[k].append((t, lo - start, hi - start))
        start += n
    tables = [rows for rows in tables if rows]
    rows = [row for rows in tables for row in rows]
    return ChunkTables(
        np.array(rows, dtype=np.int64).reshape(-1, 3),
        np.cumsum([0] + [len(rows) for rows in tables], dtype=np.int64),
    )


class _Threads:
    """Whether numba's parallel loops may be launched in this process: the one place that
    decides serial vs parallel.

    numba's OpenMP thread pool does not survive fork(): a child forked after a launch that
    launches again is aborted. Such a child runs the serial loops instead. The ``workqueue``
    layer (numba's fallback when no OpenMP or TBB is found) aborts when two threads launch at
    once, so under it the serial loops are used too. Which layer numba loads is known only
    after its first launch, so the first launch holds a lock: a second thread arriving
    meanwhile waits for it, then follows what it found.
    """

    usable = True
    launched = False
    first_launch = threading.Lock()

    @classmethod
    def launch(cls, parallel, serial, tables: ChunkTables, args) -> None:
        if cls.launched:  # the usual case: no lock
            if cls.usable:
                parallel(tables.chunks, tables.bounds, *args)
            else:
                serial(tables.chunks, *args)
            return
        with cls.first_launch:
            if not cls.launched:
                parallel(tables.chunks, tables.bounds, *args)
                cls.usable = numba.threading_layer() != "workqueue"
                cls.launched = True
                return
        cls.launch(parallel, serial, tables, args)

    @classmethod
    def after_fork_in_child(cls) -> None:
        cls.first_launch = threading.Lock()  # the parent's may have been held at the fork
        if cls.launched:
            cls.usable = False


os.register_at_fork(after_in_child=_Threads.after_fork_in_child)


def _run(serial, parallel, numels: tuple[int, ...], *args) -> None:
    """``serial(chunks, *args)`` over all elements, or ``parallel(chunks, bounds, *args)`` with
    one chunk table per thread when the group is long enough to be worth splitting."""
    tables = _chunk_tables(numels, torch.get_num_threads())
    if len(tables.bounds) > 2 and _Threads.usable:
        _Threads.launch(parallel, serial, tables, args)
    else:
        serial(tables.chunks, *args)


@functools.lru_cache(maxsize=256)
def _typed(dtype: torch.dtype, *values: float) -> np.ndarray:
    """Scalars in the arrays' dtype, so float32 data is computed in float32 as torch does."""
    return np.array(values, dtype=NUMPY_DTYPES[dtype])


@functools.lru_cache(maxsize=256)
def _float64s(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


@functools.lru_cache(maxsize=64)
def _flags(*flags: bool) -> np.ndarray:
    return np.array(flags, dtype=np.uint8)


@functools.lru_cache(maxsize=256)
def _complement(dtype: torch.dtype, weight: float) -> float:
    """``1 - weight`` as torch's lerp computes it: in the data's dtype, after rounding weight."""
    to_scalar = NUMPY_DTYPES[dtype]
    return float(to_scalar(1) - to_scalar(weight))


class _Batch(NamedTuple):
    """The tensors of one real dtype that the loops take: their indices, element counts and
    the data addresses of each of their roles (one row per tensor), and the resolved copies of
    gradients whose addresses the rows hold (kept alive until the loops have run)."""

    idx: list[int]
    numels: list[int]
    rows: list[list[int]]
    copies: list[Tensor]

    def addresses(self) -> np.ndarray:
        return np.array(self.rows, dtype=np.int64)


# A role after the params: its tensors and what each must be for the loops to use its memory
# in place. None marks state an option leaves out: the loops get the grad's address there (the
# first role), memory they only read, so a loop that reads it anyway does not alias a store.
# Memory read by address must hold the values the tensor means: a tensor with torch's lazy
# conjugate or negative bit (autograd makes such gradients for ordinary complex code) holds
# the un-conjugated, un-negated values. A written tensor with such a bit sends its param to the
# for-loop kernel (torch's answer or torch's error); a gradient, only read, is resolved into a
# copy first.
LIKE_PARAM = 0  # state: a contiguous CPU tensor of the param's dtype and size
COUNTER = 1  # step counters: a CPU float64 scalar
READ_ONLY = 2  # grads: as LIKE_PARAM, resolved into a copy if it has a lazy bit
Role = tuple[Sequence[Tensor] | None, int]


def _split(
    params: Sequence[Tensor], roles: Sequence[Role]
) -> tuple[dict[torch.dtype, _Batch], list[int], list[int]]:
    """The tensors the loops take directly, batched by real dtype; the indices of those that
    need another path; and the indices of empty ones (nothing to update).

    A tensor that is not what its role needs (see LIKE_PARAM, COUNTER) sends its param to
    the other path. Runs on every step for every tensor, so it is written for speed: ~20
    tensor attribute reads per Adam parameter at ~70 ns each are most of a small model's
    step.
    """
    float64 = torch.float64
    batches: dict[torch.dtype, _Batch] = {}
    other, empty = [], []
    copies: list[Tensor] = []
    seen: set[int] = set()  # param addresses: a repeated param takes the for-loop kernel
    spans: list[tuple[int, int]] = []  # each batched param's memory, and its index
    owners: list[int] = []
    for i, p in enumerate(params):
        dtype = p.dtype
        real = REAL_DTYPES.get(dtype)
        row = None
        try:
            # has_lazy_bits, inlined: the conjugate bit is read only for complex dtypes.
            ok = real is not None and p.is_cpu and p.is_contiguous()
            complex_ = ok and real[1] == 2
            ok = ok and not (p.is_neg() or (complex_ and p.is_conj()))
            n = p.numel() if ok else 0
            if n:
                address = p.data_ptr()
                # The same tensor twice in a group (torch warns, then updates it twice, each
                # time with its counter one further): the for-loop kernel does as torch.
                ok = address not in seen
                seen.add(address)
                row = [address]
                for ts, kind in roles if ok else ():
                    if ts is None:
                        row.append(row[1])
                        continue
                    t = ts[i]
                    if kind == COUNTER:
                        ok = t.dtype is float64 and t.is_cpu and t.numel() == 1
                    else:
                        ok = (
                            t.dtype is dtype
                            and t.is_cpu  # a CUDA pointer written from the CPU would crash
                            and t.numel() == n
                            and t.is_contiguous()
                        )
                        if ok and (t.is_neg() or (complex_ and t.is_conj())):
                            ok = kind == READ_ONLY
                            t = resolved(t)
                            copies.append(t)
                    if not ok:
                        break
                    row.append(t.data_ptr())
        except RuntimeError:  # layouts without strides or storage (sparse CSR, mkldnn)
            ok = False
        if not ok:
            other.append(i)
        elif row is None:
            empty.append(i)
        else:
            real_dtype, width = real
            batch = batches.get(real_dtype)
            if batch is None:
                batch = batches[real_dtype] = _Batch([], [], [], copies)
            batch.idx.append(i)
            batch.numels.append(n * width)
            batch.rows.append(row)
            spans.append((address, address + n * width * LIKE[real_dtype].itemsize))
            owners.append(i)
    if len(spans) > 1:
        overlapping = _OVERLAPS.get(tuple(spans), lambda: _overlapping(spans))
        if overlapping:
            views = {owners[k] for k in overlapping}
            batches = _without(batches, views)
            other = sorted(other + list(views))
    return batches, other, empty


_OVERLAPS = BoundedCache(64)  # by the params' memory spans, which rarely change


def _overlapping(spans: Sequence[tuple[int, int]]) -> frozenset[int]:
    """The positions of the spans (start, end) whose memory overlaps another span's: params
    that are views of one storage. torch updates them one after another; the loops might
    split them across threads, so they take the for-loop kernel."""
    hit: set[int] = set()
    reach, reaching = -1, -1  # the furthest end so far, and whose it is
    for k in sorted(range(len(spans)), key=lambda k: spans[k][0]):
        start, end = spans[k]
        if start < reach:
            hit.update((k, reaching))
        if end > reach:
            reach, reaching = end, k
    return frozenset(hit)


def _without(batches: dict[torch.dtype, _Batch], drop: set[int]) -> dict[torch.dtype, _Batch]:
    """``batches`` less the params whose indices are in ``drop``."""
    out: dict[torch.dtype, _Batch] = {}
    for dtype, batch in batches.items():
        keep = [j for j, i in enumerate(batch.idx) if i not in drop]
        if keep:
            out[dtype] = _Batch(
                [batch.idx[j] for j in keep],
                [batch.numels[j] for j in keep],
                [batch.rows[j] for j in keep],
                batch.copies,
            )
    return out


def _slow_path(
    kernel,
    params,
    mutable: list[Sequence[Tensor]],
    other_idx,
    *extra,
    names: Sequence[str] = (),
    **kw,
) -> None:
    """The for-loop kernel on the tensors ``other_idx``; ``names`` name the ``mutable`` roles.

    Runs before the loops, so an error here leaves every other tensor as it was. A state
    tensor whose size is not its param's (the param was replaced or resized after its first
    step) is refused before anything is written; if the for-loop kernel itself raises, the
    step counters it advanced are put back.
    """
    sub_params = pick(params, other_idx)
    sub_mutable = [pick(m, other_idx) for m in mutable]
    check_sizes(sub_params, sub_mutable, names)
    sub_extra = [pick(e, other_idx) for e in extra]
    try:
        kernel(sub_params, *sub_mutable, *sub_extra, **kw)
    except Exception:
        if kw.get("advance_steps") and sub_extra:
            torch._foreach_sub_(sub_extra[-1], 1)  # the step counters: the last role
        raise


class StateSizeError(RuntimeError):
    """A gradient or state tensor whose size is not its parameter's (a RuntimeError, as
    torch.optim's own error for it is)."""


def check_sizes(params: Sequence[Tensor], roles: Sequence[Sequence[Tensor | None]], names) -> None:
    """Raise :class:`StateSizeError` naming the first tensor of ``roles`` (one list per role,
    per param or empty) whose shape is not its param's."""
    for r, ts in enumerate(roles):
        for i, t in enumerate(ts):
            if t is not None and t.shape != params[i].shape:
                name = names[r] if r < len(names) else f"role {r}"
                raise StateSizeError(
                    f"{name} of a parameter of shape {tuple(params[i].shape)} has shape "
                    f"{tuple(t.shape)}; every gradient and state tensor must have its "
                    "parameter's shape. Was the parameter replaced (p.data = ...) or resized "
                    "after its first step? Then drop its state (del optimizer.state[p]) so "
                    "that it starts afresh; nothing was updated."
                )


@functools.lru_cache(maxsize=256)
def _adam_args(
    dtype: torch.dtype,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    amsgrad: bool,
    maximize: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Adam loops' (hyper, bias, flags) arrays; one cache lookup per step and dtype."""
    wd = float(weight_decay)
    decay = 1 - lr * wd if decoupled_weight_decay and wd != 0 else 1.0
    hyper = _typed(
        dtype, decay, wd, 1 - beta1, _complement(dtype, 1 - beta1), beta2, 1 - beta2, eps
    )
    bias = _float64s(float(lr), float(beta1), float(beta2))
    flags = _flags(bool(maximize), wd != 0 and not decoupled_weight_decay, bool(amsgrad))
    return hyper, bias, flags


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
    advance_steps: bool = False,
) -> None:
    """Adam/AdamW in one pass; see :func:`adamkit.kernels.forloop.adam` for the math."""
    lr = scalar(lr)
    roles = [
        (grads, READ_ONLY),
        (exp_avgs, LIKE_PARAM),
        (exp_avg_sqs, LIKE_PARAM),
        (max_exp_avg_sqs if amsgrad else None, LIKE_PARAM),
        (steps, COUNTER),
    ]
    batches, other, empty = _split(params, roles)
    if other:  # first: an error there then leaves every other tensor as it was
        _slow_path(
            forloop.adam,
            params,
            [grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else []],
            other,
            steps,
            names=("grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            advance_steps=advance_steps,
        )
    if advance_steps and empty:
        add_one(pick(steps, empty))  # empty tensors: the loops do not see their counters
    for dtype, batch in batches.items():
        args = _adam_args(
            dtype, lr, beta1, beta2, eps, weight_decay, decoupled_weight_decay, amsgrad, maximize
        )
        _run(
            loops.adam_chunks,
            loops.adam_parallel,
            tuple(batch.numels),
            batch.addresses(),
            LIKE[dtype],
            *args,
            advance_steps,
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
    lr = scalar(lr)
    has_momentum = momentum != 0
    first = set()  # buffers this step creates: the loop writes b_1 = g_1 into them
    if has_momentum:
        for i, buf in enumerate(momentum_buffers):
            if buf is None and grads[i].layout is torch.strided:
                momentum_buffers[i] = torch.empty_like(
                    grads[i], memory_format=torch.preserve_format
                )
                first.add(i)
    # Sparse gradients fail the contiguity test and go to the for-loop kernel with the rest.
    roles = [(grads, READ_ONLY), (momentum_buffers if has_momentum else None, LIKE_PARAM)]
    batches, other, _ = _split(params, roles)
    wd = float(scalar(weight_decay))
    flags = _flags(bool(nesterov), bool(maximize), wd != 0, has_momentum)
    if other:  # first: an error there then leaves every other tensor as it was
        for i in other:
            if i in first:
                momentum_buffers[i] = None  # let the for-loop kernel start the buffer itself
        sub_bufs = pick(momentum_buffers, other) if has_momentum else []
        check_sizes(
            pick(params, other), [pick(grads, other), sub_bufs], ("grad", "momentum_buffer")
        )
        forloop.sgd(
            pick(params, other),
            pick(grads, other),
            sub_bufs,
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
        )
        for j, i in enumerate(other if has_momentum else []):
            momentum_buffers[i] = sub_bufs[j]

    for dtype, batch in batches.items():
        _run(
            loops.sgd_chunks,
            loops.sgd_parallel,
            tuple(batch.numels),
            batch.addresses(),
            _first_flags(batch.idx, first),
            LIKE[dtype],
            _typed(dtype, lr, momentum, 1 - dampening, wd),
            flags,
        )


def _first_flags(idx: list[int], first: set[int]) -> np.ndarray:
    """uint8 per tensor of a batch: 1 where its momentum buffer starts this step."""
    if not first:
        return _zeros_uint8(len(idx))
    return np.array([i in first for i in idx], dtype=np.uint8)


@functools.lru_cache(maxsize=64)
def _zeros_uint8(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.uint8)


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
    advance_steps: bool = False,
) -> None:
    """RMSprop in one pass; see :func:`adamkit.kernels.forloop.rmsprop` for the math."""
    lr = scalar(lr)
    roles = [
        (grads, READ_ONLY),
        (square_avgs, LIKE_PARAM),
        (grad_avgs if centered else None, LIKE_PARAM),
        (momentum_buffers if momentum > 0 else None, LIKE_PARAM),
        (steps, COUNTER),
    ]
    batches, other, empty = _split(params, roles)
    flags = _flags(bool(centered), bool(maximize), weight_decay != 0, momentum > 0)
    if other:  # first: an error there then leaves every other tensor as it was
        _slow_path(
            forloop.rmsprop,
            params,
            [grads, square_avgs, grad_avgs, momentum_buffers],
            other,
            steps,
            names=("grad", "square_avg", "grad_avg", "momentum_buffer"),
            lr=lr,
            alpha=alpha,
            eps=eps,
            weight_decay=weight_decay,
            momentum=momentum,
            centered=centered,
            maximize=maximize,
            advance_steps=advance_steps,
        )
    if advance_steps and empty:
        add_one(pick(steps, empty))  # empty tensors: the loops do not see their counters
    for dtype, batch in batches.items():
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
            loops.rmsprop_parallel,
            tuple(batch.numels),
            batch.addresses(),
            LIKE[dtype],
            hyper,
            flags,
            advance_steps,
        )
