"""The operations an element update may use besides arithmetic, in NumPy.

An algorithm's per-element update (``element`` in its spec) is written once in the subset of
Python that numba and Triton both compile: arithmetic, comparisons, tuple indexing and the
functions named here. Each backend recompiles the same code with its own versions of these
names (``adamkit.kernels._numba_driver``, ``adamkit.kernels.triton_driver``); the NumPy
versions below make the update run as written on arrays or scalars (tests, docs).

Every choice is a select between values computed both ways, never a branch: a branch stops
numba's loops from vectorizing, and Triton needs ``where`` on blocks anyway.
"""

from __future__ import annotations

import numpy as np


def where(condition, if_true, if_false):
    """``if_true`` where ``condition`` holds, else ``if_false`` (both are computed)."""
    return np.where(condition, if_true, if_false)


def sqrt(x):
    return np.sqrt(x)


def absolute(x):
    return np.abs(x)


def nan_max(a, b):
    """max(a, b) that propagates NaN from either side, as torch.maximum does."""
    return np.where((a != a) | (a > b), a, b)


def lerp(start, end, weight, one_minus_weight):
    """torch's lerp formula, exact at both ends; ``one_minus_weight`` comes rounded to the
    data's dtype (a literal 1 would promote float32 math to float64)."""
    diff = end - start
    return np.where(weight < 0.5, start + weight * diff, end - diff * one_minus_weight)


def sign(x):
    """-1, 0 or +1 in ``x``'s dtype; 0 for NaN (torch's ``sign``: a NaN moves nothing)."""
    return np.where(x > 0, 1.0, np.where(x < 0, -1.0, 0.0)).astype(np.result_type(x))


def to_float32(x):
    """``x`` rounded to float32 (state torch keeps as a float32 scalar, e.g. NAdam's
    ``mu_product``)."""
    return np.float32(x)
