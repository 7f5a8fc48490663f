r"""Low-memory state formats in NumPy: the oracle for adamkit's 8-bit and bfloat16 state.

**8-bit block-wise** (``state_precision="8bit"``): a state tensor is cut into blocks of
:data:`BLOCK` = 256 elements in its logical (row-major) order. Each block stores one float32
scale ``absmax`` (the largest finite magnitude in the block) and one byte per element: a
small floating-point number ``r = |x| / absmax`` in [0, 1], as in FP8 but with the block's
scale. Three kinds of slot:

* ``"signed"`` (Adam's m, ``exp_avg``): sign bit + e4m3 (4 exponent bits, 3 mantissa bits);
  relative error at most 1/16 over 2^-17..1 of the block's absmax, smaller values flush to 0.
* ``"square"`` (v, ``exp_avg_sq``/``max_exp_avg_sq``): the block stores √v, unsigned e4m4
  (relative error 1/32 on √v over 2^-18..1, so over 36 binary orders of magnitude of v).
* ``"unsigned"`` (Adamax's ``exp_inf``): as ``"square"`` but without the square root.

Codes for v and u round a nonzero value that would flush to 0 up to the smallest code: both
are denominators, and a v read back as 0 under an m that is not would turn the step into
α·m̂/ε. A block's NaN and ±Inf elements get codes of their own (``NAN``/``INF``) and leave the
block's scale to its finite values, so a non-finite element does not wipe its neighbours.

The code ↔ number maps are closed forms on the float32 bit pattern (see :func:`encode` and
:func:`decode`): no table search, so the fused kernels quantize in registers.

The optimizers' steps quantize with **stochastic rounding** (``noise``: 16 random bits per
element, m taking the low half of :func:`random_bits`, v the high half, as in bfloat16 mode):
rounded to nearest, a moving average whose per-step change is under half a code (v with
β2 = 0.999 changes by ≤ 0.1% a step) would stay where it is, and v then lags far behind
its true value (measured on a transformer: 15-45% low after 600 steps, so steps 10-40% too
large). Stochastic rounding is unbiased, so the stored average tracks the true one. Without
``noise`` (loading a checkpoint) the rounding is to nearest.

**bfloat16** (``state_precision="bf16"``): the upper half of the float32 pattern, stored with
stochastic rounding: a uniform 16-bit random number is added to the lower half before it is
dropped, so the stored value is unbiased (E[stored] = x). The random numbers come from a
counter-based hash (:func:`random_bits`) of the step and the element's index, so a resumed run
draws the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np

from ..algorithms.state_formats import (
    BLOCK,
    EXP_OFFSET,
    INF,
    KINDS,
    MANTISSA_BITS,
    MIN_NORMAL_BITS,
    MIN_SCALE,
    NAN,
    NEAREST,
    SIGN,
    TOP,
    tensor_seed,
)

__all__ = ["BLOCK", "KINDS", "bf16_bits", "bf16_value", "decode", "dequantize", "encode"]
__all__ += ["NEAREST", "quantize", "random_bits", "tensor_seed"]

_U32 = 0xFFFFFFFF


def encode(r: np.ndarray, mantissa_bits: int, noise: np.ndarray | int = NEAREST) -> np.ndarray:
    """Codes (int64) of float32 ``r`` in [0, 1]: a minifloat with ``mantissa_bits`` bits
    (exponent bias 15, 1.0 the top code), rounded up when the dropped fraction of a code plus
    ``noise``/2^16 reaches 1: to nearest with :data:`NEAREST`, stochastically with uniform
    16-bit noise."""
    r = np.asarray(r, dtype=np.float32)
    noise = np.asarray(noise, dtype=np.int64) & 0xFFFF
    bits = r.view(np.uint32).astype(np.int64)
    shift = 23 - mantissa_bits
    normal = (bits - EXP_OFFSET + (noise << (shift - 16))) >> shift
    fraction = (noise.astype(np.float32) * np.float32(2.0**-16)).astype(np.float32)
    subnormal = (r * np.float32(2.0 ** (14 + mantissa_bits)) + fraction).astype(np.int64)
    code = np.where(bits >= MIN_NORMAL_BITS, normal, subnormal)
    return np.minimum(code, 15 << mantissa_bits)


def decode(code: np.ndarray, mantissa_bits: int) -> np.ndarray:
    """float32 values in [0, 1] of magnitude codes 0..TOP (the inverse of :func:`encode` on
    the codes)."""
    code = np.asarray(code, dtype=np.int64)
    normal = ((code << (23 - mantissa_bits)) + EXP_OFFSET).astype(np.uint32).view(np.float32)
    subnormal = code.astype(np.float32) * np.float32(2.0 ** -(14 + mantissa_bits))
    return np.where(code >= (1 << mantissa_bits), normal, subnormal).astype(np.float32)


def _blocks(x: np.ndarray) -> np.ndarray:
    """float32 ``x`` flattened and zero-padded to whole blocks, shape (blocks, BLOCK)."""
    flat = np.asarray(x, dtype=np.float32).reshape(-1)
    padded = np.zeros(-(-flat.size // BLOCK) * BLOCK, dtype=np.float32)
    padded[: flat.size] = flat
    return padded.reshape(-1, BLOCK)


def quantize(
    x: np.ndarray, kind: str, noise: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(codes uint8 shaped like ``x``, absmax float32 per block) of float32 ``x``; rounded to
    nearest, or stochastically with ``noise`` (16 bits per element, shaped like ``x``)."""
    m = MANTISSA_BITS[kind]
    blocks = _blocks(x)
    add: np.ndarray | int = NEAREST
    if noise is not None:  # padded like x (the padding is never stored)
        add = np.zeros(blocks.size, dtype=np.int64)
        add[: np.asarray(x).size] = np.asarray(noise, dtype=np.int64).reshape(-1) & 0xFFFF
        add = add.reshape(blocks.shape)
    stored = np.sqrt(blocks) if kind == "square" else blocks
    magnitude = np.abs(stored)
    finite = np.isfinite(stored)
    absmax = np.where(finite, magnitude, np.float32(0)).max(axis=1).astype(np.float32)
    with np.errstate(divide="ignore"):
        inv = np.where(absmax >= MIN_SCALE, np.float32(1) / absmax, np.float32(0))
    inv = inv.astype(np.float32)
    r = np.where(finite, magnitude * inv[:, None], np.float32(0)).astype(np.float32)
    code = encode(r, m, add)
    if kind != "signed":  # a denominator: a nonzero value never reads back as 0
        code = np.where((code == 0) & (r > 0), 1, code)
    code = np.where(np.isinf(stored), INF[kind], code)
    code = np.where(np.isnan(stored), NAN[kind], code)
    if kind == "signed":
        code = np.where(np.signbit(stored), code | SIGN, code)
    codes = code.reshape(-1)[: np.asarray(x).size].astype(np.uint8)
    return codes.reshape(np.shape(x)), absmax


