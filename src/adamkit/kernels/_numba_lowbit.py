"""The fused CPU kernel for low-memory state: any Adam-family spec, one pass per block.

Per block of 256 elements, in registers and two block-sized buffers: decode the stored
moments (8-bit codes × the block's scale, or bfloat16 patterns), run the spec's own
``element`` in float32 (the same compiled element as the fp32 driver,
:mod:`adamkit.kernels._numba_driver`), store the param (float32, or bfloat16 rounded to
nearest, stochastically, or with Kahan's compensation), and store the moments: bfloat16 with
stochastic rounding at once, 8-bit after the block's new absmax is known (a second pass over
the block's buffer, still in L1). Blocks are independent, so threads take whole blocks.

The formats are :mod:`adamkit.reference.lowbit`'s, bit for bit: integer arithmetic on float32
patterns, which numba reaches through two bit-cast intrinsics.

Specs with two stored slots are fused (Adam, NAdam, RAdam, Adamax; AMSGrad's third slot takes
the torch-ops path). One entry point per spec, as in the fp32 driver (numba's cache keys a
compiled function by module and name).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..algorithms import adam, adamax, nadam, radam
from ..algorithms.state_formats import (
    BLOCK,
    EXP_OFFSET,
    INF,
    MIN_NORMAL_BITS,
    NAN,
    PARAM_STREAM,
    TOP,
    tensor_seed,
)
from . import _numba_cache
from ._numba_cpu import _OPTIONS, _float64_cell, _view
from ._numba_driver import _advance, _tensor_table, compiled

# The codes as plain ints (numba reads no dict at run time): signed, then square/unsigned.
_INF_S, _NAN_S, _TOP_S = INF["signed"], NAN["signed"], TOP["signed"]
_INF_U, _NAN_U, _TOP_U = INF["square"], NAN["square"], TOP["square"]

# The subnormal minifloats' scale, 2^(14 + mantissa bits), as constants (no pow per element).
_TO_SUBNORMAL3, _TO_SUBNORMAL4 = np.float32(2.0**17), np.float32(2.0**18)
_FROM_SUBNORMAL3, _FROM_SUBNORMAL4 = np.float32(2.0**-17), np.float32(2.0**-18)

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
# the float64 step counter, the float32 scalar state (the step's address without one).
P, G, S0, S1, A0, A1, KAHAN, STEP, AUX = range(9)

_F32 = np.empty(0, np.float32)
_U16 = np.empty(0, np.uint16)
_U8 = np.empty(0, np.uint8)
_MASK32 = 0xFFFFFFFF
_FINITE_LIMIT = 0x7F800000  # |x|'s pattern is below this iff x is finite


_tensor_seed = _helper(tensor_seed)  # int64 products wrap: their low 32 bits are exact


@intrinsic
def _bits_of(typingctx, x):
    """float32 ``x``'s bit pattern as uint32."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@intrinsic
