"""The fused CPU kernel for low-memory state: any Adam-family spec, one pass per block.

Per block of 256 elements, in registers and two block-sized buffers: decode the stored
moments (8-bit codes × the block's scale, or bfloat16 patterns), run the spec's own
``element`` in float32 (the same compiled element as the fp32 driver,
:mod:`adamkit.kernels._numba_driver`), store the param (float32, or bfloat16 rounded to
nearest, stochastically, or with Kahan's compensation), and store the moments: bfloat16 with
stochastic rounding at once, 8-bit after the block's new absmax is known (a second pass over
the block's buffer, still in L1). Blocks are independent, so threads take whole blocks.

The formats are :mod:`adamkit.reference.lowbit`'s, bit for bit: integer arithmetic on float32
patterns, written as 32-bit LLVM IR in :mod:`adamkit.kernels._numba_bits` (numba's own
integers are 64-bit, which halved the vector width and tripled the step's time).

Specs with two stored slots are fused (Adam, NAdam, RAdam, Adamax; AMSGrad's third slot takes
the torch-ops path). One entry point per spec, as in the fp32 driver (numba's cache keys a
compiled function by module and name).
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..algorithms import adam, adamax, nadam, radam
from ..algorithms.state_formats import BLOCK, MIN_SCALE, PARAM_STREAM, tensor_seed
from . import _numba_cache
from ._numba_bits import (
    bf16_load,
    bf16_nearest,
    bf16_stochastic_high,
    bf16_stochastic_low,
    decoded_signed,
    decoded_unsigned,
    encoded_signed,
    encoded_unsigned,
    finite_magnitude_bits,
    float_of,
    random_bits,
)
from ._numba_cpu import _OPTIONS, _float64_cell, _view
from ._numba_driver import _advance, _tensor_table, compiled

_numba_cache.install()
_jit = numba.njit(**_OPTIONS)
_jit_parallel = numba.njit(parallel=True, **_OPTIONS)
_inline = numba.njit(inline="always", error_model="numpy")
# Small helpers are compiled once each and inlined by LLVM, not numba: numba's own inlining of
# them into every specialisation made the loops take minutes to compile.
_helper = numba.njit(error_model="numpy")

# Literals the entry points pass: the state's precision, the param's storage and rounding,
# and each slot's kind.
Q8, BF16 = 0, 1
PARAM_FLOAT32, PARAM_NEAREST, PARAM_STOCHASTIC, PARAM_KAHAN = 0, 1, 2, 3
SIGNED, SQUARE, UNSIGNED = 0, 1, 2
KIND_CODES = {"signed": SIGNED, "square": SQUARE, "unsigned": UNSIGNED}

# Address rows: p, g, s0, s1 (codes or bfloat16 patterns), the two slots' absmax (float32;
# any readable address in bf16 mode), Kahan's compensation (the param's address without it),
# the float64 step counter, the float32 scalar state (the step's address without one); then
# not an address: the tensor's random stream (tensor_seed).
P, G, S0, S1, A0, A1, KAHAN, STEP, AUX, STREAM = range(10)

_F32 = np.empty(0, np.float32)
_U16 = np.empty(0, np.uint16)
_U8 = np.empty(0, np.uint8)


_tensor_seed = _helper(tensor_seed)  # int64 products wrap: their low 32 bits are exact


@_helper
def _decoded(code, scale, kind):
    if kind == SIGNED:
        return decoded_signed(code, scale)
    value = decoded_unsigned(code, scale)
    return value * value if kind == SQUARE else value


@_helper
def _stored(x, kind):
    """What a slot's block buffer holds: √v for SQUARE (the element's own √v, which LLVM
    then computes once), else the value; a block's scale is its largest finite magnitude."""
    return np.float32(math.sqrt(x)) if kind == SQUARE else x


@_helper
def _encoded(stored, inverse, noise, kind):
    if kind == SIGNED:
        return encoded_signed(stored, inverse, noise)
    return encoded_unsigned(stored, inverse, noise)


@_helper
def _inverse(scale):
    # a block below float32's smallest normal flushes to 0: its 1/scale would be Inf
    return np.float32(1) / scale if scale >= np.float32(MIN_SCALE) else np.float32(0)