def dequantize(codes: np.ndarray, absmax: np.ndarray, kind: str) -> np.ndarray:
    """float32 values of ``codes`` (uint8) with block scales ``absmax``."""
    m = MANTISSA_BITS[kind]
    flat = np.asarray(codes).reshape(-1).astype(np.int64)
    magnitude = flat & 0x7F if kind == "signed" else flat
    scale = np.repeat(np.asarray(absmax, dtype=np.float32), BLOCK)[: flat.size]
    value = decode(np.minimum(magnitude, TOP[kind]), m) * scale
    value = np.where(magnitude == INF[kind], np.float32(np.inf), value)
    value = np.where(magnitude == NAN[kind], np.float32(np.nan), value)
    if kind == "signed":
        value = np.where(flat & SIGN, -value, value)
    elif kind == "square":
        value = value * value
    return value.astype(np.float32).reshape(np.shape(codes))


def random_bits(seed: int, index: np.ndarray) -> np.ndarray:
    """32 uniform random bits per element ``index`` (uint32): murmur3's finalizer of
    ``index·φ + seed``. Counter-based, so any element's number is known without the others."""
    x = (np.asarray(index, dtype=np.uint64) * 0x9E3779B1 + seed) & _U32
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & _U32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & _U32
    x ^= x >> 16
    return x.astype(np.uint32)


def bf16_bits(x: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
    """The bfloat16 patterns (uint16) of float32 ``x``: stochastic rounding with the 16-bit
    ``noise`` (uniform in 0..65535), or round to nearest even (torch's) without it."""
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32).astype(np.int64)
    if noise is None:
        added = bits + 0x7FFF + ((bits >> 16) & 1)
    else:
        added = bits + (np.asarray(noise, dtype=np.int64) & 0xFFFF)
    return np.where(np.isnan(x), 0x7FC0, added >> 16).astype(np.uint16)


def bf16_value(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 patterns ``bits`` (uint16)."""
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)
