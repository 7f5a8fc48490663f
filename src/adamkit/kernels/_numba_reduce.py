"""The pass before the update, in both numba kernels: a spec's per-tensor reduction
(StableAdamW's RMS: the sum of its terms) or the cautious mask's count, over the tensor's
elements before any of them is updated; read only.

Each term is computed by the spec's own arithmetic in a function that does not reassociate;
only the float sum of a block of terms may (:func:`adamkit.kernels._numba_cpu._block_total`,
so LLVM vectorizes it), and each block's total is added to its tensor's running total in
order, a 256-element block of the tensor at a time in both kernels. The cautious count is an
integer: exact in any order. With threads, each thread's partial sums are added in a fixed
order between two parallel regions (:func:`_parallel_totals`).
"""

from __future__ import annotations

import numba
import numpy as np

from ..algorithms._spec import MASK_FLOOR
from ..algorithms.state_formats import BLOCK
from ._numba_cpu import _block_total, _view
from ._numba_formats import (
    PARAM_FLOAT32,
    PARAM_KAHAN,
    _block_inputs,
    _half_load,
    _kept,
    _slot_in,
    _tensor_views,
)
from ._numba_spec import _row, _scalars, _tensor_table

_inline = numba.njit(inline="always", error_model="numpy")


@_inline
def _reduced(element, reduction, p, g, s0, s1, s2, h, k, f, cautious, lo, total):
    """``total`` plus a chunk's sum of the spec's reduction term, or of the cautious mask's
    count (an integer sum: exact in any order, so LLVM vectorizes it) (read only: the
    element's results are not stored). The chunk starts at element ``lo`` of its tensor; the
    terms are summed by the tensor's blocks of ``BLOCK``, each by :func:`_block_total`, and
    added to ``total`` one after another, as the low-memory kernel does."""
    if cautious:
        count = 0
        for i in range(p.size):
            _, _, _, _, _, u, g_seen = element(p[i], g[i], s0[i], s1[i], s2[i], h, k, f)
            count += u * g_seen > 0
        return total + count
    terms = np.empty(min(p.size, BLOCK), p.dtype)
    start = 0
    while start < p.size:
        end = min(start + BLOCK - (lo + start) % BLOCK, p.size)
        # the block's views indexed from 0: an index numba knows is >= 0 needs no wraparound
        # check, and only then does LLVM load without gathers (the pass ran 1.6-2.2x slower)
        pb, gb, b0, b1, b2 = p[start:end], g[start:end], s0[start:end], s1[start:end], s2[start:end]
        for j in range(pb.size):
            _, a, b, c, _, _, g_seen = element(pb[j], gb[j], b0[j], b1[j], b2[j], h, k, f)
            terms[j] = reduction(g_seen, a, b, c, h, k, f)
        total += _block_total(terms[: pb.size])
        start = end
    return total


@_inline
def _reduce(chunk_sum, chunks, addresses, like, h, table, f, totals):
    """Add each chunk's reduction (``chunk_sum``: the cell's :func:`_reduced`) and element
    count to its tensor's row of ``totals``."""
    for c in range(chunks.shape[0]):
        t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        row = addresses[t]
        totals[t, 0] = chunk_sum(
            _view(row[0], lo, hi, like), _view(row[1], lo, hi, like),
            _view(row[2], lo, hi, like), _view(row[3], lo, hi, like),
            _view(row[4], lo, hi, like), h, _row(table, t), f, lo, totals[t, 0],
        )  # fmt: skip
        totals[t, 1] += hi - lo


@_inline
def _finish(table, totals, cautious):
    """The reduction's columns of the tensor table: the sum and the count for the spec's
    element, or the cautious scale 1/max(mean(mask), floor) and a 0 for the driver."""
    for t in range(table.shape[0]):
        total, n = totals[t, 0], totals[t, 1]
        if not cautious:
            table[t, 4], table[t, 5] = total, n
        else:
            table[t, 4] = 1.0 / max(total / n, MASK_FLOOR) if n > 0 else 1.0
            table[t, 5] = 0.0