@_inline
def _blocks(
    element, advance_fn, tensor_scalars, has_aux, kind0, kind1, precision, param_mode,
    chunks, addresses, numels, hyper, bias, flags, advance,
):  # fmt: skip
    """The spec's update over chunk rows (tensor, first block, end block)."""
    b = (bias[0], bias[1], bias[2], bias[3])
    if advance:
        _advance(advance_fn, addresses, b, has_aux, STEP, AUX)
    h = (hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], hyper[5], hyper[6], hyper[7])
    # f[2] is Adam's AMSGrad: with it there is a third slot, and the torch-ops path runs.
    f = (flags[0] != 0, flags[1] != 0, False, flags[3] != 0)
    table = _tensor_table(tensor_scalars, addresses, b, _F32, STEP, AUX)
    seeds = np.empty(addresses.shape[0], np.int64)
    for t in range(addresses.shape[0]):
        step = _float64_cell(addresses[t, STEP])[0]
        seeds[t] = _tensor_seed(step, numels[t], addresses[t, STREAM])
    buffer0 = np.empty(BLOCK, np.float32)
    buffer1 = np.empty(BLOCK, np.float32)
    for c in range(chunks.shape[0]):
        t, first, end = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        n, row, seed = numels[t], addresses[t], seeds[t]
        k = (table[t, 0], table[t, 1], table[t, 2], table[t, 3])
        p32, g32 = _view(row[P], 0, n, _F32), _view(row[G], 0, n, _F32)
        p16, g16, comp = (
            _view(row[P], 0, n, _U16),
            _view(row[G], 0, n, _U16),
            _view(row[KAHAN], 0, n, _U16),
        )
        codes0, codes1 = _view(row[S0], 0, n, _U8), _view(row[S1], 0, n, _U8)
        half0, half1 = _view(row[S0], 0, n, _U16), _view(row[S1], 0, n, _U16)
        blocks = (n + BLOCK - 1) // BLOCK
        scales0 = _view(row[A0], 0, blocks if precision == Q8 else 0, _F32)
        scales1 = _view(row[A1], 0, blocks if precision == Q8 else 0, _F32)
        for blk in range(first, end):
            lo = blk * BLOCK
            hi = min(lo + BLOCK, n)
            # Views of the block, indexed from 0: an index numba knows is >= 0 needs no
            # wraparound check, and only then does LLVM vectorize the loop (20x here).
            p32b, g32b, p16b, g16b = p32[lo:hi], g32[lo:hi], p16[lo:hi], g16[lo:hi]
            compb, codes0b, codes1b = comp[lo:hi], codes0[lo:hi], codes1[lo:hi]
            half0b, half1b = half0[lo:hi], half1[lo:hi]
            scale0 = scales0[blk] if precision == Q8 else np.float32(0)
            scale1 = scales1[blk] if precision == Q8 else np.float32(0)
            largest0, largest1 = np.uint32(0), np.uint32(0)
            for j in range(hi - lo):
                if param_mode == PARAM_FLOAT32:
                    p, g = p32b[j], g32b[j]
                else:
                    p, g = bf16_load(p16b[j]), bf16_load(g16b[j])
                    if param_mode == PARAM_KAHAN:
                        p = p + bf16_load(compb[j])
                if precision == Q8:
                    s0 = _decoded(codes0b[j], scale0, kind0)
                    s1 = _decoded(codes1b[j], scale1, kind1)
                else:
                    s0, s1 = bf16_load(half0b[j]), bf16_load(half1b[j])
                new_p, x0, x1, _ = element(p, g, s0, s1, g, h, k, f)
                if param_mode == PARAM_FLOAT32:
                    p32b[j] = new_p
                elif param_mode == PARAM_NEAREST:
                    p16b[j] = bf16_nearest(new_p)
                elif param_mode == PARAM_STOCHASTIC:
                    p16b[j] = bf16_stochastic_low(new_p, random_bits(seed ^ PARAM_STREAM, lo + j))
                else:
                    rounded = bf16_nearest(new_p)
                    p16b[j] = rounded
                    compb[j] = bf16_nearest(new_p - bf16_load(rounded))
                if precision == Q8:
                    stored0, stored1 = _stored(x0, kind0), _stored(x1, kind1)
                    buffer0[j], buffer1[j] = stored0, stored1
                    largest0 = max(largest0, finite_magnitude_bits(stored0))
                    largest1 = max(largest1, finite_magnitude_bits(stored1))
                else:
                    noise = random_bits(seed, lo + j)
                    half0b[j] = bf16_stochastic_low(x0, noise)
                    half1b[j] = bf16_stochastic_high(x1, noise)
            if precision == Q8:
                new_scale0, new_scale1 = float_of(largest0), float_of(largest1)
                scales0[blk], scales1[blk] = new_scale0, new_scale1
                inverse0, inverse1 = _inverse(new_scale0), _inverse(new_scale1)
                for j in range(hi - lo):  # stochastic rounding, as bf16: m low bits, v high
                    noise = random_bits(seed, lo + j)
                    codes0b[j] = _encoded(buffer0[j], inverse0, noise, kind0)
                    codes1b[j] = _encoded(buffer1[j], inverse1, noise >> np.uint32(16), kind1)


