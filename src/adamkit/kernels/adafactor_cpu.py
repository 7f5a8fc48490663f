"""Adafactor's fused CPU step (numba): the equations of :mod:`adamkit.reference.adafactor`.

Adafactor does not fit the spec engine: its second moment of a matrix lives in row and
column statistics of other shapes than the param, and its step needs three reductions (the
param's RMS, the rows' and columns' means of g², the update's RMS) before the param moves.
So it has this module of its own, one tensor per call, in passes over memory:

* matrix (..., n, m), seen as ``rows`` = (...)·n rows of m: (1) read p and g: Σp², each row's
  Σg² (its statistic R is updated right there) and per-column Σg² (each thread its own
  partial sums, added in a fixed order; then C is updated); (2) read g: Σu² of the update
  u = g/√max(R·C/max(mean(R), ε1), ε1²); (3) read p and g, write p.
* vector: (1) read p, g, V; write V; Σp², Σu²; (2) read p, g, V, write p.

torch's for-loop reads ~10 tensors' worth of memory and synchronises with the host three
times per tensor; this reads the param twice and the gradient three times, with no temporary
of the param's size. Sums are accumulated in float64 (torch accumulates in the data's dtype),
elementwise math is in the data's dtype, as torch's. Rows are split between threads for
tensors of at least ``PARALLEL_MIN`` elements.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
import torch
from torch import Tensor

from ._numba_cpu import _lerp, _nan_max  # torch's lerp; a max that keeps NaN (clamp_min)
from ._threads import ChunkTables, Threads

# Sums may be reassociated (so that LLVM vectorizes them): their order is not part of the
# algorithm. No other fast-math flag: NaN and Inf behave as in torch.
_OPTIONS = {"cache": True, "error_model": "numpy", "nogil": True, "fastmath": {"reassoc"}}
_jit = numba.njit(**_OPTIONS)
_jit_parallel = numba.njit(parallel=True, **_OPTIONS)
_inline = numba.njit(inline="always", error_model="numpy")

PARALLEL_MIN = 1 << 16
# hyper's entries, in the data's dtype: lerp weight t^τ and 1 - t^τ, ε1, ε1², decay 1 - lr·λ,
# 1/√(ε1² in the data's dtype): torch floors V̂ at ε1² rounded to the dtype (0 where it
# underflows, as float32's for transformers' ε1 = 1e-30: then a zero row gives NaN, as torch)
WEIGHT, ONE_MINUS_WEIGHT, EPS1, EPS1_SQUARED, DECAY, INV_EPS1 = range(6)
# sums: Σp², Σu² (float64)
SUM_P2, SUM_U2 = range(2)


@_inline
def _capped(x, cap):
    return cap if cap < x else x  # NaN stays NaN


# The loops index 1-d row views (``g[r]``): indexing the 2-d array by (r, j) kept LLVM from
# vectorizing them (5x slower). Within a row, sums are in the data's dtype (vectorized, as
# torch's); rows are added in float64.


@_inline
def _factored_statistics(chunks, p, g, row, col_partial, sums_partial, hyper, n):
    """Pass 1 of a matrix: Σp², R from each row's mean of g², per-thread column sums."""
    m = g.shape[1]
    for k in numba.prange(chunks.size - 1):
        p2 = 0.0
        for r in range(chunks[k], chunks[k + 1]):
            col0 = (r // n) * m
            g_row, p_row, cols = g[r], p[r], col_partial[k, col0 : col0 + m]
            g2_row = g_row[0] * 0
            p2_row = g2_row
            for j in range(m):
                x = g_row[j]
                x2 = x * x
                g2_row += x2
                cols[j] += x2
                p2_row += p_row[j] * p_row[j]
            p2 += p2_row
            row[r] = _lerp(row[r], g2_row / m, hyper[WEIGHT], hyper[ONE_MINUS_WEIGHT])
        sums_partial[k, SUM_P2] = p2


# u = g/√max(R·C/mean(R), ε1²) = g·min(1/√(R/mean(R)) · 1/√C, 1/ε1) in real numbers: the
# roots are taken once per row and per column, so the passes over the elements multiply only
# (a root and a division per element made them compute-bound: 2x slower). The rounding
# differs from torch's by an ulp or two.


@_inline
def _factored_update_sum(chunks, g, inv_row, inv_col, sums_partial, hyper, n):
    """Pass 2 of a matrix: Σu²."""
    m = g.shape[1]
    for k in numba.prange(chunks.size - 1):
        u2 = 0.0
        for r in range(chunks[k], chunks[k + 1]):
            b = r // n
            g_row, c, ir = g[r], inv_col[b * m : (b + 1) * m], inv_row[r]
            u2_row = g_row[0] * 0
            for j in range(m):
                u = g_row[j] * _capped(ir * c[j], hyper[INV_EPS1])
                u2_row += u * u
            u2 += u2_row
        sums_partial[k, SUM_U2] = u2


@_inline
def _factored_apply(chunks, p, g, inv_row, inv_col, hyper, scale, n):
    """Pass 3 of a matrix: φ ← φ·(1 - lr·λ) + scale·u."""
    m = g.shape[1]
    for k in numba.prange(chunks.size - 1):
        for r in range(chunks[k], chunks[k + 1]):
            b = r // n
            g_row, p_row, c, ir = g[r], p[r], inv_col[b * m : (b + 1) * m], inv_row[r]
            for j in range(m):
                u = g_row[j] * _capped(ir * c[j], hyper[INV_EPS1])
                p_row[j] = p_row[j] * hyper[DECAY] + scale * u


@_inline
def _factored(chunks, p, g, row, col, hyper, scalars, n, sums):
    """One Adafactor step of a matrix seen as (rows, m); ``scalars`` = (ρ_t, ε2, d) in
    float64; ``sums`` receives (Σp², Σu²)."""
    m = g.shape[1]
    threads = chunks.size - 1
    batches = col.size // m
    col_partial = np.zeros((threads, col.size))
    sums_partial = np.zeros((threads, 2))
    _factored_statistics(chunks, p, g, row, col_partial, sums_partial, hyper, n)
    for c in range(col.size):
        total = 0.0
        for k in range(threads):
            total += col_partial[k, c]
        col[c] = _lerp(col[c], col.dtype.type(total / n), hyper[WEIGHT], hyper[ONE_MINUS_WEIGHT])
    inv_row = np.empty_like(row)
    for b in range(batches):
        total = 0.0
        for i in range(b * n, (b + 1) * n):
            total += np.float64(row[i])
        # torch: row_var.mean(dim=-2), in the data's dtype, then clamp_min(ε1)
        row_mean = _nan_max(row.dtype.type(total / n), hyper[EPS1])
        for i in range(b * n, (b + 1) * n):
            inv_row[i] = 1 / np.sqrt(row[i] / row_mean)
    inv_col = np.empty_like(col)
    for c in range(col.size):
        inv_col[c] = 1 / np.sqrt(col[c])
    _factored_update_sum(chunks, g, inv_row, inv_col, sums_partial, hyper, n)
    for k in range(threads):
        sums[SUM_P2] += sums_partial[k, SUM_P2]
        sums[SUM_U2] += sums_partial[k, SUM_U2]
    scale = p.dtype.type(_step_scale(sums, scalars, p.size))
    _factored_apply(chunks, p, g, inv_row, inv_col, hyper, scale, n)


@_inline
def _step_scale(sums, scalars, numel):
    """-α_t / max(1, RMS(u)/d), with α_t = max(ε2, RMS(φ))·ρ_t."""
    root = math.sqrt(numel)
    alpha = max(scalars[1], math.sqrt(sums[SUM_P2]) / root) * scalars[0]  # (signed: maximize)
    return -alpha / max(1.0, math.sqrt(sums[SUM_U2]) / (root * scalars[2]))


@_inline
def _vector_statistics(chunks, p, g, v, sums_partial, hyper):
    for k in numba.prange(chunks.size - 1):
        p2 = 0.0
        u2 = 0.0
        for i in range(chunks[k], chunks[k + 1]):
            x = g[i]
            vi = _lerp(v[i], x * x, hyper[WEIGHT], hyper[ONE_MINUS_WEIGHT])
            v[i] = vi
            u = x / np.sqrt(_nan_max(vi, hyper[EPS1_SQUARED]))
            u2 += np.float64(u) * np.float64(u)
            y = np.float64(p[i])
            p2 += y * y
        sums_partial[k, SUM_P2] = p2
        sums_partial[k, SUM_U2] = u2


@_inline
def _vector_apply(chunks, p, g, v, hyper, scale):
    for k in numba.prange(chunks.size - 1):
        for i in range(chunks[k], chunks[k + 1]):
            u = g[i] / np.sqrt(_nan_max(v[i], hyper[EPS1_SQUARED]))
            p[i] = p[i] * hyper[DECAY] + scale * u


@_inline
def _vector(chunks, p, g, v, hyper, scalars, sums):
    sums_partial = np.zeros((chunks.size - 1, 2))
    _vector_statistics(chunks, p, g, v, sums_partial, hyper)
    for k in range(chunks.size - 1):
        sums[SUM_P2] += sums_partial[k, SUM_P2]
        sums[SUM_U2] += sums_partial[k, SUM_U2]
    scale = p.dtype.type(_step_scale(sums, scalars, p.size))
    _vector_apply(chunks, p, g, v, hyper, scale)


@_jit
def factored_serial(chunks, p, g, row, col, hyper, scalars, n, sums):
    _factored(chunks, p, g, row, col, hyper, scalars, n, sums)


@_jit_parallel
def factored_parallel(chunks, bounds, p, g, row, col, hyper, scalars, n, sums):
    _factored(chunks, p, g, row, col, hyper, scalars, n, sums)


@_jit
def vector_serial(chunks, p, g, v, hyper, scalars, sums):
    _vector(chunks, p, g, v, hyper, scalars, sums)


@_jit_parallel
def vector_parallel(chunks, bounds, p, g, v, hyper, scalars, sums):
    _vector(chunks, p, g, v, hyper, scalars, sums)


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


def takes(p: Tensor, grad: Tensor, state: dict) -> bool:
    """Whether this kernel steps ``p`` (else torch's for-loop does): a CPU float32 or float64
    param with a dense contiguous gradient and state of its dtype, not empty."""
    if not (p.is_cpu and p.dtype in _NUMPY and p.numel() > 0 and p.is_contiguous()):
        return False
    if grad.dtype != p.dtype or grad.layout != torch.strided or not grad.is_contiguous():
        return False
    keys = ("row_var", "col_var") if p.dim() > 1 else ("variance",)
    return all(
        state[key].dtype == p.dtype and state[key].is_contiguous() and state[key].is_cpu
        for key in keys
    )


def _row_chunks(rows: int, numel: int) -> ChunkTables:
    threads = torch.get_num_threads() if numel >= PARALLEL_MIN and Threads.usable else 1
    return _split_rows(rows, max(1, min(threads, rows)))


@functools.lru_cache(maxsize=1024)
def _split_rows(rows: int, threads: int) -> ChunkTables:
    """Row bounds of ``threads`` near-equal chunks (cached: np.linspace alone costs ~6 µs,
    a small tensor's whole step)."""
    chunks = np.array([rows * k // threads for k in range(threads + 1)], dtype=np.int64)
    return ChunkTables(chunks, np.array([0, threads], dtype=np.int64))


def step(
    p: Tensor,
    grad: Tensor,
    state: dict,
    *,
    t: float,
    lr: float,
    beta2_decay: float,
    eps1: float,
    eps2: float,
    d: float,
    weight_decay: float,
    maximize: bool,
) -> None:
    """One step of ``p`` (``takes`` said yes) at step count ``t`` (already advanced)."""
    dtype = _NUMPY[p.dtype]
    weight = t**beta2_decay
    eps1_squared = float(dtype(eps1 * eps1))
    inv_eps1 = 1.0 / math.sqrt(eps1_squared) if eps1_squared > 0 else math.inf
    hyper = np.array(
        [weight, 1.0 - weight, eps1, eps1_squared, 1.0 - lr * weight_decay, inv_eps1],
        dtype=dtype,
    )
    # maximize: the update of -g is -u (u² and g² unchanged), so ρ_t's sign carries it
    scalars = np.array([min(lr, 1.0 / t**0.5) * (-1.0 if maximize else 1.0), eps2, d])
    sums = np.zeros(2)
    g = grad.detach().numpy()
    x = p.detach().numpy()
    if p.dim() > 1:
        n, m = p.shape[-2], p.shape[-1]
        tables = _row_chunks(p.numel() // m, p.numel())
        row = state["row_var"].numpy().reshape(-1)
        col = state["col_var"].numpy().reshape(-1)
        args = (x.reshape(-1, m), g.reshape(-1, m), row, col, hyper, scalars, n, sums)
        _launch(factored_parallel, factored_serial, tables, args, p.numel())
    else:
        tables = _row_chunks(p.numel(), p.numel())
        args = (x.reshape(-1), g.reshape(-1), state["variance"].numpy().reshape(-1), hyper,
                scalars, sums)  # fmt: skip
        _launch(vector_parallel, vector_serial, tables, args, p.numel())


def _launch(parallel, serial, tables: ChunkTables, args: tuple, work: int) -> None:
    if tables.chunks.size > 2:
        Threads.launch(parallel, serial, tables, args, work)
    else:
        serial(tables.chunks, *args)
