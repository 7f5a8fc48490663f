"""The fused CPU kernel for low-memory state: any Adam-family spec, one pass per block.

Per block of 256 elements, in registers and two block-sized buffers: load the param and its
grad (float32, or bfloat16/float16 patterns read in place), decode the stored moments, run the
spec's own ``element`` in float32 (the same compiled element as the fp32 driver,
:mod:`adamkit.kernels._numba_driver`), store the param (float32, or bfloat16/float16 rounded to
nearest, stochastically, or with Kahan's compensation), and store the moments. The moments'
format is a load/store adapter, a literal of the cell: 8-bit codes × the block's scale (stored
after the block's new absmax is known: a second pass over the block's buffer, still in L1),
bfloat16 with stochastic rounding (the low-memory precisions), or torch's format, the "fp32"
precision: plain float32, or the half param's own dtype (bfloat16/float16) stored to nearest,
as torch's ``copy_`` stores the float32 result of the fp32 kernel on float32 copies (so a
half param with torch-format state is stepped in place, with the same bits, and no copies).
Blocks are independent, so threads take whole blocks.

The formats are :mod:`adamkit.reference.lowbit`'s (and torch's conversions), bit for bit:
integer arithmetic on float32 patterns, written as 32-bit LLVM IR in
:mod:`adamkit.kernels._numba_bits` (numba's own integers are 64-bit, which halved the vector
width and tripled the step's time).

The specs whose first two slots are always stored, and no other slot unless a flag switches
it on, are fused (:func:`adamkit.kernels.lowbit.fuses`: Adam, NAdam, RAdam, Adamax; with
AMSGrad's third slot a tensor takes the torch-ops path), in their cell that stores those two
(a flag that would switch another slot on reads False). The entry points are generated per
spec, moments' format and param storage (:mod:`adamkit.kernels._numba_codegen`), each
compiled the first time a run needs it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import numba
import numpy as np

from ..algorithms import SPECS, AlgorithmSpec
from ..algorithms._spec import FLAG_WIDTH, TENSOR_SLOTS
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
    bf16_stochastic_high,
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
from ._numba_cpu import _OPTIONS, _float64_cell, _view
from ._numba_driver import _advance, _row, _tensor_table, spec_functions

_numba_cache.install()
_jit = numba.njit(**_OPTIONS)
_jit_parallel = numba.njit(parallel=True, **_OPTIONS)
_inline = numba.njit(inline="always", error_model="numpy")
# Small helpers are compiled once each and inlined by LLVM, not numba: numba's own inlining of
# them into every specialisation made the loops take minutes to compile.
_helper = numba.njit(error_model="numpy")

# Literals of a cell: the moments' storage (a load/store adapter each: 8-bit codes and
# bfloat16 with stochastic rounding, the low-memory precisions; or the tensor's own dtype,
# stored to nearest, the "fp32" precision: float32, bfloat16 or float16 state), the param's
# storage and rounding (a float16 param's mode is a bfloat16 one plus PARAM_F16), each
# slot's kind.
Q8, BF16, FP32, BF16_NEAREST, FP16_NEAREST = 0, 1, 2, 3, 4
PARAM_FLOAT32, PARAM_NEAREST, PARAM_STOCHASTIC, PARAM_KAHAN, PARAM_F16 = 0, 1, 2, 3, 4
SIGNED, SQUARE, UNSIGNED = 0, 1, 2
KIND_CODES = {"signed": SIGNED, "square": SQUARE, "unsigned": UNSIGNED}
_FORMAT_NAMES = {Q8: "q8", BF16: "bf16", FP32: "fp32", BF16_NEAREST: "bf16n", FP16_NEAREST: "fp16n"}
# what the notice of a first compile calls them (the last three: half params stepped in place)
_STATE_NAMES = {Q8: "8-bit", BF16: "bf16", FP32: "fp32", BF16_NEAREST: "fp32", FP16_NEAREST: "fp32"}
_HALF_BF16, _HALF_F16 = 0, 1

# Address rows: p, g, s0, s1 (codes, bfloat16/float16 patterns or float32), the two slots'
# absmax (float32; any readable address but with 8-bit codes), Kahan's compensation (the
# param's address without it), the float64 step counter, the float32 scalar state (the
# step's address without one); then not an address: the tensor's random stream (tensor_seed).
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
def _encode_block(values0, values1, codes0, codes1, inverse0, inverse1, normal, base, kind0, kind1):
    """The codes of a block's two slots, rounded stochastically as bf16 is (m the low 16
    bits of an element's draw, v the high)."""
    if normal:
        for j in range(values0.size):
            noise = random_bits_after(base, j)
            codes0[j] = _encoded_normal(values0[j], inverse0, noise, kind0)
            codes1[j] = _encoded_normal(values1[j], inverse1, noise >> np.uint32(16), kind1)
    else:
        for j in range(values0.size):
            noise = random_bits_after(base, j)
            codes0[j] = _encoded(values0[j], inverse0, noise, kind0)
            codes1[j] = _encoded(values1[j], inverse1, noise >> np.uint32(16), kind1)


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


