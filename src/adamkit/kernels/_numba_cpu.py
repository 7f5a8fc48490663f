"""numba building blocks for the fused CPU kernels.

Every algorithm's loop is generated from its spec by one driver
(:mod:`adamkit.kernels._numba_driver`); this module holds what that driver and the other
numba code share: views of memory by address, torch's lerp and NaN-propagating max, the
memory-limit loop ``adamkit bench`` measures the ceiling with, and the diagnostics' gather.

How the loops are built, measured here (2 cores):

* One pass over p, g and the state, no temporaries. The inner loops are serial and vectorized
  by LLVM; a ``prange`` over the elements did not vectorize and ran 3-5x slower, so threads
  get whole chunk tables instead (``*_parallel``): the second core gains ~20% on a
  memory-bound 54M-parameter model and ~35% on a 50k-parameter one.
* Scalars arrive in the arrays' dtype, so float32 data is computed in float32 (8 lanes wide).
* ``error_model="numpy"``: division by zero gives Inf/NaN as IEEE and torch do (the default
  "python" model checks every division, which also stops vectorization).
* No fastmath: NaN and Inf propagate exactly as in the for-loop kernel (but in
  :func:`_block_total`, a float sum allowed to reassociate, so that it vectorizes). ``nogil``
  lets other Python threads run meanwhile; ``cache=True`` keeps compiled loops on disk.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

_OPTIONS = {"cache": True, "error_model": "numpy", "nogil": True}
_jit = numba.njit(**_OPTIONS)
_jit_parallel = numba.njit(parallel=True, **_OPTIONS)


# A reduction pass's float sum, a block of terms at a time: a numba function of its own, the
# only one of the spec kernels compiled with reassociation. A float sum vectorizes only if
# LLVM may reorder it (a sum's order is not part of any spec); with the element inlined into
# it, LLVM would reorder the element's own arithmetic too (k2*g*g as k2*(g*g)), and the terms
# would not be the spec's.
@numba.njit(fastmath={"reassoc"}, **_OPTIONS)
def _block_total(terms):
    total = 0.0
    for j in range(terms.size):
        total += terms[j]
    return total


_inline = numba.njit(inline="always", **_OPTIONS)


@_inline
def _nan_max(a, b):
    # torch.maximum propagates NaN from either side; a plain max would drop one of them.
    if a != a or a > b:
        return a
    return b


def _sign(x):
    """-1, 0 or +1 in ``x``'s dtype, 0 for NaN (torch's sign); numba's ``np.sign`` would
    return float64 for float32 and promote the rest of the element."""
    raise NotImplementedError("compiled by numba only")


@overload(_sign, inline="always")
def _typed_sign(x):
    one, zero = as_dtype(x).type(1), as_dtype(x).type(0)

    def sign(x):
        return one if x > 0 else (-one if x < 0 else zero)

    return sign


@_inline
def _lerp(start, end, weight, one_minus_weight):
    # torch's lerp formula, exact at both ends. Both sides are computed and one selected:
    # a branch here stops vectorization. ``one_minus_weight`` comes in the data's dtype (a
    # literal 1 would promote float32 math to float64).
    diff = end - start
    low = start + weight * diff
    high = end - diff * one_minus_weight
    return low if weight < 0.5 else high


@_jit_parallel
def memory_limit_parallel(p, g, m, v):
    """The bytes of an Adam step (read p, g, m, v; write p, m, v) with trivial arithmetic."""
    for i in numba.prange(p.size):
        gi = g[i]
        m[i] = m[i] + gi
        v[i] = v[i] + gi
        p[i] = p[i] + gi


# ---------------------------------------------------------------------------------------------
# Group loops: every tensor of a group in one call. The caller passes data addresses (int64)
# and a chunk table (tensor, first element, end element); each chunk becomes an array over the
# tensor's memory and goes through the spec's element. One call instead of one per
# tensor removes the per-tensor Python and dispatch cost that dominates small models, and the
# chunk tables let two threads share a group without one hand-off per tensor.


@intrinsic
def _pointer(typingctx, address, like):
    """The int64 ``address`` as a pointer to elements of ``like``'s dtype."""
    pointer = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(pointer))

    return pointer(address, like), codegen


_FLOAT64_LIKE = np.empty(0, np.float64)


@_inline
def _view(address, lo, hi, like):
    """Elements lo..hi of the array at ``address`` (dtype of ``like``), without a copy."""
    return numba.carray(_pointer(address + lo * like.itemsize, like), (hi - lo,))


@_inline
def _float64_cell(address):
    """The one-element float64 array at ``address`` (a step counter)."""
    return numba.carray(_pointer(address, _FLOAT64_LIKE), (1,))


# Arguments of the group loops: ``addresses[t, role]`` holds the data address of tensor t in
# each role (Adam: p, g, m, v, max v, step counter); ``hyper`` holds the scalars in the data's
# dtype, ``flags`` the options as 0/1 (arrays, not tuples: numba's dispatcher types an array
# argument in C, a tuple element by element in Python).


@_jit
def gather_blocks(table, addresses, like, out):
    """Copy the elements ``table`` rows (tensor, first, end) name, from the arrays at
    ``addresses`` (dtype of ``like``), into ``out`` (float64), one row after another. Used by
    the diagnostics to read a sample of a group's tensors in one call."""
    k = 0
    for r in range(table.shape[0]):
        t, lo, hi = table[r, 0], table[r, 1], table[r, 2]
        src = _view(addresses[t], lo, hi, like)
        for i in range(hi - lo):
            out[k + i] = src[i]
        k += hi - lo