def _float_of(typingctx, x):
    """The float32 whose bit pattern is the low 32 bits of integer ``x``."""

    def codegen(context, builder, signature, args):
        value, width = args[0], args[0].type.width
        if width > 32:
            value = builder.trunc(value, ir.IntType(32))
        elif width < 32:
            value = builder.zext(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(x), codegen


@_helper
def _bf16_load(bits):
    return _float_of(np.uint32(bits) << 16)


@_helper
def _bf16_round(x, noise):
    """bfloat16 pattern of float32 ``x``: nearest even when ``noise`` < 0, else stochastic
    with the 16-bit ``noise``."""
    b = np.int64(_bits_of(x))
    added = b + 0x7FFF + ((b >> 16) & 1) if noise < 0 else b + noise
    return np.uint16(0x7FC0) if x != x else np.uint16(added >> 16)


@_helper
def _random(seed, i):
    """:func:`adamkit.reference.lowbit.random_bits` (the low 32 bits of int64 products are
    those of the reference's uint64 ones)."""
    x = (i * 0x9E3779B1 + seed) & _MASK32
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & _MASK32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & _MASK32
    return x ^ (x >> 16)


@_helper
def _finite_magnitude_bits(x):
    b = np.int64(_bits_of(x)) & 0x7FFFFFFF
    return b if b < _FINITE_LIMIT else 0


@_helper
def _encode(r, mantissa_bits):
    bits = np.int64(_bits_of(r))
    shift = 23 - mantissa_bits
    normal = (bits - EXP_OFFSET + (1 << (shift - 1))) >> shift
    to_subnormal = _TO_SUBNORMAL3 if mantissa_bits == 3 else _TO_SUBNORMAL4
    subnormal = np.int64(np.int32(r * to_subnormal + np.float32(0.5)))
    code = normal if bits >= MIN_NORMAL_BITS else subnormal
    top = 15 << mantissa_bits
    return code if code < top else top


@_helper
def _quantized(x, inv, kind):
    """The code of ``x`` in a block whose scale's inverse is ``inv``."""
    y = np.float32(math.sqrt(x)) if kind == SQUARE else x
    magnitude = abs(y)
    r = magnitude * inv
    code = _encode(r, 3 if kind == SIGNED else 4)
    if kind != SIGNED and code == 0 and r > 0:
        code = 1  # a denominator never reads back as 0
    if magnitude == np.inf:
        code = _INF_S if kind == SIGNED else _INF_U
    if y != y:
        code = _NAN_S if kind == SIGNED else _NAN_U
    if kind == SIGNED and (_bits_of(y) >> 31) != 0:
        code |= 0x80
    return np.uint8(code)


@_helper
def _dequantized(code, scale, kind):
    c = np.int64(code)
    magnitude = c & 0x7F if kind == SIGNED else c
    mantissa_bits = 3 if kind == SIGNED else 4
    top = _TOP_S if kind == SIGNED else _TOP_U
    m = magnitude if magnitude < top else top
    normal = _float_of((m << (23 - mantissa_bits)) + EXP_OFFSET)
    subnormal = np.float32(m) * (_FROM_SUBNORMAL3 if mantissa_bits == 3 else _FROM_SUBNORMAL4)
    value = (normal if m >= (1 << mantissa_bits) else subnormal) * scale
    if magnitude == (_INF_S if kind == SIGNED else _INF_U):
        value = np.float32(np.inf)
    if magnitude == (_NAN_S if kind == SIGNED else _NAN_U):
        value = np.float32(np.nan)
    if kind == SIGNED and (c & 0x80) != 0:
        value = -value
    if kind == SQUARE:
        value = value * value
    return value


@_helper
def _scale_of(magnitude_bits, kind):
    """A block's absmax from the largest finite magnitude's pattern (of v for SQUARE, whose
    blocks are scaled by max √v = √max v)."""
    largest = _float_of(magnitude_bits)
    return np.float32(math.sqrt(largest)) if kind == SQUARE else largest


@_helper
def _inverse(scale):
    return np.float32(1) / scale if scale > 0 else np.float32(0)


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
    f = (flags[0] != 0, flags[1] != 0, flags[2] != 0, flags[3] != 0)
    table = _tensor_table(tensor_scalars, addresses, b, _F32, STEP, AUX)
    seeds = np.empty(addresses.shape[0], np.int64)
    for t in range(addresses.shape[0]):
        seeds[t] = _tensor_seed(_float64_cell(addresses[t, STEP])[0], numels[t])
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
            largest0, largest1 = 0, 0
            for j in range(hi - lo):
                if param_mode == PARAM_FLOAT32:
                    p, g = p32b[j], g32b[j]
                else:
                    p, g = _bf16_load(p16b[j]), _bf16_load(g16b[j])
                    if param_mode == PARAM_KAHAN:
                        p = p + _bf16_load(compb[j])
                if precision == Q8:
                    s0 = _dequantized(codes0b[j], scale0, kind0)
                    s1 = _dequantized(codes1b[j], scale1, kind1)
                else:
                    s0, s1 = _bf16_load(half0b[j]), _bf16_load(half1b[j])
                new_p, x0, x1, _ = element(p, g, s0, s1, g, h, k, f)
                if param_mode == PARAM_FLOAT32:
                    p32b[j] = new_p
                elif param_mode == PARAM_NEAREST:
                    p16b[j] = _bf16_round(new_p, -1)
                elif param_mode == PARAM_STOCHASTIC:
                    p16b[j] = _bf16_round(new_p, _random(seed ^ PARAM_STREAM, lo + j) & 0xFFFF)
                else:
                    rounded = _bf16_round(new_p, -1)
                    p16b[j] = rounded
                    compb[j] = _bf16_round(new_p - _bf16_load(rounded), -1)
                if precision == Q8:
                    buffer0[j], buffer1[j] = x0, x1
                    largest0 = max(largest0, _finite_magnitude_bits(x0))
                    largest1 = max(largest1, _finite_magnitude_bits(x1))
                else:
                    noise = _random(seed, lo + j)
                    half0b[j] = _bf16_round(x0, noise & 0xFFFF)
                    half1b[j] = _bf16_round(x1, noise >> 16)
            if precision == Q8:
                new_scale0, new_scale1 = _scale_of(largest0, kind0), _scale_of(largest1, kind1)
                scales0[blk], scales1[blk] = new_scale0, new_scale1
                inv0, inv1 = _inverse(new_scale0), _inverse(new_scale1)
                for j in range(hi - lo):
                    codes0b[j] = _quantized(buffer0[j], inv0, kind0)
                    codes1b[j] = _quantized(buffer1[j], inv1, kind1)


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
