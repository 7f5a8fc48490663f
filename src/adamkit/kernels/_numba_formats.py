"""The low-memory kernel's load/store adapters (:mod:`adamkit.kernels._numba_lowbit`): each
slot's format (8-bit codes and their block scale, bfloat16 rounded stochastically, toward zero
or to nearest, float16 or float32), the param's storage (float32, or bfloat16/float16 patterns
with Kahan's compensation beside them), the literals that name them in a cell, and a tensor's
views and blocks as the element loop reads them. The bit arithmetic itself is
:mod:`adamkit.kernels._numba_bits`'.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..algorithms.state_formats import BLOCK, MIN_NORMAL_BITS, MIN_SCALE
from ._numba_bits import (
    DECODE_UNIT,
    TOP_SIGNED,
    TOP_UNSIGNED,
    bf16_load,
    bf16_nearest,
    bf16_stochastic_low,
    decoded_finite_signed,
    decoded_finite_unsigned,
    decoded_signed,
    decoded_unsigned,
    encoded_normal_signed,
    encoded_normal_unsigned,
    encoded_signed,
    encoded_unsigned,
    f16_load,
    f16_nearest,
    f16_stochastic,
    finite_magnitude_bits,
    float_of,
    random_bits_after,
)
from ._numba_cpu import _view

_inline = numba.njit(inline="always", error_model="numpy")
# Small helpers are compiled once each and inlined by LLVM, not numba: numba's own inlining of
# them into every specialisation made the loops take minutes to compile.
_helper = numba.njit(error_model="numpy")

# Literals of a cell: each slot's format (a load/store adapter: 8-bit codes, bfloat16 with
# stochastic rounding or rounded toward zero, the low-memory precisions; or the tensor's own
# dtype stored to nearest, the "fp32" precision: float32, bfloat16 or float16 state; ABSENT: a
# slot the cell does not store, whose element input is the grad, as in the fp32 driver), the
# param's storage and rounding (a float16 param's mode is a bfloat16 one plus PARAM_F16), each
# slot's kind, and the pass before the update (the spec's reduction_mode).
Q8, BF16, FP32, BF16_NEAREST, FP16_NEAREST, BF16_DOWN, ABSENT = range(7)
PARAM_FLOAT32, PARAM_NEAREST, PARAM_STOCHASTIC, PARAM_KAHAN, PARAM_F16 = 0, 1, 2, 3, 4
SIGNED, SQUARE, UNSIGNED = 0, 1, 2
KIND_CODES = {"signed": SIGNED, "square": SQUARE, "unsigned": UNSIGNED}
_FORMAT_NAMES = {
    Q8: "q8", BF16: "bf16", FP32: "fp32", BF16_NEAREST: "bf16n", FP16_NEAREST: "fp16n",
    BF16_DOWN: "bf16d", ABSENT: "no",
}  # fmt: skip
_HALF_BF16, _HALF_F16 = 0, 1

# Address rows: p, g, s0, s1, s2 (codes, bfloat16/float16 patterns or float32; an absent
# slot's is the grad's), the slots' block scales (float32; the param's address but with 8-bit
# codes), Kahan's compensation (the param's address without it), the float64 step counter,
# the float32 scalar state (the step's address without one); then not an address: the
# tensor's random stream (tensor_seed).
P, G, S0, S1, S2, A0, A1, A2, KAHAN, STEP, AUX, STREAM = range(12)

_F32 = np.empty(0, np.float32)
_U16 = np.empty(0, np.uint16)
_U8 = np.empty(0, np.uint8)


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
def _decoded_finite(code, scaled, kind):
    if kind == SIGNED:
        return decoded_finite_signed(code, scaled)
    value = decoded_finite_unsigned(code, scaled)
    return value * value if kind == SQUARE else value


@_helper
def _encoded_normal(stored, inverse, noise, kind):
    if kind == SIGNED:
        return encoded_normal_signed(stored, inverse, noise)
    return encoded_normal_unsigned(stored, inverse, noise)


@_helper
def _inverse(scale):
    # a block below float32's smallest normal flushes to 0: its 1/scale would be Inf
    return np.float32(1) / scale if scale >= np.float32(MIN_SCALE) else np.float32(0)


# --- one block's 8-bit slots. Most blocks hold only numbers whose codes are normal, and take
# the closed forms; a block with a special code or value, or with a value whose code is
# subnormal, takes the exact codec (the same bits either way: tests/kernels).
@_inline
def _decode_block(codes, scale, kind, out):
    """``out[j]``: the value of ``codes[j]`` in a block of ``scale``."""
    largest = 0
    for j in range(codes.size):  # the largest magnitude code: a number, or not
        largest = max(largest, codes[j] & 0x7F if kind == SIGNED else codes[j])
    scaled = scale * np.float32(DECODE_UNIT)  # (a scale is >= 0, unless state was edited)
    finite = np.float32(0) <= scaled and scaled < np.inf
    if largest <= (TOP_SIGNED if kind == SIGNED else TOP_UNSIGNED) and finite:
        for j in range(codes.size):
            out[j] = _decoded_finite(codes[j], scaled, kind)
    else:
        for j in range(codes.size):
            out[j] = _decoded(codes[j], scale, kind)


@_helper
def _block_scale(values, top):
    """The largest finite magnitude of ``values`` whose largest magnitude pattern is ``top``
    (a NaN's above +Inf's): ``top`` itself unless the block holds a NaN or ±Inf."""
    if top < np.uint32(0x7F800000):
        return float_of(top)
    largest = np.uint32(0)
    for j in range(values.size):
        largest = max(largest, finite_magnitude_bits(values[j]))
    return float_of(largest)


@_helper
def _all_normal(top, bottom, inverse):
    """Whether every magnitude of a block (patterns between ``bottom`` and ``top``) is
    finite and at least 2^-14 of the block's scale once times ``inverse`` (a product
    monotonic in the magnitude: the smallest one's decides)."""
    smallest = float_of(bottom) * inverse
    return top < np.uint32(0x7F800000) and smallest >= float_of(np.uint32(MIN_NORMAL_BITS))