@_inline
def _blocks(
    element, advance_fn, tensor_scalars, has_aux, kind0, kind1, keep, precision, param_mode,
    half, chunks, addresses, numels, hyper, bias, flags, advance,
):  # fmt: skip
    """The spec's update over chunk rows (tensor, first block, end block) with the moments in
    ``precision`` and the param stored by ``param_mode`` (``half``: bfloat16 or float16);
    ``keep`` (literals) says which flags the element reads as given (the others read False)."""
    b = (bias[0], bias[1], bias[2], bias[3], bias[4], bias[5], bias[6], bias[7])
    if advance:
        _advance(advance_fn, addresses, b, has_aux, STEP, AUX)
    h = (hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], hyper[5], hyper[6], hyper[7])
    # A flag that switches on a slot this kernel does not store (Adam's AMSGrad) reads False:
    # with that slot, the torch-ops path runs.
    f = (
        keep[0] and flags[0] != 0,
        keep[1] and flags[1] != 0,
        keep[2] and flags[2] != 0,
        keep[3] and flags[3] != 0,
    )
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
        k = _row(table, t)
        p32, g32 = _view(row[P], 0, n, _F32), _view(row[G], 0, n, _F32)
        p16, g16 = _view(row[P], 0, n, _U16), _view(row[G], 0, n, _U16)
        comp = _view(row[KAHAN], 0, n, _U16)
        codes0, codes1 = _view(row[S0], 0, n, _U8), _view(row[S1], 0, n, _U8)
        half0, half1 = _view(row[S0], 0, n, _U16), _view(row[S1], 0, n, _U16)
        full0, full1 = _view(row[S0], 0, n, _F32), _view(row[S1], 0, n, _F32)
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
            half0b, half1b, full0b, full1b = half0[lo:hi], half1[lo:hi], full0[lo:hi], full1[lo:hi]
            # the draws of the block's elements, counted on from its first's
            base, param_base = random_base(seed, lo), random_base(seed ^ PARAM_STREAM, lo)
            if precision == Q8:
                _decode_block(codes0b, scales0[blk], kind0, buffer0)
                _decode_block(codes1b, scales1[blk], kind1, buffer1)
            top0 = top1 = np.uint32(0)
            bottom0 = bottom1 = np.uint32(0xFFFFFFFF)
            for j in range(hi - lo):
                if param_mode == PARAM_FLOAT32:
                    p, g = p32b[j], g32b[j]
                else:
                    p, g = _half_load(p16b[j], half), _half_load(g16b[j], half)
                    if param_mode == PARAM_KAHAN:
                        p = p + _half_load(compb[j], half)
                if precision == Q8:
                    s0, s1 = buffer0[j], buffer1[j]
                elif precision == FP32:
                    s0, s1 = full0b[j], full1b[j]
                elif precision == FP16_NEAREST:
                    s0, s1 = f16_load(half0b[j]), f16_load(half1b[j])
                else:
                    s0, s1 = bf16_load(half0b[j]), bf16_load(half1b[j])
                new_p, x0, x1, _, _, _, _ = element(p, g, s0, s1, g, h, k, f)
                if param_mode == PARAM_FLOAT32:
                    p32b[j] = new_p
                elif param_mode == PARAM_NEAREST:
                    p16b[j] = _half_nearest(new_p, half)
                elif param_mode == PARAM_STOCHASTIC:
                    p16b[j] = _half_stochastic(new_p, random_bits_after(param_base, j), half)
                else:
                    rounded = _half_nearest(new_p, half)
                    p16b[j] = rounded
                    compb[j] = _half_nearest(new_p - _half_load(rounded, half), half)
                if precision == Q8:
                    stored0, stored1 = _stored(x0, kind0), _stored(x1, kind1)
                    buffer0[j], buffer1[j] = stored0, stored1
                    size0, size1 = magnitude_bits(stored0), magnitude_bits(stored1)
                    top0, bottom0 = max(top0, size0), min(bottom0, size0)
                    top1, bottom1 = max(top1, size1), min(bottom1, size1)
                elif precision == BF16:
                    noise = random_bits_after(base, j)
                    half0b[j] = bf16_stochastic_low(x0, noise)
                    half1b[j] = bf16_stochastic_high(x1, noise)
                elif precision == FP32:
                    full0b[j], full1b[j] = x0, x1
                elif precision == FP16_NEAREST:
                    half0b[j], half1b[j] = f16_nearest(x0), f16_nearest(x1)
                else:
                    half0b[j], half1b[j] = bf16_nearest(x0), bf16_nearest(x1)
            if precision == Q8:
                count = hi - lo
                new_scale0 = _block_scale(buffer0[:count], top0)
                new_scale1 = _block_scale(buffer1[:count], top1)
                scales0[blk], scales1[blk] = new_scale0, new_scale1
                inverse0, inverse1 = _inverse(new_scale0), _inverse(new_scale1)
                normal = _all_normal(top0, bottom0, inverse0) and _all_normal(
                    top1, bottom1, inverse1
                )
                _encode_block(
                    buffer0[:count], buffer1[:count], codes0b, codes1b, inverse0, inverse1,
                    normal, base, kind0, kind1,
                )  # fmt: skip


