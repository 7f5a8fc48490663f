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
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from . import _numba_cpu as loops
from . import forloop
from ._batching import (
    LIKE_PARAM,
    READ_ONLY,
    SPLIT_MIN_ELEMENTS,
    StateSizeError,
    Threads,
    check_sizes,
    chunk_tables,
    flag_array,
    run_loops,
    slow_path,
    split,
    typed,
)
from ._tensors import LIKE, pick, scalar

# The batching names tests and callers reach through this module, which is the fused backend.
__all__ = [
    "SPLIT_MIN_ELEMENTS",
    "StateSizeError",
    "Threads",
    "check_sizes",
    "chunk_tables",
    "run_loops",
    "sgd",
    "slow_path",
]


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
    batches, other, _ = split(params, roles)
    wd = float(scalar(weight_decay))
    flags = flag_array(bool(nesterov), bool(maximize), wd != 0, has_momentum)
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
        run_loops(
            loops.sgd_chunks,
            loops.sgd_parallel,
            tuple(batch.numels),
            batch.addresses(),
            _first_flags(batch.idx, first),
            LIKE[dtype],
            typed(dtype, lr, momentum, 1 - dampening, wd),
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
