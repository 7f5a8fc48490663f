"""A spec compiled for the numba kernels: its functions with numba's operations, and the
per-tensor counters and scalar table its loops read. Shared by the fp32 driver
(:mod:`adamkit.kernels._numba_driver`) and the low-memory kernel
(:mod:`adamkit.kernels._numba_lowbit`), whose address rows hold the counters in other columns.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from ..algorithms import AlgorithmSpec
from ..algorithms._spec import recompiled
from ._numba_cpu import _float64_cell, _lerp, _nan_max, _pointer, _sign

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
    "sign": _sign,
    "to_float32": _to_float32,
}


def compiled(function):
    """``function`` with numba's operations in place of :mod:`adamkit.algorithms._ops`',
    inlined wherever it is called (its module's helper functions too)."""
    return _inline(recompiled(function, OPS, helpers=_inline))


_COMPILED: dict[tuple[Callable[..., Any], ...], tuple[Any, ...]] = {}


@_inline
def _no_reduction(g, s0, s1, s2, h, k, f):
    return g


def spec_functions(spec: AlgorithmSpec) -> dict[str, Any]:
    """The spec's ``element``, ``advance``, ``tensor_scalars`` and ``reduction`` compiled with
    numba's operations (once per function), under the names the generated entry points use."""
    key = (spec.element, spec.advance, spec.tensor_scalars, spec.reduction)
    if key not in _COMPILED:
        _COMPILED[key] = tuple(_no_reduction if f is None else compiled(f) for f in key)
    return dict(zip(("ELEMENT", "ADVANCE", "SCALARS", "REDUCTION"), _COMPILED[key], strict=True))


_FLOAT32_LIKE = np.empty(0, np.float32)


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
    """Each tensor's scalars from its counters, rounded to ``like``'s dtype (one row each;
    columns 4 and 5, a reduction's, start at 0)."""
    n = addresses.shape[0]
    table = np.zeros((n, 6), like.dtype)
    for t in range(n):
        step = _float64_cell(addresses[t, step_column])[0]
        k = tensor_scalars(step, _float32_cell(addresses[t, aux_column])[0], b)
        table[t, 0], table[t, 1], table[t, 2], table[t, 3] = k[0], k[1], k[2], k[3]
    return table


@_inline
def _row(table, t):
    return (table[t, 0], table[t, 1], table[t, 2], table[t, 3], table[t, 4], table[t, 5])


@_inline
def _scalars(hyper, flags):
    h = (hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], hyper[5], hyper[6], hyper[7])
    f = (flags[0] != 0, flags[1] != 0, flags[2] != 0, flags[3] != 0)
    return h, f
