"""One numba driver for every algorithm spec: the fused CPU loop, written once.

Each spec's ``element`` (see :mod:`adamkit.algorithms._spec`) is recompiled here with numba's
versions of its operations and inlined into a generic chunk loop, the same shape as the
hand-written loops of :mod:`adamkit.kernels._numba_cpu`: one pass over p, g and the state,
vectorized by LLVM, per-tensor scalars computed in the call from each tensor's counters, and
a parallel form that runs one chunk table per thread. Measured on a 1M-element float32 NAdam
step: as fast as the hand-written Adam loop (the element inlines to the same code shape).

Adding an algorithm here is two entry points (``<name>_chunks`` and ``<name>_parallel``),
because numba's cache keeps a compiled function by its module and name: an entry point made
by a factory would share one cache slot with every other spec.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..algorithms import adam, adamax, nadam, radam, rmsprop
from ..algorithms._spec import recompiled
from . import _numba_cache
from ._numba_cpu import _OPTIONS, _float64_cell, _lerp, _nan_max, _pointer, _view

_numba_cache.install()
_jit = numba.njit(**_OPTIONS)
_jit_parallel = numba.njit(parallel=True, **_OPTIONS)
_inline = numba.njit(inline="always", error_model="numpy")


@_inline
def _where(condition, if_true, if_false):
    return if_true if condition else if_false


@_inline
def _to_float32(x):
    return np.float32(x)


OPS = {
    "where": _where,
    "sqrt": math.sqrt,
    "absolute": abs,
    "nan_max": _nan_max,
    "lerp": _lerp,
    "to_float32": _to_float32,
}


def compiled(function):
    """``function`` with numba's operations in place of :mod:`adamkit.algorithms._ops`',
    inlined wherever it is called (its module's helper functions too)."""
    return _inline(recompiled(function, OPS, helpers=_inline))


_FLOAT32_LIKE = np.empty(0, np.float32)

# Address rows: p, g, three state slots (a slot a spec does not have holds the grad's address,
# memory the loop reads and never stores), the float64 step counter, and the float32 scalar
# state (NAdam's mu_product; the step counter's address where a spec has none).
STEP, AUX = 5, 6


@_inline
def _float32_cell(address):
    return numba.carray(_pointer(address, _FLOAT32_LIKE), (1,))


@_inline
def _advance(advance, addresses, b, has_aux, step_column, aux_column):
    """Each tensor's counters one step on (their addresses in the two columns given: the
    low-memory kernel's rows have more columns before them)."""
    for t in range(addresses.shape[0]):
        step = _float64_cell(addresses[t, step_column])
        aux = _float32_cell(addresses[t, aux_column])
        new_step, new_aux = advance(step[0], aux[0], b)
        if has_aux:
            aux[0] = new_aux
        step[0] = new_step


@_inline
def _tensor_table(tensor_scalars, addresses, b, like, step_column, aux_column):
    """Each tensor's scalars from its counters, rounded to ``like``'s dtype (one row each)."""
    n = addresses.shape[0]
    table = np.empty((n, 4), like.dtype)
    for t in range(n):
        step = _float64_cell(addresses[t, step_column])[0]
        k = tensor_scalars(step, _float32_cell(addresses[t, aux_column])[0], b)
        table[t, 0], table[t, 1], table[t, 2], table[t, 3] = k[0], k[1], k[2], k[3]
    return table


@_inline
def _elements(element, p, g, s0, s1, s2, h, k, f, store0, store1, store2):
    # store0..2 arrive as constants: a store a spec does not have is compiled out, and the
    # loop vectorizes (a runtime-guarded store to memory the loop reads fails LLVM's alias
    # check).
    for i in range(p.size):
        p[i], a, b, c = element(p[i], g[i], s0[i], s1[i], s2[i], h, k, f)
        if store0:
            s0[i] = a
        if store1:
            s1[i] = b
        if store2:
            s2[i] = c


@_inline
def _chunks(
    element, advance_fn, tensor_scalars, has_aux, store0, store1, store2,
    chunks, addresses, like, hyper, bias, flags, advance,
):  # fmt: skip
    """The spec's update over the chunks (rows: tensor, first, end). The spec's functions
    arrive as arguments (numba specializes this loop for each) and its constants as literals."""
    b = (bias[0], bias[1], bias[2], bias[3])
    if advance:
        _advance(advance_fn, addresses, b, has_aux, STEP, AUX)
    h = (hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], hyper[5], hyper[6], hyper[7])
    f = (flags[0] != 0, flags[1] != 0, flags[2] != 0, flags[3] != 0)
    table = _tensor_table(tensor_scalars, addresses, b, like, STEP, AUX)
    for c in range(chunks.shape[0]):
        t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        k = (table[t, 0], table[t, 1], table[t, 2], table[t, 3])
        row = addresses[t]
        _elements(
            element,
            _view(row[0], lo, hi, like),
            _view(row[1], lo, hi, like),
            _view(row[2], lo, hi, like),
            _view(row[3], lo, hi, like),
            _view(row[4], lo, hi, like),
            h, k, f, store0, store1, store2,
        )  # fmt: skip


@_inline
def _parallel(
    advance_fn, has_aux, serial, chunks, bounds, addresses, like, hyper, bias, flags, advance
):
    """Table k of ``chunks[bounds[k]:bounds[k + 1]]`` on thread k; counters advanced once,
    before any thread reads them."""
    if advance:
        _advance(advance_fn, addresses, (bias[0], bias[1], bias[2], bias[3]), has_aux, STEP, AUX)
    for k in numba.prange(bounds.size - 1):
        serial(chunks[bounds[k] : bounds[k + 1]], addresses, like, hyper, bias, flags, False)