@_inline
def _dispatch(
    element, advance_fn, tensor_scalars, has_aux, kind0, kind1,
    precision, mode, chunks, addresses, numels, hyper, bias, flags, advance,
):  # fmt: skip
    """The loop for runtime ``precision`` and param ``mode``, each combination compiled as
    its own loop with the formats as constants."""
    if precision == Q8:
        if mode == PARAM_FLOAT32:
            _blocks(
                element, advance_fn, tensor_scalars, has_aux, kind0, kind1, Q8, PARAM_FLOAT32,
                chunks, addresses, numels, hyper, bias, flags, advance,
            )  # fmt: skip
        elif mode == PARAM_NEAREST:
            _blocks(
                element, advance_fn, tensor_scalars, has_aux, kind0, kind1, Q8, PARAM_NEAREST,
                chunks, addresses, numels, hyper, bias, flags, advance,
            )  # fmt: skip
        elif mode == PARAM_STOCHASTIC:
            _blocks(
                element, advance_fn, tensor_scalars, has_aux, kind0, kind1, Q8, PARAM_STOCHASTIC,
                chunks, addresses, numels, hyper, bias, flags, advance,
            )  # fmt: skip
        else:
            _blocks(
                element, advance_fn, tensor_scalars, has_aux, kind0, kind1, Q8, PARAM_KAHAN,
                chunks, addresses, numels, hyper, bias, flags, advance,
            )  # fmt: skip
    elif mode == PARAM_FLOAT32:
        _blocks(
                element, advance_fn, tensor_scalars, has_aux, kind0, kind1, BF16, PARAM_FLOAT32,
                chunks, addresses, numels, hyper, bias, flags, advance,
            )  # fmt: skip
    elif mode == PARAM_NEAREST:
        _blocks(
                element, advance_fn, tensor_scalars, has_aux, kind0, kind1, BF16, PARAM_NEAREST,
                chunks, addresses, numels, hyper, bias, flags, advance,
            )  # fmt: skip
    elif mode == PARAM_STOCHASTIC:
        _blocks(
                element, advance_fn, tensor_scalars, has_aux, kind0, kind1, BF16, PARAM_STOCHASTIC,
                chunks, addresses, numels, hyper, bias, flags, advance,
            )  # fmt: skip
    else:
        _blocks(
                element, advance_fn, tensor_scalars, has_aux, kind0, kind1, BF16, PARAM_KAHAN,
                chunks, addresses, numels, hyper, bias, flags, advance,
            )  # fmt: skip