# --- the entry points: generated per spec and cell (see _numba_codegen), never written out,
# each cell compiled the first time a run needs it. Literals: the spec's scalar state or not,
# its two slots' kinds, the flags its element reads as given, the moments' precision and the
# param's mode.
_SOURCE = """\
# adamkit's fused low-memory CPU loops of spec {name!r}, cell {cell} (the slots stored, the
# moments' format, the param's storage): generated by adamkit.kernels._numba_lowbit, do not
# edit. The driver sets the globals _jit, _jit_parallel, _blocks, _advance, numba, STEP, AUX,
# ELEMENT, ADVANCE and SCALARS.
# sources sha256 {digest}


@_jit
def {function}_blocks_{cell}(chunks, addresses, numels, hyper, bias, flags, advance):
    _blocks(
        ELEMENT, ADVANCE, SCALARS, {has_aux}, {kind0}, {kind1}, {keep}, {precision}, {mode},
        {half}, chunks, addresses, numels, hyper, bias, flags, advance,
    )


@_jit_parallel
def {function}_parallel_{cell}(chunks, bounds, addresses, numels, hyper, bias, flags):
    b = (bias[0], bias[1], bias[2], bias[3], bias[4], bias[5], bias[6], bias[7])
    _advance(ADVANCE, addresses, b, {has_aux}, STEP, AUX)
    for k in numba.prange(bounds.size - 1):
        part = chunks[bounds[k] : bounds[k + 1]]
        {function}_blocks_{cell}(part, addresses, numels, hyper, bias, flags, False)
"""


