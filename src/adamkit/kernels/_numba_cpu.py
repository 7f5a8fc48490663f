"""numba loops for the fused CPU kernels: one pass over flat contiguous arrays.

Each loop reads p, g and the state once and writes p and the state once, with no
temporaries. The per-element math lives in one inlined function per algorithm; the inner
loops are serial and vectorized by LLVM. Measured here (2 cores): a ``prange`` over the
elements did not vectorize and ran 3-5x slower than the serial loop, so threads get whole
chunks instead (``*_parallel`` below); the second core gains ~20% on a memory-bound 54M-parameter
model and ~35% on a 50k-parameter one, whose loop is bound by division and square root.

* Scalars arrive in the arrays' dtype, so float32 data is computed in float32 (8 lanes wide),
  in torch's for-loop operation order except one step: Adam multiplies √v by 1/√(1-β2^t)
  where torch divides (one division per element instead of two; within an ulp).
* The step counters get their +1 inside the same call (``advance``), before any thread reads
  them for the bias corrections.
* ``error_model="numpy"``: division by zero gives Inf/NaN as IEEE and torch do (the default
  "python" model checks every division, which also stops vectorization).
* Long groups are cut into one chunk table per thread; the ``*_parallel`` loops run the
  tables on numba's thread pool (a ``prange`` over tables, so each thread's inner loop is the
  same vectorized serial loop). ``nogil`` lets other Python threads run meanwhile.
* No fastmath: NaN and Inf propagate exactly as in the for-loop kernel.
* ``cache=True``: compiled loops are kept on disk, so a new process does not compile again.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

_OPTIONS = {"cache": True, "error_model": "numpy", "nogil": True}
_jit = numba.njit(**_OPTIONS)
_jit_parallel = numba.njit(parallel=True, **_OPTIONS)
_inline = numba.njit(inline="always", **_OPTIONS)


@_inline
def _nan_max(a, b):
    # torch.maximum propagates NaN from either side; a plain max would drop one of them.
    if a != a or a > b:
        return a
    return b


@_inline
def _lerp(start, end, weight, one_minus_weight):
    # torch's lerp formula, exact at both ends. Both sides are computed and one selected:
    # a branch here stops vectorization. ``one_minus_weight`` comes in the data's dtype (a
    # literal 1 would promote float32 math to float64).
    diff = end - start
    low = start + weight * diff
    high = end - diff * one_minus_weight
    return low if weight < 0.5 else high


@_inline
def _adam_element(p, g, m, v, vmax, hyper, flags):
    decay, wd, one_minus_beta1, beta1, beta2, one_minus_beta2, eps, step_size, inv_bc2_sqrt = hyper
    maximize, l2, amsgrad = flags
    if maximize:
        g = -g
    p = p * decay  # AdamW's decoupled decay (decay = 1 otherwise, which is exact)
    if l2:
        g = g + wd * p
    m = _lerp(m, g, one_minus_beta1, beta1)
    v = v * beta2 + one_minus_beta2 * g * g
    second = v
    if amsgrad:
        vmax = _nan_max(vmax, v)
        second = vmax
    # √v̂ as √v·(1/√(1-β2^t)): one division per element instead of torch's two (the loop on a
    # small model is bound by division and square root); within an ulp of √v/√(1-β2^t).
    denom = math.sqrt(second) * inv_bc2_sqrt + eps
    return p - step_size * (m / denom), m, v, vmax


@_jit
def adam(p, g, m, v, vmax, hyper, flags):
    amsgrad = flags[2]
    for i in range(p.size):
        old_max = vmax[i] if amsgrad else v[i]
        p[i], m[i], v[i], new_max = _adam_element(p[i], g[i], m[i], v[i], old_max, hyper, flags)
        if amsgrad:
            vmax[i] = new_max


@_inline
def _sgd_element(p, g, buf, hyper, flags):
    lr, momentum, one_minus_dampening, wd = hyper
    nesterov, maximize, first, l2, has_momentum = flags
    if maximize:
        g = -g
    if l2:
        g = g + wd * p
    if has_momentum:
        if first:
            buf = g  # b_1 = g_1
        else:
            buf = buf * momentum + one_minus_dampening * g
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


@_jit
def sgd(p, g, buf, hyper, flags):
    has_momentum = flags[4]
    for i in range(p.size):
        old = buf[i] if has_momentum else g[i]
        p[i], new = _sgd_element(p[i], g[i], old, hyper, flags)
        if has_momentum:
            buf[i] = new


@_inline
def _rmsprop_element(p, g, v, gavg, buf, hyper, flags):
    # Every option is a select between values computed either way, not a branch around
    # code: with branches LLVM did not vectorize this loop (140 µs instead of 25-35 µs for
    # 49k float32 elements). gavg and buf are read even when off (fused_cpu then passes the
    # grad's memory as a stand-in) and only stored when on.
    lr, alpha, one_minus_alpha, lerp_complement, eps, wd, momentum = hyper
    centered, maximize, l2, has_momentum = flags
    g = -g if maximize else g
    g = g + wd * p if l2 else g
    v = v * alpha + one_minus_alpha * g * g
    gavg = _lerp(gavg, g, one_minus_alpha, lerp_complement)
    avg = math.sqrt(v - gavg * gavg if centered else v) + eps
    direction = g / avg
    buf = buf * momentum + direction
    return p - lr * (buf if has_momentum else direction), v, gavg, buf


@_inline
def _rmsprop_loop(p, g, v, gavg, buf, hyper, flags, centered, has_momentum):
    # centered and has_momentum arrive as constants (see rmsprop): the stores they guard are
    # then compiled in or out, and the loop vectorizes even when gavg/buf stand in for
    # memory the loop reads (a conditional store there fails LLVM's runtime alias check).
    options = (centered, flags[1], flags[2], has_momentum)
    for i in range(p.size):
        p[i], v[i], new_gavg, new_buf = _rmsprop_element(
            p[i], g[i], v[i], gavg[i], buf[i], hyper, options
        )
        if centered:
            gavg[i] = new_gavg
        if has_momentum:
            buf[i] = new_buf


@_jit
def rmsprop(p, g, v, gavg, buf, hyper, flags):
    """RMSprop over one chunk; flags = (centered, maximize, L2, momentum)."""
    if flags[0]:
        if flags[3]:
            _rmsprop_loop(p, g, v, gavg, buf, hyper, flags, True, True)
        else:
            _rmsprop_loop(p, g, v, gavg, buf, hyper, flags, True, False)
    elif flags[3]:
        _rmsprop_loop(p, g, v, gavg, buf, hyper, flags, False, True)
    else:
        _rmsprop_loop(p, g, v, gavg, buf, hyper, flags, False, False)


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
# tensor's memory and goes through the per-tensor loop above. One call instead of one per
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


@_inline
def _advance(addresses, role):
    """Add one to the float64 step counters at ``addresses[:, role]``."""
    for t in range(addresses.shape[0]):
        _float64_cell(addresses[t, role])[0] += 1.0


@_jit
def adam_chunks(chunks, addresses, like, hyper, bias, flags, advance):
    """Adam over the chunks; ``bias`` = (lr, β1, β2) in float64 for the bias corrections;
    with ``advance``, the step counters get their +1 first."""
    if advance:
        _advance(addresses, 5)
    decay, wd, one_minus_beta1, beta1 = hyper[0], hyper[1], hyper[2], hyper[3]
    beta2, one_minus_beta2, eps = hyper[4], hyper[5], hyper[6]
    options = (flags[0] != 0, flags[1] != 0, flags[2] != 0)  # maximize, L2, amsgrad
    # Bias corrections in float64 from each tensor's step, then rounded to the data's dtype,
    # as torch's for-loop kernel computes them in Python floats.
    lr, beta1_64, beta2_64 = bias[0], bias[1], bias[2]
    n = addresses.shape[0]
    step_size = np.empty(n, like.dtype)
    inv_bc2_sqrt = np.empty(n, like.dtype)
    for t in range(n):
        step = _float64_cell(addresses[t, 5])[0]
        step_size[t] = lr / (1 - beta1_64**step)
        inv_bc2_sqrt[t] = 1 / (1 - beta2_64**step) ** 0.5
    for c in range(chunks.shape[0]):
        t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        tensor_hyper = (
            decay, wd, one_minus_beta1, beta1, beta2, one_minus_beta2, eps,
            step_size[t], inv_bc2_sqrt[t],
        )  # fmt: skip
        adam(
            _view(addresses[t, 0], lo, hi, like),
            _view(addresses[t, 1], lo, hi, like),
            _view(addresses[t, 2], lo, hi, like),
            _view(addresses[t, 3], lo, hi, like),
            _view(addresses[t, 4], lo, hi, like),
            tensor_hyper,
            options,
        )


@_jit
def sgd_chunks(chunks, addresses, first, like, hyper, flags):
    """SGD over the chunks; roles p, g, momentum buffer; ``first[t]``: the buffer starts now."""
    scalars = (hyper[0], hyper[1], hyper[2], hyper[3])  # lr, momentum, 1 - dampening, wd
    nesterov, maximize = flags[0] != 0, flags[1] != 0
    l2, has_momentum = flags[2] != 0, flags[3] != 0
    for c in range(chunks.shape[0]):
        t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        sgd(
            _view(addresses[t, 0], lo, hi, like),
            _view(addresses[t, 1], lo, hi, like),
            _view(addresses[t, 2], lo, hi, like),
            scalars,
            (nesterov, maximize, first[t] != 0, l2, has_momentum),
        )


@_jit
def rmsprop_chunks(chunks, addresses, like, hyper, flags, advance):
    """RMSprop over the chunks; roles p, g, square avg, grad avg, momentum buffer, step
    counter (only counted: RMSprop has no bias correction)."""
    if advance:
        _advance(addresses, 5)
    scalars = (hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], hyper[5], hyper[6])
    options = (flags[0] != 0, flags[1] != 0, flags[2] != 0, flags[3] != 0)
    for c in range(chunks.shape[0]):
        t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        rmsprop(
            _view(addresses[t, 0], lo, hi, like),
            _view(addresses[t, 1], lo, hi, like),
            _view(addresses[t, 2], lo, hi, like),
            _view(addresses[t, 3], lo, hi, like),
            _view(addresses[t, 4], lo, hi, like),
            scalars,
            options,
        )


# Parallel group loops: table k of ``chunks[bounds[k]:bounds[k + 1]]`` on thread k. Launching
# costs a few microseconds (numba's own thread pool, no Python hand-off), so even a 50k-element
# model gains from the second core.


@_jit_parallel
def adam_parallel(chunks, bounds, addresses, like, hyper, bias, flags, advance):
    if advance:  # once, before the threads read the counters
        _advance(addresses, 5)
    for k in numba.prange(bounds.size - 1):
        lo, hi = bounds[k], bounds[k + 1]
        adam_chunks(chunks[lo:hi], addresses, like, hyper, bias, flags, False)


@_jit_parallel
def sgd_parallel(chunks, bounds, addresses, first, like, hyper, flags):
    for k in numba.prange(bounds.size - 1):
        lo, hi = bounds[k], bounds[k + 1]
        sgd_chunks(chunks[lo:hi], addresses, first, like, hyper, flags)


@_jit_parallel
def rmsprop_parallel(chunks, bounds, addresses, like, hyper, flags, advance):
    if advance:
        _advance(addresses, 5)
    for k in numba.prange(bounds.size - 1):
        lo, hi = bounds[k], bounds[k + 1]
        rmsprop_chunks(chunks[lo:hi], addresses, like, hyper, flags, False)


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