_ADAM = (compiled(adam.element), compiled(adam.advance), compiled(adam.tensor_scalars))
_NADAM = (compiled(nadam.element), compiled(nadam.advance), compiled(nadam.tensor_scalars))
_RADAM = (compiled(radam.element), compiled(radam.advance), compiled(radam.tensor_scalars))
_ADAMAX = (compiled(adamax.element), compiled(adamax.advance), compiled(adamax.tensor_scalars))
_ADAM_ELEMENT, _ADAM_ADVANCE, _ADAM_SCALARS = _ADAM
_NADAM_ELEMENT, _NADAM_ADVANCE, _NADAM_SCALARS = _NADAM
_RADAM_ELEMENT, _RADAM_ADVANCE, _RADAM_SCALARS = _RADAM
_ADAMAX_ELEMENT, _ADAMAX_ADVANCE, _ADAMAX_SCALARS = _ADAMAX


@_jit
def adam_blocks(precision, mode, chunks, addresses, numels, hyper, bias, flags, advance):
    _dispatch(
        _ADAM_ELEMENT, _ADAM_ADVANCE, _ADAM_SCALARS, False, SIGNED, SQUARE,
        precision, mode, chunks, addresses, numels, hyper, bias, flags, advance,
    )  # fmt: skip


@_jit_parallel
def adam_parallel(precision, mode, chunks, bounds, addresses, numels, hyper, bias, flags):
    _advance(_ADAM_ADVANCE, addresses, (bias[0], bias[1], bias[2], bias[3]), False, STEP, AUX)
    for k in numba.prange(bounds.size - 1):
        part = chunks[bounds[k] : bounds[k + 1]]
        adam_blocks(precision, mode, part, addresses, numels, hyper, bias, flags, False)


@_jit
def nadam_blocks(precision, mode, chunks, addresses, numels, hyper, bias, flags, advance):
    _dispatch(
        _NADAM_ELEMENT, _NADAM_ADVANCE, _NADAM_SCALARS, True, SIGNED, SQUARE,
        precision, mode, chunks, addresses, numels, hyper, bias, flags, advance,
    )  # fmt: skip


@_jit_parallel
def nadam_parallel(precision, mode, chunks, bounds, addresses, numels, hyper, bias, flags):
    _advance(_NADAM_ADVANCE, addresses, (bias[0], bias[1], bias[2], bias[3]), True, STEP, AUX)
    for k in numba.prange(bounds.size - 1):
        part = chunks[bounds[k] : bounds[k + 1]]
        nadam_blocks(precision, mode, part, addresses, numels, hyper, bias, flags, False)


@_jit
def radam_blocks(precision, mode, chunks, addresses, numels, hyper, bias, flags, advance):
    _dispatch(
        _RADAM_ELEMENT, _RADAM_ADVANCE, _RADAM_SCALARS, False, SIGNED, SQUARE,
        precision, mode, chunks, addresses, numels, hyper, bias, flags, advance,
    )  # fmt: skip


@_jit_parallel
def radam_parallel(precision, mode, chunks, bounds, addresses, numels, hyper, bias, flags):
    _advance(_RADAM_ADVANCE, addresses, (bias[0], bias[1], bias[2], bias[3]), False, STEP, AUX)
    for k in numba.prange(bounds.size - 1):
        part = chunks[bounds[k] : bounds[k + 1]]
        radam_blocks(precision, mode, part, addresses, numels, hyper, bias, flags, False)


@_jit
def adamax_blocks(precision, mode, chunks, addresses, numels, hyper, bias, flags, advance):
    _dispatch(
        _ADAMAX_ELEMENT, _ADAMAX_ADVANCE, _ADAMAX_SCALARS, False, SIGNED, UNSIGNED,
        precision, mode, chunks, addresses, numels, hyper, bias, flags, advance,
    )  # fmt: skip


@_jit_parallel
def adamax_parallel(precision, mode, chunks, bounds, addresses, numels, hyper, bias, flags):
    _advance(_ADAMAX_ADVANCE, addresses, (bias[0], bias[1], bias[2], bias[3]), False, STEP, AUX)
    for k in numba.prange(bounds.size - 1):
        part = chunks[bounds[k] : bounds[k + 1]]
        adamax_blocks(precision, mode, part, addresses, numels, hyper, bias, flags, False)


LOOPS = {
    "adam": (adam_blocks, adam_parallel),
    "nadam": (nadam_blocks, nadam_parallel),
    "radam": (radam_blocks, radam_parallel),
    "adamax": (adamax_blocks, adamax_parallel),
}
