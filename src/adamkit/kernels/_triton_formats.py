"""The low-memory formats as Triton functions of one block's elements: 8-bit codes decoded and
encoded, bfloat16 and float16 patterns loaded and rounded (to nearest, stochastically), the
random draws, the one NaN the kernels store. Each is :mod:`adamkit.reference.lowbit`'s (and
torch's conversions) bit for bit, as integer arithmetic on float32 patterns, as the CPU
kernel's :mod:`adamkit.kernels._numba_bits` is; the Triton low-memory kernel
(:mod:`adamkit.kernels.triton_lowbit`) composes them."""

from __future__ import annotations

import triton
import triton.language as tl

from ..algorithms.state_formats import EXP_OFFSET, MIN_NORMAL_BITS

HALF_BF16, HALF_F16 = 0, 1  # a half pattern's dtype, the functions' HALF literal
_EXP: tl.constexpr = tl.constexpr(EXP_OFFSET)
_MIN_NORMAL: tl.constexpr = tl.constexpr(MIN_NORMAL_BITS)
_F16: tl.constexpr = tl.constexpr(HALF_F16)


@triton.jit
def decode(code, scale, MANTISSA: tl.constexpr, SIGNED_CODE: tl.constexpr,
           TOP_CODE: tl.constexpr, INF_CODE: tl.constexpr, NAN_CODE: tl.constexpr):  # fmt: skip
    c = code.to(tl.int32)
    if SIGNED_CODE:
        magnitude = c & 0x7F
    else:
        magnitude = c
    m = tl.minimum(magnitude, TOP_CODE)
    normal = ((m << (23 - MANTISSA)) + _EXP).to(tl.float32, bitcast=True)
    subnormal = m.to(tl.float32) * (1.0 / (1 << (14 + MANTISSA)))
    value = tl.where(m >= (1 << MANTISSA), normal, subnormal) * scale
    value = tl.where(magnitude == INF_CODE, float("inf"), value)
    value = tl.where(magnitude == NAN_CODE, float("nan"), value)
    if SIGNED_CODE:
        value = tl.where((c & 0x80) != 0, -value, value)
    return value


@triton.jit
def encode(y, inverse, noise, MANTISSA: tl.constexpr, SIGNED_CODE: tl.constexpr,
           TOP_CODE: tl.constexpr, INF_CODE: tl.constexpr, NAN_CODE: tl.constexpr):  # fmt: skip
    y_bits = y.to(tl.int32, bitcast=True)
    magnitude_bits = y_bits & 0x7FFFFFFF
    r = magnitude_bits.to(tl.float32, bitcast=True) * inverse
    r_bits = r.to(tl.int32, bitcast=True)
    noise16 = (noise & 0xFFFF).to(tl.int32)  # 0x8000 rounds to nearest
    normal = (r_bits - _EXP + (noise16 << (7 - MANTISSA))) >> (23 - MANTISSA)
    fraction = noise16.to(tl.float32) * (1.0 / 65536.0)
    subnormal = (r * float(1 << (14 + MANTISSA)) + fraction).to(tl.int32)
    code = tl.where(r_bits >= _MIN_NORMAL, normal, subnormal)
    code = tl.minimum(code, TOP_CODE)
    if not SIGNED_CODE:  # a denominator never reads back as 0
        code = tl.where((code == 0) & (r > 0), 1, code)
    code = tl.where(magnitude_bits == 0x7F800000, INF_CODE, code)
    code = tl.where(magnitude_bits > 0x7F800000, NAN_CODE, code)
    if SIGNED_CODE:
        code = tl.where(y_bits < 0, code | 0x80, code)
    return code.to(tl.uint8)


@triton.jit
def bf16_load(bits):
    return (bits.to(tl.uint32) << 16).to(tl.float32, bitcast=True)


@triton.jit
def bf16_round(x, noise, NEAREST: tl.constexpr):
    """bfloat16 pattern of float32 ``x``: nearest even, or stochastic with 16-bit ``noise``."""
    bits = x.to(tl.uint32, bitcast=True)
    if NEAREST:
        added = bits + 0x7FFF + ((bits >> 16) & 1)
    else:
        added = bits + (noise & 0xFFFF)
    return tl.where(x != x, 0x7FC0, added >> 16).to(tl.uint16)


@triton.jit
def f16_load(bits):
    return bits.to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def f16_nearest(x):
    """float16 pattern of float32 ``x``, to nearest even; 0x7E00 for NaN, as the CPU kernel
    stores the one NaN it keeps (CUDA's conversion gives 0x7FFF)."""
    bits = x.to(tl.float16).to(tl.uint16, bitcast=True)
    return tl.where(x != x, 0x7E00, bits).to(tl.uint16)


@triton.jit
def f16_stochastic(x, noise):
    """float16 pattern of float32 ``x``, stochastically with the low 16 bits of ``noise``:
    :func:`adamkit.kernels._numba_bits.f16_stochastic`, step for step (the neighbour above
    with probability (x - below)/(above - below); the neighbours' gap a power of two, so the
    comparison is scaled by 2^16/gap, exact from its pattern)."""
    near_bits = f16_nearest(x).to(tl.int32)
    near = f16_load(near_bits.to(tl.uint16))
    up = near < x
    negative = (near_bits & 0x8000) != 0
    other_bits = near_bits + tl.where(up != negative, 1, -1)
    other = f16_load(other_bits.to(tl.uint16))
    below = tl.where(up, near, other)
    gap_bits = (other - near).to(tl.uint32, bitcast=True) & 0x7FFFFFFF
    draw = (noise & 0xFFFF).to(tl.float32)
    scale = (0x87000000 - gap_bits).to(tl.float32, bitcast=True)
    take_above = draw + 0.5 < (x - below) * scale
    rounded = tl.where(take_above == up, other_bits, near_bits)
    exact = (near == x) | (gap_bits >= 0x7F800000)  # x itself, or no finite neighbour
    return tl.where(exact, near_bits, rounded).to(tl.uint16)


@triton.jit
def half_load(bits, HALF: tl.constexpr):
    if HALF == _F16:
        value = f16_load(bits)
    else:
        value = bf16_load(bits)
    return value


@triton.jit
def half_nearest(x, HALF: tl.constexpr):
    if HALF == _F16:
        bits = f16_nearest(x)
    else:
        bits = bf16_round(x, 0, True)
    return bits


@triton.jit
def one_nan(x):
    """``x``, or the positive quiet NaN (0x7FC00000) for any NaN: the CPU kernel stores one
    NaN (:func:`adamkit.kernels._numba_lowbit._one_nan`), and this kernel equals it bit for
    bit."""
    return tl.where(x != x, float("nan"), x)


@triton.jit
def random_bits(seed, index):
    """:func:`adamkit.reference.lowbit.random_bits`, modulo 2^32 in uint32 lanes."""
    x = index.to(tl.uint32) * 0x9E3779B1 + seed.to(tl.uint32)
    x ^= x >> 16
    x = x * 0x85EBCA6B
    x ^= x >> 13
    x = x * 0xC2B2AE35
    return x ^ (x >> 16)
