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
from ..algorithms.state_formats import BLOCK, PARAM_STREAM, SLOT_KINDS, tensor_seed
from . import _numba_cache, _numba_codegen
from ._numba_bits import magnitude_bits, random_base, random_bits_after
from ._numba_cpu import _OPTIONS, _float64_cell
from ._numba_formats import (
    _F32,
    _FORMAT_NAMES,
    _HALF_BF16,
    _HALF_F16,
    ABSENT,
    AUX,
    BF16,
    BF16_DOWN,
    KIND_CODES,
    PARAM_F16,
    PARAM_FLOAT32,
    PARAM_KAHAN,
    PARAM_NEAREST,
    PARAM_STOCHASTIC,
    Q8,
    SIGNED,
    STEP,
    STREAM,
    _block_inputs,
    _encode_block,
    _half_load,
    _half_nearest,
    _half_stochastic,
    _kept,
    _slot_in,
    _slot_out,
    _slot_scale,
    _stored,
    _tensor_views,
)
from ._numba_reduce import _block_sums, _finish, _parallel_totals
from ._numba_spec import _advance, _row, _scalars, _tensor_table, spec_functions

_numba_cache.install()
_jit = numba.njit(**_OPTIONS)
_jit_parallel = numba.njit(parallel=True, **_OPTIONS)
_inline = numba.njit(inline="always", error_model="numpy")
_helper = numba.njit(error_model="numpy")  # inlined by LLVM, not numba (_numba_formats)

_tensor_seed = _helper(tensor_seed)  # int64 products wrap: their low 32 bits are exact
_QUIET_NAN = np.float32(np.nan)  # 0x7FC00000


@_inline
def _one_nan(x):
    """``x``, or the positive quiet NaN for any NaN. Where two NaNs meet in an operation, x86
    returns the first operand's, and which operand is first is LLVM's choice: it differs
    between a cell's own entry point and the copy inlined into its parallel one, so without
    this a NaN's sign would depend on which of them ran (on numba's cache)."""
    return x if x == x else _QUIET_NAN


@_inline
def _bias(bias):
    return (bias[0], bias[1], bias[2], bias[3], bias[4], bias[5], bias[6], bias[7])


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
