"""Which elements of a tensor a snapshot reads, and one numba call that gathers them.

A group's summaries are computed on a sample: all of a tensor's elements when its share is at
least half of it, else evenly spaced blocks of contiguous elements (sequential reads keep
sampling a 50M-element tensor well under a millisecond). The same blocks are read from the
param, its gradient and each state tensor.

On the CPU, plain contiguous float tensors are gathered by one numba call per role over a
table of data addresses: a snapshot of a 145-tensor model otherwise spends most of its time
making a strided view of every tensor in torch (~6 µs each, four roles).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..kernels._tensors import LIKE, REAL_DTYPES, BoundedCache, has_lazy_bits

SAMPLE_BLOCK = 1024  # contiguous elements per sampled block


class Blocks(NamedTuple):
    """``count`` blocks of ``length`` elements, the k-th starting at ``k * spacing``."""

    count: int
    length: int
    spacing: int


def blocks(n: int, share: int) -> Blocks | None:
    """The blocks that sample ``share`` of ``n`` (real) elements; None: take all of them."""
    if n == 0 or 2 * share > n:
        return None
    length = min(SAMPLE_BLOCK, share)
    count = max(1, share // length)
    spacing = (n - length) // max(1, count - 1)
    return Blocks(count, length, spacing)


class Sample(NamedTuple):
    """Which elements of a group's tensors a snapshot reads."""

    sizes: tuple[int, ...]  # real elements of each tensor
    shares: tuple[int, ...]  # elements asked of each, in proportion to its size
    lengths: tuple[int, ...]  # elements each gives (blocks round a share down)


def sample(sizes: Sequence[int], max_elements: int) -> Sample:
    """About ``max_elements`` elements in all, each tensor giving its proportional share (at
    least one element)."""
    fraction = min(1.0, max_elements / max(1, sum(sizes)))
    shares = [min(n, max(1, round(n * fraction))) for n in sizes]
    lengths = []
    for n, share in zip(sizes, shares, strict=True):
        layout = blocks(n, share)
        lengths.append(n if layout is None else layout.count * layout.length)
    return Sample(tuple(sizes), tuple(shares), tuple(lengths))


_PLANS = BoundedCache(32)


def _plan(sizes: tuple[int, ...], shares: tuple[int, ...]) -> np.ndarray:
    """Rows (tensor, first element, end element) of every block, in order."""
    rows = []
    for t, (n, share) in enumerate(zip(sizes, shares, strict=True)):
        layout = blocks(n, share)
        if layout is None:
            rows.append((t, 0, n))
            continue
        rows.extend(
            (t, k * layout.spacing, k * layout.spacing + layout.length) for k in range(layout.count)
        )
    return np.array(rows, dtype=np.int64).reshape(-1, 3)


def gather_cpu(tensors: Sequence[Tensor], plan: Sample) -> Tensor | None:
    """The sample ``plan`` of ``tensors`` as one float64 vector, or None when they are not all
    contiguous CPU tensors of one float or complex dtype and the plan's sizes (the caller
    then gathers them with torch)."""
    if not tensors:
        return None
    dtype = tensors[0].dtype
    real = REAL_DTYPES.get(dtype)
    if real is None:
        return None
    real_dtype, width = real
    addresses = []
    for t, n in zip(tensors, plan.sizes, strict=True):
        if (
            t.dtype is not dtype
            or not t.is_cpu
            or t.layout is not torch.strided
            or t.numel() * width != n
            or not t.is_contiguous()
            or has_lazy_bits(t)  # memory holds un-conjugated/un-negated values
        ):
            return None
        addresses.append(t.data_ptr() if n else 0)
    table = _PLANS.get((plan.sizes, plan.shares), lambda: _plan(plan.sizes, plan.shares))
    out = np.empty(sum(plan.lengths), dtype=np.float64)
    from ..kernels import numba_import

    numba_import.prepare()
    from ..kernels import _numba_cpu  # numba only once a snapshot samples CPU tensors

    _numba_cpu.gather_blocks(table, np.array(addresses, dtype=np.int64), LIKE[real_dtype], out)
    return torch.from_numpy(out)