@_inline
def _partial_sums(chunk_sum, chunks, bounds, addresses, like, h, table, f, partial):
    """The pass before the update, thread k adding table k's sums into ``partial[k]``."""
    for k in numba.prange(bounds.size - 1):
        _reduce(
            chunk_sum, chunks[bounds[k] : bounds[k + 1]], addresses, like, h, table, f,
            partial[k],
        )  # fmt: skip


@_inline
def _parallel_totals(
    partial_sums, tensor_scalars, chunks, bounds, addresses, data, like, step_column,
    aux_column, hyper, bias, flags,
):  # fmt: skip
    """Each tensor's (sum, count) from the pass before the update (the threads' partial
    sums, added in a fixed order). ``data``: what the loops take after the addresses (the
    data's ``like``, or the low-memory kernel's element counts); the table's dtype is
    ``like``'s, its counters in the columns given."""
    b = (bias[0], bias[1], bias[2], bias[3], bias[4], bias[5], bias[6], bias[7])
    h, f = _scalars(hyper, flags)
    table = _tensor_table(tensor_scalars, addresses, b, like, step_column, aux_column)
    n = addresses.shape[0]
    partial = np.zeros((bounds.size - 1, n, 2))
    partial_sums(chunks, bounds, addresses, data, h, table, f, partial)
    totals = np.zeros((n, 2))
    for k in range(partial.shape[0]):
        for t in range(n):
            totals[t, 0] += partial[k, t, 0]
            totals[t, 1] += partial[k, t, 1]
    return totals


@_inline
def _block_sums(
    element, reduction, cautious, keep, kind0, kind1, kind2, fmt0, fmt1, fmt2, param_mode,
    half, chunks, addresses, numels, h, table, f, totals,
):  # fmt: skip
    """The pass before the update over chunk rows (tensor, first block, end block): each
    tensor's sum of the spec's reduction term, or (``cautious``) the count of its mask, and
    its element count, added to its row of ``totals``. Nothing is stored."""
    f = _kept(keep, f)
    buffer0 = np.empty(BLOCK, np.float32)
    buffer1 = np.empty(BLOCK, np.float32)
    buffer2 = np.empty(BLOCK, np.float32)
    terms = np.empty(BLOCK, np.float32)
    for c in range(chunks.shape[0]):
        t, first, end = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        n, row = numels[t], addresses[t]
        k = _row(table, t)
        params, views0, views1, views2 = _tensor_views(row, n)
        for blk in range(first, end):
            lo = blk * BLOCK
            hi = min(lo + BLOCK, n)
            param, bits0, bits1, bits2, full0, full1, full2 = _block_inputs(
                fmt0, fmt1, fmt2, kind0, kind1, kind2, params, views0, views1, views2,
                buffer0, buffer1, buffer2, blk, lo, hi,
            )  # fmt: skip
            count = 0
            for j in range(hi - lo):
                if param_mode == PARAM_FLOAT32:
                    p, g = param[0][j], param[1][j]
                else:
                    p, g = _half_load(param[2][j], half), _half_load(param[3][j], half)
                    if param_mode == PARAM_KAHAN:
                        p = p + _half_load(param[4][j], half)
                s0 = _slot_in(fmt0, buffer0, bits0, full0, g, j)
                s1 = _slot_in(fmt1, buffer1, bits1, full1, g, j)
                s2 = _slot_in(fmt2, buffer2, bits2, full2, g, j)
                _, a, b, c2, _, u, g_seen = element(p, g, s0, s1, s2, h, k, f)
                if cautious:
                    count += u * g_seen > 0
                else:
                    terms[j] = reduction(g_seen, a, b, c2, h, k, f)
            if cautious:
                totals[t, 0] += count
            else:
                totals[t, 0] += _block_total(terms[: hi - lo])
            totals[t, 1] += hi - lo
