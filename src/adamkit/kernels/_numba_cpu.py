"""numba loops for the fused CPU kernels: one pass over flat contiguous arrays.

Each loop reads p, g and the state once and writes p and the state once, with no
temporaries. The per-element math lives in one inlined function per algorithm; each has a
parallel loop (``prange``, for large arrays) and a serial twin (small arrays, where starting
a parallel region costs more than it saves). No fastmath: NaN and Inf propagate as in the
for-loop kernel. Compiled loops are cached on disk, so a new process does not compile again.
Operation order follows torch's for-loop kernel.
"""

from __future__ import annotations

import math

import numba

_jit = numba.njit(cache=True)
_jit_parallel = numba.njit(cache=True, parallel=True)
_inline = numba.njit(cache=True, inline="always")


@_inline
def _nan_max(a, b):
    # torch.maximum propagates NaN from either side; a plain max would drop one of them.
    if a != a or a > b:
        return a
    return b


@_inline
def _adam_element(p, g, m, v, vmax, hyper, flags):
    lr, beta1, beta2, eps, wd, step_size, bc2_sqrt = hyper
    decoupled, amsgrad, maximize = flags
    if maximize:
        g = -g
    if wd != 0.0:
        if decoupled:
            p = p * (1.0 - lr * wd)
        else:
            g = g + wd * p
    m = m + (1.0 - beta1) * (g - m)  # lerp, as torch computes it for weights < 0.5
    v = v * beta2 + (1.0 - beta2) * g * g
    second = v
    if amsgrad:
        vmax = _nan_max(vmax, v)
        second = vmax
    denom = math.sqrt(second) / bc2_sqrt + eps
    return p - step_size * (m / denom), m, v, vmax


@_jit_parallel
def adam_parallel(p, g, m, v, vmax, hyper, flags):
    amsgrad = flags[1]
    for i in numba.prange(p.size):
        old_max = vmax[i] if amsgrad else 0.0
        p[i], m[i], v[i], new_max = _adam_element(p[i], g[i], m[i], v[i], old_max, hyper, flags)
        if amsgrad:
            vmax[i] = new_max


@_jit
def adam_serial(p, g, m, v, vmax, hyper, flags):
    amsgrad = flags[1]
    for i in range(p.size):
        old_max = vmax[i] if amsgrad else 0.0
        p[i], m[i], v[i], new_max = _adam_element(p[i], g[i], m[i], v[i], old_max, hyper, flags)
        if amsgrad:
            vmax[i] = new_max


@_inline
def _sgd_element(p, g, buf, hyper, flags):
    lr, momentum, dampening, wd = hyper
    nesterov, maximize, first = flags
    if maximize:
        g = -g
    if wd != 0.0:
        g = g + wd * p
    if momentum != 0.0:
        if first:
            buf = g
        else:
            buf = buf * momentum + (1.0 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


@_jit_parallel
def sgd_parallel(p, g, buf, hyper, flags):
    has_buf = hyper[1] != 0.0
    for i in numba.prange(p.size):
        old = buf[i] if has_buf else 0.0
        p[i], new = _sgd_element(p[i], g[i], old, hyper, flags)
        if has_buf:
            buf[i] = new


@_jit
def sgd_serial(p, g, buf, hyper, flags):
    has_buf = hyper[1] != 0.0
    for i in range(p.size):
        old = buf[i] if has_buf else 0.0
        p[i], new = _sgd_element(p[i], g[i], old, hyper, flags)
        if has_buf:
            buf[i] = new


@_inline
def _rmsprop_element(p, g, v, gavg, buf, hyper, flags):
    lr, alpha, eps, wd, momentum = hyper
    centered, maximize = flags
    if maximize:
        g = -g
    if wd != 0.0:
        g = g + wd * p
    v = v * alpha + (1.0 - alpha) * g * g
    if centered:
        gavg = gavg + (1.0 - alpha) * (g - gavg)
        avg = math.sqrt(v - gavg * gavg) + eps
    else:
        avg = math.sqrt(v) + eps
    if momentum > 0.0:
        buf = buf * momentum + g / avg
        return p - lr * buf, v, gavg, buf
    return p - lr * (g / avg), v, gavg, buf


@_jit_parallel
def rmsprop_parallel(p, g, v, gavg, buf, hyper, flags):
    centered, has_buf = flags[0], hyper[4] > 0.0
    for i in numba.prange(p.size):
        old_gavg = gavg[i] if centered else 0.0
        old_buf = buf[i] if has_buf else 0.0
        p[i], v[i], new_gavg, new_buf = _rmsprop_element(
            p[i], g[i], v[i], old_gavg, old_buf, hyper, flags
        )
        if centered:
            gavg[i] = new_gavg
        if has_buf:
            buf[i] = new_buf


@_jit
def rmsprop_serial(p, g, v, gavg, buf, hyper, flags):
    centered, has_buf = flags[0], hyper[4] > 0.0
    for i in range(p.size):
        old_gavg = gavg[i] if centered else 0.0
        old_buf = buf[i] if has_buf else 0.0
        p[i], v[i], new_gavg, new_buf = _rmsprop_element(
            p[i], g[i], v[i], old_gavg, old_buf, hyper, flags
        )
        if centered:
            gavg[i] = new_gavg
        if has_buf:
            buf[i] = new_buf


@_jit_parallel
def memory_limit_parallel(p, g, m, v):
    """The bytes of an Adam step (read p, g, m, v; write p, m, v) with trivial arithmetic."""
    for i in numba.prange(p.size):
        gi = g[i]
        m[i] = m[i] + gi
        v[i] = v[i] + gi
        p[i] = p[i] + gi