def _namespace(spec: AlgorithmSpec) -> dict[str, Any]:
    """The globals of ``spec``'s generated entry points."""
    return {
        "_jit": _jit, "_jit_parallel": _jit_parallel, "_blocks": _blocks,
        "_advance": _advance, "numba": numba, "STEP": STEP, "AUX": AUX, **spec_functions(spec),
    }  # fmt: skip


# measured with an empty NUMBA_CACHE_DIR on a 2-core machine (docs/benchmarks.md)
COMPILE_ESTIMATE = "about 4 s"


def cell(spec: AlgorithmSpec, precision: int, mode: int) -> tuple[Any, Any]:
    """``spec``'s (serial, parallel) entry points for moments in ``precision`` and a param of
    ``mode``: ``serial(chunks, addresses, numels, hyper, bias, flags, advance)`` and
    ``parallel(chunks, bounds, addresses, numels, hyper, bias, flags)``, storing its first two
    slots (for a spec :func:`adamkit.kernels.lowbit.fuses`); generated and imported on first
    use, compiled (or loaded from numba's cache) at their first call."""
    stored = (True, True) + (False,) * (TENSOR_SLOTS - 2)
    off = set(spec.slot_flags[2:]) - {None}  # flags that switch on a slot not stored here
    function, slots = _numba_codegen.identifier(spec), _numba_codegen.cell_code(stored)
    code = f"{slots}_{_FORMAT_NAMES[precision]}_p{mode}"
    digest = _numba_codegen.sources_hash(spec)
    source = _SOURCE.format(
        name=spec.name, cell=code, digest=digest, function=function,
        has_aux=spec.scalar_state is not None,
        kind0=KIND_CODES[SLOT_KINDS[spec.tensor_state[0]]],
        kind1=KIND_CODES[SLOT_KINDS[spec.tensor_state[1]]],
        keep=tuple(i not in off for i in range(FLAG_WIDTH)),
        precision=precision, mode=mode & ~PARAM_F16,
        half=_HALF_F16 if mode & PARAM_F16 else _HALF_BF16,
    )  # fmt: skip
    stem = f"blocks_{function}_{code}_{digest[:16]}"
    module = _numba_codegen.load(stem, source, lambda: _namespace(spec))
    entry_points = (
        getattr(module, f"{function}_blocks_{code}"),
        getattr(module, f"{function}_parallel_{code}"),
    )
    _numba_codegen.announce_compile(
        entry_points, f"{spec.torch_name} with {_STATE_NAMES[precision]} state", COMPILE_ESTIMATE
    )
    return entry_points


def loops(spec: AlgorithmSpec) -> tuple[Any, Any]:
    """``spec``'s (serial, parallel) loops: ``serial(precision, mode, chunks, addresses,
    numels, hyper, bias, flags, advance)`` and ``parallel(precision, mode, chunks, bounds,
    addresses, numels, hyper, bias, flags)``, each running the :func:`cell` of ``precision``
    and ``mode`` (made the first time a call needs it)."""
    made: dict[tuple[int, int], tuple[Any, Any]] = {}

    def pick(precision: int, mode: int) -> tuple[Any, Any]:
        found = made.get((precision, mode))
        if found is None:
            found = made[precision, mode] = cell(spec, precision, mode)
        return found

    def serial(precision, mode, chunks, addresses, numels, hyper, bias, flags, advance) -> None:
        pick(precision, mode)[0](chunks, addresses, numels, hyper, bias, flags, advance)

    def parallel(precision, mode, chunks, bounds, addresses, numels, hyper, bias, flags) -> None:
        pick(precision, mode)[1](chunks, bounds, addresses, numels, hyper, bias, flags)

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