@_inline
def _encode_block(
    fmt0, fmt1, fmt2, kind0, kind1, kind2, values0, values1, values2, codes0, codes1, codes2,
    inverse0, inverse1, inverse2, normal, base, count,
):  # fmt: skip
    """The codes of a block's 8-bit slots, rounded stochastically as bf16 is (slots 0 and 2
    with the low 16 bits of an element's draw, slot 1 the high)."""
    if normal:
        for j in range(count):
            noise = random_bits_after(base, j)
            if fmt0 == Q8:
                codes0[j] = _encoded_normal(values0[j], inverse0, noise, kind0)
            if fmt1 == Q8:
                codes1[j] = _encoded_normal(values1[j], inverse1, noise >> np.uint32(16), kind1)
            if fmt2 == Q8:
                codes2[j] = _encoded_normal(values2[j], inverse2, noise, kind2)
    else:
        for j in range(count):
            noise = random_bits_after(base, j)
            if fmt0 == Q8:
                codes0[j] = _encoded(values0[j], inverse0, noise, kind0)
            if fmt1 == Q8:
                codes1[j] = _encoded(values1[j], inverse1, noise >> np.uint32(16), kind1)
            if fmt2 == Q8:
                codes2[j] = _encoded(values2[j], inverse2, noise, kind2)


# A half-precision pattern (a param, its grad, Kahan's compensation, a moment) loaded and
# stored: ``half`` (a literal) says bfloat16 or float16.
@_helper
def _half_load(bits, half):
    return f16_load(bits) if half == _HALF_F16 else bf16_load(bits)


@_helper
def _half_nearest(x, half):
    return f16_nearest(x) if half == _HALF_F16 else bf16_nearest(x)


@_helper
def _half_stochastic(x, noise, half):
    return f16_stochastic(x, noise) if half == _HALF_F16 else bf16_stochastic_low(x, noise)


# --- one slot, by its format (a literal): views of its memory, its block decoded into the
# block buffer (8-bit codes), an element loaded and stored.
@_inline
def _slot_views(row, column, scales_column, n, blocks):
    address = row[column]
    return (
        _view(address, 0, n, _U8), _view(address, 0, n, _U16), _view(address, 0, n, _F32),
        _view(row[scales_column], 0, blocks, _F32),
    )  # fmt: skip


