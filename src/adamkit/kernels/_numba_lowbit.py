"""The fused CPU kernel for low-memory state: any spec, one pass per block.

Per block of 256 elements, in registers and block-sized buffers: load the param and its grad
(float32, or bfloat16/float16 patterns read in place), decode the stored slots, run the spec's
own ``element`` in float32 (the same compiled element as the fp32 driver,
:mod:`adamkit.kernels._numba_driver`), store the param (float32, or bfloat16/float16 rounded to
nearest, stochastically, or with Kahan's compensation), and store the slots. Each slot's
format is a load/store adapter, a literal of the cell: 8-bit codes × the block's scale (stored
after the block's new absmax is known: a second pass over the block's buffer, still in L1),
bfloat16 with stochastic rounding (the low-memory precisions; rounded toward zero for the
running max :data:`~adamkit.algorithms.state_formats.ROUNDED_DOWN` keeps), or torch's format,
the "fp32" precision: plain float32, or the half param's own dtype (bfloat16/float16) stored to
nearest, as torch's ``copy_`` stores the float32 result of the fp32 kernel on float32 copies
(so a half param with torch-format state is stepped in place, with the same bits, and no
copies). The slots of one tensor need not share a format (with AMSGrad's max, 8-bit state
keeps v and the max in bf16: :func:`~adamkit.algorithms.state_formats.slot_precision`).
Blocks are independent, so threads take whole blocks.

A cell with a pass before the update (the spec's ``reduction``, StableAdamW's RMS, or the
count of the cautious mask) runs that pass over the same blocks first, decoding them but
storing nothing: each block's terms are summed in float64 by a function of their own (the
element's arithmetic is not reassociated, so the terms are the torch-ops path's), the threads'
partial sums added in a fixed order between two parallel regions, as the fp32 driver does.

The formats are :mod:`adamkit.reference.lowbit`'s (and torch's conversions), bit for bit:
integer arithmetic on float32 patterns, written as 32-bit LLVM IR in
:mod:`adamkit.kernels._numba_bits` (numba's own integers are 64-bit, which halved the vector
width and tripled the step's time). The entry points are generated per spec, slot formats,
param storage and pass before the update (:mod:`adamkit.kernels._numba_codegen`), each
compiled the first time a run needs it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numba
import numpy as np

from ..algorithms import SPECS, AlgorithmSpec
from ..algorithms._spec import (
    CAUTIOUS_COUNT,
    CAUTIOUS_FLAG,
    FLAG_WIDTH,
    NO_REDUCTION,
    TENSOR_SLOTS,
)
from ..algorithms.state_formats import (
    BLOCK,
    MIN_NORMAL_BITS,
    MIN_SCALE,
    PARAM_STREAM,
    SLOT_KINDS,
    tensor_seed,
)
from . import _numba_cache, _numba_codegen
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
    magnitude_bits,
    random_base,
    random_bits_after,
)
from ._numba_cpu import _OPTIONS, _block_total, _float64_cell, _view
from ._numba_driver import (
    _advance,
    _finish,
    _parallel_totals,
    _row,
    _scalars,
    _tensor_table,
    spec_functions,
)

_numba_cache.install()
_jit = numba.njit(**_OPTIONS)
_jit_parallel = numba.njit(parallel=True, **_OPTIONS)
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


_tensor_seed = _helper(tensor_seed)  # int64 products wrap: their low 32 bits are exact
_QUIET_NAN = np.float32(np.nan)  # 0x7FC00000


@_inline
def _one_nan(x):
    """``x``, or the positive quiet NaN for any NaN. Where two NaNs meet in an operation, x86
    returns the first operand's, and which operand is first is LLVM's choice: it differs
    between a cell's own entry point and the copy inlined into its parallel one, so without
    this a NaN's sign would depend on which of them ran (on numba's cache)."""
    return x if x == x else _QUIET_NAN


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
def _bias(bias):
    return (bias[0], bias[1], bias[2], bias[3], bias[4], bias[5], bias[6], bias[7])


@_inline
def _kept(keep, f):
    """The flags ``f`` as the element reads them: a flag that switches on a slot the cell
    does not store (AMSGrad's, without its max) reads False, a literal (so its branch of the
    element is compiled out; the group's flag is False then too: :func:`lowbit._row`)."""
    return (keep[0] and f[0], keep[1] and f[1], keep[2] and f[2], keep[3] and f[3])


@_inline
def _block_sums(
    element, reduction, cautious, keep, kind0, kind1, kind2, fmt0, fmt1, fmt2, param_mode,
    half, chunks, addresses, numels, h, table, f, totals,
):  # fmt: skip
    """The pass before the update over chunk rows (tensor, first block, end block): each
    tensor's sum of the spec's reduction term, or (``cautious``) the count of its mask, and
    its element count, added to its row of ``totals``. Nothing is stored."""
    f = _kept(keep, f)
    buffer0 = np.empty(BLOCK, np.float32)
    buffer1 = np.empty(BLOCK, np.float32)
    buffer2 = np.empty(BLOCK, np.float32)
    terms = np.empty(BLOCK, np.float32)
    for c in range(chunks.shape[0]):
        t, first, end = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        n, row = numels[t], addresses[t]
        k = _row(table, t)
        params, views0, views1, views2 = _tensor_views(row, n)
        for blk in range(first, end):
            lo = blk * BLOCK
            hi = min(lo + BLOCK, n)
            param, bits0, bits1, bits2, full0, full1, full2 = _block_inputs(
                fmt0, fmt1, fmt2, kind0, kind1, kind2, params, views0, views1, views2,
                buffer0, buffer1, buffer2, blk, lo, hi,
            )  # fmt: skip
            count = 0
            for j in range(hi - lo):
                if param_mode == PARAM_FLOAT32:
                    p, g = param[0][j], param[1][j]
                else:
                    p, g = _half_load(param[2][j], half), _half_load(param[3][j], half)
                    if param_mode == PARAM_KAHAN:
                        p = p + _half_load(param[4][j], half)
                s0 = _slot_in(fmt0, buffer0, bits0, full0, g, j)
                s1 = _slot_in(fmt1, buffer1, bits1, full1, g, j)
                s2 = _slot_in(fmt2, buffer2, bits2, full2, g, j)
                _, a, b, c2, _, u, g_seen = element(p, g, s0, s1, s2, h, k, f)
                if cautious:
                    count += u * g_seen > 0
                else:
                    terms[j] = reduction(g_seen, a, b, c2, h, k, f)
            if cautious:
                totals[t, 0] += count
            else:
                totals[t, 0] += _block_total(terms[: hi - lo])
            totals[t, 1] += hi - lo


@_inline
def _blocks(
    element, tensor_scalars, block_sums, reduce, keep, kind0, kind1, kind2, fmt0, fmt1, fmt2,
    param_mode, half, chunks, addresses, numels, hyper, bias, flags, totals,
):  # fmt: skip
    """The spec's update over chunk rows (tensor, first block, end block), each slot in its
    format ``fmt*`` and the param stored by ``param_mode`` (``half``: bfloat16 or float16),
    the counters advanced before. With a pass before the update (``reduce``), ``totals``
    holds each tensor's sum and count, or has no rows when this call sees every chunk and
    makes them itself (``block_sums``)."""
    b = _bias(bias)
    h, f = _scalars(hyper, flags)
    f = _kept(keep, f)
    table = _tensor_table(tensor_scalars, addresses, b, _F32, STEP, AUX)
    cautious = reduce == CAUTIOUS_COUNT
    if reduce != NO_REDUCTION:
        if totals.shape[0] == 0:
            totals = np.zeros((addresses.shape[0], 2))
            block_sums(chunks, addresses, numels, h, table, f, totals)
        _finish(table, totals, cautious)
    seeds = np.empty(addresses.shape[0], np.int64)
    for t in range(addresses.shape[0]):
        step = _float64_cell(addresses[t, STEP])[0]
        seeds[t] = _tensor_seed(step, numels[t], addresses[t, STREAM])
    buffer0 = np.empty(BLOCK, np.float32)
    buffer1 = np.empty(BLOCK, np.float32)
    buffer2 = np.empty(BLOCK, np.float32)
    any_q8 = fmt0 == Q8 or fmt1 == Q8 or fmt2 == Q8
    for c in range(chunks.shape[0]):
        t, first, end = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        n, row, seed = numels[t], addresses[t], seeds[t]
        k = _row(table, t)
        params, views0, views1, views2 = _tensor_views(row, n)
        for blk in range(first, end):
            lo = blk * BLOCK
            hi = min(lo + BLOCK, n)
            param, bits0, bits1, bits2, full0, full1, full2 = _block_inputs(
                fmt0, fmt1, fmt2, kind0, kind1, kind2, params, views0, views1, views2,
                buffer0, buffer1, buffer2, blk, lo, hi,
            )  # fmt: skip
            # the draws of the block's elements, counted on from its first's
            base, param_base = random_base(seed, lo), random_base(seed ^ PARAM_STREAM, lo)
            top0 = top1 = top2 = np.uint32(0)
            bottom0 = bottom1 = bottom2 = np.uint32(0xFFFFFFFF)
            for j in range(hi - lo):
                if param_mode == PARAM_FLOAT32:
                    p, g = param[0][j], param[1][j]
                else:
                    p, g = _half_load(param[2][j], half), _half_load(param[3][j], half)
                    if param_mode == PARAM_KAHAN:
                        p = p + _half_load(param[4][j], half)
                s0 = _slot_in(fmt0, buffer0, bits0, full0, g, j)
                s1 = _slot_in(fmt1, buffer1, bits1, full1, g, j)
                s2 = _slot_in(fmt2, buffer2, bits2, full2, g, j)
                new_p, x0, x1, x2, base_p, u, g_seen = element(p, g, s0, s1, s2, h, k, f)
                if cautious:  # k[4]: 1/max(mean(mask), floor); k[5]: 0
                    new_p = base_p - u * (k[4] if u * g_seen > 0 else k[5])
                new_p, x0, x1, x2 = _one_nan(new_p), _one_nan(x0), _one_nan(x1), _one_nan(x2)
                # (the stores in this function's body: LLVM vectorizes the loop only where
                # it sees them unconditional, which it does not through an inlined helper)
                if param_mode == PARAM_FLOAT32:
                    param[0][j] = new_p
                elif param_mode == PARAM_NEAREST:
                    param[2][j] = _half_nearest(new_p, half)
                elif param_mode == PARAM_STOCHASTIC:
                    param[2][j] = _half_stochastic(new_p, random_bits_after(param_base, j), half)
                else:
                    rounded = _half_nearest(new_p, half)
                    param[2][j] = rounded
                    param[4][j] = _half_nearest(new_p - _half_load(rounded, half), half)
                noise = random_bits_after(base, j)
                if fmt0 == Q8:
                    buffer0[j] = stored = _stored(x0, kind0)
                    size = magnitude_bits(stored)
                    top0, bottom0 = max(top0, size), min(bottom0, size)
                else:
                    _slot_out(fmt0, x0, noise, bits0, full0, j)
                if fmt1 == Q8:
                    buffer1[j] = stored = _stored(x1, kind1)
                    size = magnitude_bits(stored)
                    top1, bottom1 = max(top1, size), min(bottom1, size)
                else:
                    _slot_out(fmt1, x1, noise >> np.uint32(16), bits1, full1, j)
                if fmt2 == Q8:
                    buffer2[j] = stored = _stored(x2, kind2)
                    size = magnitude_bits(stored)
                    top2, bottom2 = max(top2, size), min(bottom2, size)
                else:
                    _slot_out(fmt2, x2, noise, bits2, full2, j)
            if any_q8:
                count = hi - lo
                inverse0, normal0 = _slot_scale(fmt0, top0, bottom0, buffer0, count, views0, blk)
                inverse1, normal1 = _slot_scale(fmt1, top1, bottom1, buffer1, count, views1, blk)
                inverse2, normal2 = _slot_scale(fmt2, top2, bottom2, buffer2, count, views2, blk)
                _encode_block(
                    fmt0, fmt1, fmt2, kind0, kind1, kind2, buffer0, buffer1, buffer2,
                    views0[0][lo:hi], views1[0][lo:hi], views2[0][lo:hi],
                    inverse0, inverse1, inverse2, normal0 and normal1 and normal2, base, count,
                )  # fmt: skip


@_jit
def _no_sums(chunks, addresses, numels, h, table, f, totals):
    """The pass before the update of a cell without one (never called)."""


# --- the entry points: generated per spec and cell (see _numba_codegen), never written out,
# each cell compiled the first time a run needs it. Literals: the spec's scalar state or not,
# its slots' kinds and formats, the param's mode and the pass before the update.
_SOURCE = """\
# adamkit's fused low-memory CPU loops of spec {name!r}, cell {cell} (the slots' formats, the
# param's storage, the pass before the update): generated by adamkit.kernels._numba_lowbit,
# do not edit. The driver sets the globals (its helpers, numba, np, STEP, AUX and the spec's
# ELEMENT, ADVANCE, SCALARS and REDUCTION).
# sources sha256 {digest}


@_jit
def {function}_main_{cell}(chunks, addresses, numels, hyper, bias, flags, totals):
    _blocks(
        ELEMENT, SCALARS, {sums}, {reduce}, {keep}, {kinds}, {formats}, {mode}, {half},
        chunks, addresses, numels, hyper, bias, flags, totals,
    )


@_jit
def {function}_blocks_{cell}(chunks, addresses, numels, hyper, bias, flags, advance):
    if advance:
        _advance(ADVANCE, addresses, _bias(bias), {has_aux}, STEP, AUX)
    {function}_main_{cell}(chunks, addresses, numels, hyper, bias, flags, np.zeros((0, 2)))


@_jit_parallel
def {function}_update_{cell}(chunks, bounds, addresses, numels, hyper, bias, flags, totals):
    for k in numba.prange(bounds.size - 1):
        part = chunks[bounds[k] : bounds[k + 1]]
        {function}_main_{cell}(part, addresses, numels, hyper, bias, flags, totals)
"""
_PLAIN_SOURCE = """\


@_jit
def {function}_parallel_{cell}(chunks, bounds, addresses, numels, hyper, bias, flags):
    _advance(ADVANCE, addresses, _bias(bias), {has_aux}, STEP, AUX)
    none = np.zeros((0, 2))
    {function}_update_{cell}(chunks, bounds, addresses, numels, hyper, bias, flags, none)
"""
# the pass before the update: each thread's partial sums, added in a fixed order, then the
# update (two parallel regions)
_REDUCING_SOURCE = """\


@_jit
def {function}_sum_{cell}(chunks, addresses, numels, h, table, f, totals):
    _block_sums(
        ELEMENT, REDUCTION, {cautious}, {keep}, {kinds}, {formats}, {mode}, {half},
        chunks, addresses, numels, h, table, f, totals,
    )


@_jit_parallel
def {function}_partial_{cell}(chunks, bounds, addresses, numels, h, table, f, partial):
    for k in numba.prange(bounds.size - 1):
        part = chunks[bounds[k] : bounds[k + 1]]
        {function}_sum_{cell}(part, addresses, numels, h, table, f, partial[k])


@_jit
def {function}_parallel_{cell}(chunks, bounds, addresses, numels, hyper, bias, flags):
    _advance(ADVANCE, addresses, _bias(bias), {has_aux}, STEP, AUX)
    totals = _parallel_totals(
        {function}_partial_{cell}, SCALARS, chunks, bounds, addresses, numels, _F32, STEP, AUX,
        hyper, bias, flags,
    )
    {function}_update_{cell}(chunks, bounds, addresses, numels, hyper, bias, flags, totals)
"""


def _namespace(spec: AlgorithmSpec) -> dict[str, Any]:
    """The globals of ``spec``'s generated entry points."""
    return {
        "_jit": _jit, "_jit_parallel": _jit_parallel, "_blocks": _blocks,
        "_block_sums": _block_sums, "_no_sums": _no_sums, "_advance": _advance, "_bias": _bias,
        "_parallel_totals": _parallel_totals, "_F32": _F32, "numba": numba, "np": np,
        "STEP": STEP, "AUX": AUX, **spec_functions(spec),
    }  # fmt: skip


# measured with an empty NUMBA_CACHE_DIR on a 2-core machine (docs/benchmarks.md)
COMPILE_ESTIMATE = "about 10-15 s"


def cell(
    spec: AlgorithmSpec, formats: tuple[int, ...], mode: int, reduce: int = NO_REDUCTION
) -> tuple[Any, Any]:
    """``spec``'s (serial, parallel) entry points for its slots in ``formats`` (one per
    driver slot, :data:`ABSENT` for one not stored), a param of ``mode`` and the pass before
    the update ``reduce`` (the spec's ``reduction_mode``):
    ``serial(chunks, addresses, numels, hyper, bias, flags, advance)`` and
    ``parallel(chunks, bounds, addresses, numels, hyper, bias, flags)``; generated and
    imported on first use, compiled (or loaded from numba's cache) at their first call."""
    function = _numba_codegen.identifier(spec)
    code = "_".join(_FORMAT_NAMES[f] for f in formats) + f"_p{mode}"
    code += f"_r{reduce}" if reduce != NO_REDUCTION else ""
    digest = _numba_codegen.sources_hash(spec)
    kinds = [KIND_CODES[SLOT_KINDS[key]] for key in spec.tensor_state]
    kinds += [SIGNED] * (TENSOR_SLOTS - len(kinds))
    # the flags that switch on a slot this cell does not store
    off = {flag for flag, fmt in zip(spec.slot_flags, formats, strict=False) if fmt == ABSENT} - {
        None
    }
    fields = {
        "name": spec.name, "cell": code, "digest": digest, "function": function,
        "has_aux": spec.scalar_state is not None, "reduce": reduce,
        "keep": tuple(i not in off for i in range(FLAG_WIDTH)),
        "cautious": reduce == CAUTIOUS_COUNT,
        "sums": "_no_sums" if reduce == NO_REDUCTION else f"{function}_sum_{code}",
        "kinds": ", ".join(map(str, kinds)), "formats": ", ".join(map(str, formats)),
        "mode": mode & ~PARAM_F16, "half": _HALF_F16 if mode & PARAM_F16 else _HALF_BF16,
    }  # fmt: skip
    tail = _PLAIN_SOURCE if reduce == NO_REDUCTION else _REDUCING_SOURCE
    source = (_SOURCE + tail).format(**fields)
    stem = f"blocks_{function}_{code}_{digest[:16]}"
    module = _numba_codegen.load(stem, source, lambda: _namespace(spec))
    entry_points = (
        getattr(module, f"{function}_blocks_{code}"),
        getattr(module, f"{function}_parallel_{code}"),
    )
    stored = set(formats) - {ABSENT}
    state = "8-bit" if Q8 in stored else "bf16" if {BF16, BF16_DOWN} & stored else "fp32"
    state = f"{state} state" if stored else "no state slot"
    _numba_codegen.announce_compile(
        entry_points, f"{spec.torch_name} with {state}", COMPILE_ESTIMATE
    )
    return entry_points


def loops(spec: AlgorithmSpec) -> tuple[Any, Any]:
    """``spec``'s (serial, parallel) loops: ``serial(formats, mode, chunks, addresses,
    numels, hyper, bias, flags, advance)`` and ``parallel(formats, mode, chunks, bounds,
    addresses, numels, hyper, bias, flags)``, each running the :func:`cell` of ``formats``,
    ``mode`` and the pass before the update the ``flags`` ask for (made the first time a call
    needs it)."""
    made: dict[tuple[Any, ...], tuple[Any, Any]] = {}

    def pick(formats: tuple[int, ...], mode: int, flags: np.ndarray) -> tuple[Any, Any]:
        key = (formats, mode, flags[CAUTIOUS_FLAG] != 0)
        found = made.get(key)
        if found is None:
            found = made[key] = cell(spec, formats, mode, spec.reduction_mode(key[2]))
        return found

    def serial(formats, mode, chunks, addresses, numels, hyper, bias, flags, advance) -> None:
        pick(formats, mode, flags)[0](chunks, addresses, numels, hyper, bias, flags, advance)

    def parallel(formats, mode, chunks, bounds, addresses, numels, hyper, bias, flags) -> None:
        pick(formats, mode, flags)[1](chunks, bounds, addresses, numels, hyper, bias, flags)

    serial.__name__ = serial.__qualname__ = f"{spec.name}_blocks"
    parallel.__name__ = parallel.__qualname__ = f"{spec.name}_parallel"
    return serial, parallel


class _SpecLoops(Mapping[str, tuple[Any, Any]]):
    """``LOOPS[name]``: :func:`loops` of ``SPECS[name]`` for every spec the fused kernel takes
    (a spec registered later too), made when first asked for."""

    def __init__(self) -> None:
        self._made: dict[str, tuple[AlgorithmSpec, tuple[Any, Any]]] = {}

    def __getitem__(self, name: str) -> tuple[Any, Any]:
        from .lowbit import fuses

        spec = SPECS[name]
        if not fuses(spec):
            raise KeyError(name)
        made = self._made.get(name)
        if made is None or made[0] is not spec:
            made = self._made[name] = (spec, loops(spec))
        return made[1]

    def __iter__(self) -> Iterator[str]:
        from .lowbit import fuses

        return iter([name for name, spec in SPECS.items() if fuses(spec)])

    def __len__(self) -> int:
        return len(list(iter(self)))


LOOPS: Mapping[str, tuple[Any, Any]] = _SpecLoops()