# --- one pair of entry points per spec: its compiled functions as globals, its constants
# (scalar state or not; which of the three slots it stores) as literals.
_ADAM_ELEMENT = compiled(adam.element)
_ADAM_ADVANCE = compiled(adam.advance)
_ADAM_SCALARS = compiled(adam.tensor_scalars)


@_jit
def adam_chunks(chunks, addresses, like, hyper, bias, flags, advance):
    if flags[2]:  # amsgrad: max_exp_avg_sq is stored
        _chunks(
            _ADAM_ELEMENT, _ADAM_ADVANCE, _ADAM_SCALARS, False, True, True, True,
            chunks, addresses, like, hyper, bias, flags, advance,
        )  # fmt: skip
    else:
        _chunks(
            _ADAM_ELEMENT, _ADAM_ADVANCE, _ADAM_SCALARS, False, True, True, False,
            chunks, addresses, like, hyper, bias, flags, advance,
        )  # fmt: skip


@_jit_parallel
def adam_parallel(chunks, bounds, addresses, like, hyper, bias, flags, advance):
    _parallel(
        _ADAM_ADVANCE, False, adam_chunks,
        chunks, bounds, addresses, like, hyper, bias, flags, advance,
    )  # fmt: skip


_RMSPROP_ELEMENT = compiled(rmsprop.element)
_RMSPROP_ADVANCE = compiled(rmsprop.advance)
_RMSPROP_SCALARS = compiled(rmsprop.tensor_scalars)


@_jit
def rmsprop_chunks(chunks, addresses, like, hyper, bias, flags, advance):
    # grad_avg is stored when centered (flags[0]), the momentum buffer with momentum (flags[3])
    if flags[0] and flags[3]:
        _chunks(
            _RMSPROP_ELEMENT, _RMSPROP_ADVANCE, _RMSPROP_SCALARS, False, True, True, True,
            chunks, addresses, like, hyper, bias, flags, advance,
        )  # fmt: skip
    elif flags[0]:
        _chunks(
            _RMSPROP_ELEMENT, _RMSPROP_ADVANCE, _RMSPROP_SCALARS, False, True, True, False,
            chunks, addresses, like, hyper, bias, flags, advance,
        )  # fmt: skip
    elif flags[3]:
        _chunks(
            _RMSPROP_ELEMENT, _RMSPROP_ADVANCE, _RMSPROP_SCALARS, False, True, False, True,
            chunks, addresses, like, hyper, bias, flags, advance,
        )  # fmt: skip
    else:
        _chunks(
            _RMSPROP_ELEMENT, _RMSPROP_ADVANCE, _RMSPROP_SCALARS, False, True, False, False,
            chunks, addresses, like, hyper, bias, flags, advance,
        )  # fmt: skip


@_jit_parallel
def rmsprop_parallel(chunks, bounds, addresses, like, hyper, bias, flags, advance):
    _parallel(
        _RMSPROP_ADVANCE, False, rmsprop_chunks,
        chunks, bounds, addresses, like, hyper, bias, flags, advance,
    )  # fmt: skip


_NADAM_ELEMENT = compiled(nadam.element)
_NADAM_ADVANCE = compiled(nadam.advance)
_NADAM_SCALARS = compiled(nadam.tensor_scalars)


@_jit
def nadam_chunks(chunks, addresses, like, hyper, bias, flags, advance):
    _chunks(
        _NADAM_ELEMENT, _NADAM_ADVANCE, _NADAM_SCALARS, True, True, True, False,
        chunks, addresses, like, hyper, bias, flags, advance,
    )  # fmt: skip


@_jit_parallel
def nadam_parallel(chunks, bounds, addresses, like, hyper, bias, flags, advance):
    _parallel(
        _NADAM_ADVANCE, True, nadam_chunks,
        chunks, bounds, addresses, like, hyper, bias, flags, advance,
    )  # fmt: skip


_RADAM_ELEMENT = compiled(radam.element)
_RADAM_ADVANCE = compiled(radam.advance)
_RADAM_SCALARS = compiled(radam.tensor_scalars)


@_jit
def radam_chunks(chunks, addresses, like, hyper, bias, flags, advance):
    _chunks(
        _RADAM_ELEMENT, _RADAM_ADVANCE, _RADAM_SCALARS, False, True, True, False,
        chunks, addresses, like, hyper, bias, flags, advance,
    )  # fmt: skip


@_jit_parallel
def radam_parallel(chunks, bounds, addresses, like, hyper, bias, flags, advance):
    _parallel(
        _RADAM_ADVANCE, False, radam_chunks,
        chunks, bounds, addresses, like, hyper, bias, flags, advance,
    )  # fmt: skip


_ADAMAX_ELEMENT = compiled(adamax.element)
_ADAMAX_ADVANCE = compiled(adamax.advance)
_ADAMAX_SCALARS = compiled(adamax.tensor_scalars)


@_jit
def adamax_chunks(chunks, addresses, like, hyper, bias, flags, advance):
    _chunks(
        _ADAMAX_ELEMENT, _ADAMAX_ADVANCE, _ADAMAX_SCALARS, False, True, True, False,
        chunks, addresses, like, hyper, bias, flags, advance,
    )  # fmt: skip


@_jit_parallel
def adamax_parallel(chunks, bounds, addresses, like, hyper, bias, flags, advance):
    _parallel(
        _ADAMAX_ADVANCE, False, adamax_chunks,
        chunks, bounds, addresses, like, hyper, bias, flags, advance,
    )  # fmt: skip


LOOPS = {
    "adam": (adam_chunks, adam_parallel),
    "rmsprop": (rmsprop_chunks, rmsprop_parallel),
    "nadam": (nadam_chunks, nadam_parallel),
    "radam": (radam_chunks, radam_parallel),
    "adamax": (adamax_chunks, adamax_parallel),
}