@_inline
def _decode_slot(fmt, kind, views, blk, lo, hi, buffer):
    if fmt == Q8:
        _decode_block(views[0][lo:hi], views[3][blk], kind, buffer)


@_inline
def _slot_in(fmt, buffer, bits, full, g, j):
    if fmt == Q8:
        return buffer[j]
    if fmt == FP32:
        return full[j]
    if fmt == FP16_NEAREST:
        return f16_load(bits[j])
    if fmt == ABSENT:
        return g
    return bf16_load(bits[j])


@_inline
def _slot_out(fmt, x, noise, bits, full, j):
    """Store ``x`` in a slot of a format other than 8-bit codes (an 8-bit slot's value goes
    to the block buffer, stored in :func:`_blocks` itself: see there)."""
    if fmt == BF16:
        bits[j] = bf16_stochastic_low(x, noise)
    elif fmt == BF16_DOWN:
        bits[j] = bf16_stochastic_low(x, np.uint32(0))
    elif fmt == FP32:
        full[j] = x
    elif fmt == FP16_NEAREST:
        bits[j] = f16_nearest(x)
    elif fmt == BF16_NEAREST:
        bits[j] = bf16_nearest(x)


@_inline
def _slot_scale(fmt, top, bottom, buffer, count, views, blk):
    """An 8-bit slot's new block scale, stored: (1/scale, whether every code is normal)."""
    if fmt == Q8:
        scale = _block_scale(buffer[:count], top)
        views[3][blk] = scale
        inverse = _inverse(scale)
        return inverse, _all_normal(top, bottom, inverse)
    return np.float32(0), True


# --- the param and its grad: float32, or bfloat16/float16 patterns (``half``), with Kahan's
# compensation beside a half param (views: p and g as float32, p and g as patterns, the
# compensation)
@_inline
def _param_views(row, n):
    return (
        _view(row[P], 0, n, _F32), _view(row[G], 0, n, _F32), _view(row[P], 0, n, _U16),
        _view(row[G], 0, n, _U16), _view(row[KAHAN], 0, n, _U16),
    )  # fmt: skip


@_inline
def _block_of(views, lo, hi):
    """The views of elements lo..hi, indexed from 0: an index numba knows is >= 0 needs no
    wraparound check, and only then does LLVM vectorize the loop (20x here)."""
    return views[0][lo:hi], views[1][lo:hi], views[2][lo:hi], views[3][lo:hi], views[4][lo:hi]


@_inline
def _tensor_views(row, n):
    """A tensor's param views and each slot's views (:func:`_slot_views`)."""
    blocks = (n + BLOCK - 1) // BLOCK
    return (
        _param_views(row, n),
        _slot_views(row, S0, A0, n, blocks),
        _slot_views(row, S1, A1, n, blocks),
        _slot_views(row, S2, A2, n, blocks),
    )


@_inline
def _block_inputs(
    fmt0, fmt1, fmt2, kind0, kind1, kind2, params, views0, views1, views2,
    buffer0, buffer1, buffer2, blk, lo, hi,
):  # fmt: skip
    """Block ``blk`` (elements lo..hi) as the element loop reads it: its param views, each
    slot's bfloat16 patterns and full-precision values, its 8-bit codes decoded into
    ``buffer*``."""
    _decode_slot(fmt0, kind0, views0, blk, lo, hi, buffer0)
    _decode_slot(fmt1, kind1, views1, blk, lo, hi, buffer1)
    _decode_slot(fmt2, kind2, views2, blk, lo, hi, buffer2)
    return (
        _block_of(params, lo, hi),
        views0[1][lo:hi], views1[1][lo:hi], views2[1][lo:hi],
        views0[2][lo:hi], views1[2][lo:hi], views2[2][lo:hi],
    )  # fmt: skip


@_inline
def _kept(keep, f):
    """The flags ``f`` as the element reads them: a flag that switches on a slot the cell
    does not store (AMSGrad's, without its max) reads False, a literal (so its branch of the
    element is compiled out; the group's flag is False then too: :func:`lowbit._row`)."""
    return (keep[0] and f[0], keep[1] and f[1], keep[2] and f[2], keep[3] and f[3])
