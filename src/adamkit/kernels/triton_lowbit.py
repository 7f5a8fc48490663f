"""The fused Triton kernel for low-memory state: every spec the fused CPU kernel takes, in the
same cells (:mod:`adamkit.kernels._numba_lowbit`), one program per block of 256 elements.

Each program loads its block's param and grad (float32, or bfloat16/float16 patterns read in
place), decodes each slot by its format (8-bit codes × the block's scale, bfloat16, torch's
format for the "fp32" precision, or, for a slot the cell does not store, the grad, as in the
fp32 driver), runs the spec's own
``element`` in float32 (the same Triton element as the fp32 driver,
:mod:`adamkit.kernels.triton_driver`), stores the param (float32, or rounded to nearest,
stochastically or with Kahan's compensation), takes each 8-bit slot's new absmax with one
reduction and encodes it: one pass over memory, nothing but registers in between. A cell with
a pass before the update (the spec's ``reduction``, StableAdamW's RMS, or the count of the
cautious mask) launches the kernel once more first, storing only each block's float64 partial
sum. The formats are :mod:`adamkit.reference.lowbit`'s, as integer arithmetic on the float32
patterns. Which tensors it takes, their slots' formats and their addresses are
:func:`adamkit.kernels.lowbit._row`'s, as for the CPU kernel. The counters are advanced on the
host (low-memory state is never capturable), as the CPU kernel advances them, and put back
where a launch fails. Under
``TRITON_INTERPRET=1`` the kernel runs on CPU tensors, which is how CI tests it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import triton
import triton.language as tl

from ..algorithms import AlgorithmSpec
from ..algorithms._spec import (
    CAUTIOUS_COUNT,
    CAUTIOUS_FLAG,
    FLAG_WIDTH,
    NO_REDUCTION,
    SPEC_REDUCTION,
    TENSOR_SLOTS,
)
from ..algorithms.state_formats import (
    BLOCK,
    INF,
    MIN_SCALE,
    NAN,
    PARAM_STREAM,
    SLOT_KINDS,
    TOP,
    tensor_seed,
)
from . import lowbit
from ._triton_formats import (
    HALF_BF16,
    HALF_F16,
    bf16_load,
    bf16_round,
    decode,
    encode,
    f16_stochastic,
    half_load,
    half_nearest,
    one_nan,
    random_bits,
)
from .triton_driver import EXACT, _finished, compiled

# A cell's literals. Each slot's format, by lowbit._row's storage names: the low-memory ones
# (8-bit codes; bfloat16 stochastic, or toward zero for AMSGrad's running max; not stored)
Q8, BF16, BF16_DOWN, ABSENT = 0, 1, 2, 3
# ... and torch's format, the "fp32" precision of a half param rounded stochastically or with
# Kahan's compensation: float32, or the param's half dtype stored to nearest.
FP32, BF16_NEAREST, FP16_NEAREST = 4, 5, 6
FORMATS = {
    "Q8": Q8, "BF16": BF16, "BF16_DOWN": BF16_DOWN, "ABSENT": ABSENT, "FP32": FP32,
    "BF16_NEAREST": BF16_NEAREST, "FP16_NEAREST": FP16_NEAREST,
}  # fmt: skip
SIGNED, SQUARE, UNSIGNED = 0, 1, 2
KINDS = {"signed": SIGNED, "square": SQUARE, "unsigned": UNSIGNED}
PARAM_FLOAT32, PARAM_NEAREST, PARAM_STOCHASTIC, PARAM_KAHAN = 0, 1, 2, 3
_PARAM_MODES = {"nearest": PARAM_NEAREST, "stochastic": PARAM_STOCHASTIC, "kahan": PARAM_KAHAN}
_HALVES = {torch.bfloat16: HALF_BF16, torch.float16: HALF_F16}
# The columns of lowbit._row's address row read here: p, g, the three slots (codes or
# bfloat16 patterns), their block scales three columns on, Kahan's compensation.
ROW_WIDTH = 12
_P: tl.constexpr = tl.constexpr(0)
_G: tl.constexpr = tl.constexpr(1)
_S0: tl.constexpr = tl.constexpr(2)
_SCALES: tl.constexpr = tl.constexpr(3)  # (a slot's scales: its column + 3)
_KAHAN: tl.constexpr = tl.constexpr(8)
_WIDTH: tl.constexpr = tl.constexpr(ROW_WIDTH)

# (the same literals, as the jit functions read them)
_Q8_: tl.constexpr = tl.constexpr(Q8)
_BF16_: tl.constexpr = tl.constexpr(BF16)
_BF16_DOWN_: tl.constexpr = tl.constexpr(BF16_DOWN)
_ABSENT_: tl.constexpr = tl.constexpr(ABSENT)
_FP32_: tl.constexpr = tl.constexpr(FP32)
_BF16_NEAREST_: tl.constexpr = tl.constexpr(BF16_NEAREST)
_FP16_NEAREST_: tl.constexpr = tl.constexpr(FP16_NEAREST)
_SIGNED_: tl.constexpr = tl.constexpr(SIGNED)
_SQUARE_: tl.constexpr = tl.constexpr(SQUARE)
_F16_: tl.constexpr = tl.constexpr(HALF_F16)
_FLOAT32_: tl.constexpr = tl.constexpr(PARAM_FLOAT32)
_NEAREST_: tl.constexpr = tl.constexpr(PARAM_NEAREST)
_STOCHASTIC_: tl.constexpr = tl.constexpr(PARAM_STOCHASTIC)
_KAHAN_: tl.constexpr = tl.constexpr(PARAM_KAHAN)
_SPEC_REDUCTION_: tl.constexpr = tl.constexpr(SPEC_REDUCTION)
_CAUTIOUS_COUNT_: tl.constexpr = tl.constexpr(CAUTIOUS_COUNT)
_MIN_SCALE: tl.constexpr = tl.constexpr(MIN_SCALE)
_STREAM: tl.constexpr = tl.constexpr(PARAM_STREAM)
_TOP_S: tl.constexpr = tl.constexpr(TOP["signed"])
_INF_S: tl.constexpr = tl.constexpr(INF["signed"])
_NAN_S: tl.constexpr = tl.constexpr(NAN["signed"])
_TOP_U: tl.constexpr = tl.constexpr(TOP["unsigned"])
_INF_U: tl.constexpr = tl.constexpr(INF["unsigned"])
_NAN_U: tl.constexpr = tl.constexpr(NAN["unsigned"])


@triton.jit
def _pointer(row, column, dtype: tl.constexpr):
    return tl.load(row + column).to(tl.pointer_type(dtype))


@triton.jit
def _param_load(row, offs, mask, PARAM: tl.constexpr, HALF: tl.constexpr):
    """The block's param and grad in float32 (a half param plus its Kahan compensation)."""
    if PARAM == _FLOAT32_:
        p = tl.load(_pointer(row, _P, tl.float32) + offs, mask=mask, other=0.0)
        g = tl.load(_pointer(row, _G, tl.float32) + offs, mask=mask, other=0.0)
    else:
        p = half_load(tl.load(_pointer(row, _P, tl.uint16) + offs, mask=mask, other=0), HALF)
        g = half_load(tl.load(_pointer(row, _G, tl.uint16) + offs, mask=mask, other=0), HALF)
        if PARAM == _KAHAN_:
            comp = tl.load(_pointer(row, _KAHAN, tl.uint16) + offs, mask=mask, other=0)
            p = p + half_load(comp, HALF)
    return p, g


@triton.jit
def _param_store(row, offs, mask, x, seed, PARAM: tl.constexpr, HALF: tl.constexpr):
    if PARAM == _FLOAT32_:
        tl.store(_pointer(row, _P, tl.float32) + offs, x, mask=mask)
    else:
        p_ptr = _pointer(row, _P, tl.uint16)
        if PARAM == _NEAREST_:
            tl.store(p_ptr + offs, half_nearest(x, HALF), mask=mask)
        elif PARAM == _STOCHASTIC_:
            noise = random_bits(seed ^ _STREAM, offs)
            if HALF == _F16_:
                tl.store(p_ptr + offs, f16_stochastic(x, noise), mask=mask)
            else:
                tl.store(p_ptr + offs, bf16_round(x, noise, False), mask=mask)
        else:
            rounded = half_nearest(x, HALF)
            tl.store(p_ptr + offs, rounded, mask=mask)
            comp = half_nearest(x - half_load(rounded, HALF), HALF)
            tl.store(_pointer(row, _KAHAN, tl.uint16) + offs, comp, mask=mask)


@triton.jit
def _slot_load(row, column, blk, offs, mask, g, FMT: tl.constexpr, KIND: tl.constexpr):
    """A slot's block in float32, decoded by its format (an absent slot reads ``g``)."""
    if FMT == _ABSENT_:
        value = g
    elif FMT == _Q8_:
        codes = tl.load(_pointer(row, column, tl.uint8) + offs, mask=mask, other=0)
        scale = tl.load(_pointer(row, column + _SCALES, tl.float32) + blk)
        if KIND == _SIGNED_:
            value = decode(codes, scale, 3, True, _TOP_S, _INF_S, _NAN_S)
        else:
            value = decode(codes, scale, 4, False, _TOP_U, _INF_U, _NAN_U)
            if KIND == _SQUARE_:
                value = value * value
    elif FMT == _FP32_:
        value = tl.load(_pointer(row, column, tl.float32) + offs, mask=mask, other=0.0)
    elif FMT == _FP16_NEAREST_:
        bits = tl.load(_pointer(row, column, tl.uint16) + offs, mask=mask, other=0)
        value = half_load(bits, _F16_)
    else:  # bfloat16 patterns
        value = bf16_load(tl.load(_pointer(row, column, tl.uint16) + offs, mask=mask, other=0))
    return value


@triton.jit
def _slot_store(row, column, blk, offs, mask, x, noise, FMT: tl.constexpr, KIND: tl.constexpr):
    """Store a slot's block by its format: 8-bit codes with the block's new scale (√v's for
    a square), bfloat16 rounded stochastically with ``noise`` (toward zero: BF16_DOWN), or
    torch's format (float32; bfloat16, float16 to nearest)."""
    if FMT == _Q8_:
        if KIND == _SQUARE_:
            x = tl.sqrt_rn(x)  # correctly rounded, as the reference's
        largest = tl.max(tl.where(mask & (tl.abs(x) < float("inf")), tl.abs(x), 0.0), axis=0)
        tl.store(_pointer(row, column + _SCALES, tl.float32) + blk, largest)
        inverse = tl.where(largest >= _MIN_SCALE, tl.div_rn(1.0, largest), 0.0)  # tiny: flushed
        if KIND == _SIGNED_:
            code = encode(x, inverse, noise, 3, True, _TOP_S, _INF_S, _NAN_S)
        else:
            code = encode(x, inverse, noise, 4, False, _TOP_U, _INF_U, _NAN_U)
        tl.store(_pointer(row, column, tl.uint8) + offs, code, mask=mask)
    elif FMT == _BF16_:
        tl.store(_pointer(row, column, tl.uint16) + offs, bf16_round(x, noise, False), mask=mask)
    elif FMT == _BF16_DOWN_:
        tl.store(_pointer(row, column, tl.uint16) + offs, bf16_round(x, 0, False), mask=mask)
    elif FMT == _FP32_:
        tl.store(_pointer(row, column, tl.float32) + offs, x, mask=mask)
    elif FMT == _BF16_NEAREST_:
        tl.store(_pointer(row, column, tl.uint16) + offs, bf16_round(x, 0, True), mask=mask)
    elif FMT == _FP16_NEAREST_:
        tl.store(_pointer(row, column, tl.uint16) + offs, half_nearest(x, _F16_), mask=mask)


@triton.jit
def _lowbit_kernel(
    block_tensor, block_index, numels, seeds, rows, hyper, per_tensor, partial,
    ELEMENT: tl.constexpr, REDUCTION: tl.constexpr, F0: tl.constexpr, F1: tl.constexpr,
    F2: tl.constexpr, F3: tl.constexpr, FMT0: tl.constexpr, FMT1: tl.constexpr,
    FMT2: tl.constexpr, KIND0: tl.constexpr, KIND1: tl.constexpr, KIND2: tl.constexpr,
    PARAM: tl.constexpr, HALF: tl.constexpr, MODE: tl.constexpr, REDUCING: tl.constexpr,
    B: tl.constexpr,
):  # fmt: skip
    """One block's update; or, with ``REDUCING``, its share of the pass before the update
    (``MODE``: the spec's reduction or the cautious mask's count), stored in
    ``partial[block]`` with nothing else written."""
    pid = tl.program_id(0)
    t = tl.load(block_tensor + pid)
    blk = tl.load(block_index + pid)
    n = tl.load(numels + t)
    row = rows + t * _WIDTH
    offs = blk * B + tl.arange(0, B)
    mask = offs < n
    h = (
        tl.load(hyper + 0), tl.load(hyper + 1), tl.load(hyper + 2), tl.load(hyper + 3),
        tl.load(hyper + 4), tl.load(hyper + 5), tl.load(hyper + 6), tl.load(hyper + 7),
    )  # fmt: skip
    k = (
        tl.load(per_tensor + 6 * t), tl.load(per_tensor + 6 * t + 1),
        tl.load(per_tensor + 6 * t + 2), tl.load(per_tensor + 6 * t + 3),
        tl.load(per_tensor + 6 * t + 4), tl.load(per_tensor + 6 * t + 5),
    )  # fmt: skip
    f = (F0, F1, F2, F3)
    p, g = _param_load(row, offs, mask, PARAM, HALF)
    s0 = _slot_load(row, _S0, blk, offs, mask, g, FMT0, KIND0)
    s1 = _slot_load(row, _S0 + 1, blk, offs, mask, g, FMT1, KIND1)
    s2 = _slot_load(row, _S0 + 2, blk, offs, mask, g, FMT2, KIND2)
    new_p, x0, x1, x2, base, u, g_seen = ELEMENT(p, g, s0, s1, s2, h, k, f)
    if REDUCING:
        if MODE == _SPEC_REDUCTION_:
            term = REDUCTION(g_seen, x0, x1, x2, h, k, f).to(tl.float64)
        else:
            term = tl.where(u * g_seen > 0, 1.0, 0.0).to(tl.float64)
        tl.store(partial + pid, tl.sum(tl.where(mask, term, 0.0), axis=0))
    else:
        if MODE == _CAUTIOUS_COUNT_:  # cautious: k[4] = 1/max(mean(mask), floor), k[5] = 0
            new_p = base - u * tl.where(u * g_seen > 0, k[4], k[5])
        seed = tl.load(seeds + t)
        _param_store(row, offs, mask, one_nan(new_p), seed, PARAM, HALF)
        noise = random_bits(seed, offs)  # slots 0 and 2: its low 16 bits, slot 1 the high
        _slot_store(row, _S0, blk, offs, mask, one_nan(x0), noise, FMT0, KIND0)
        _slot_store(row, _S0 + 1, blk, offs, mask, one_nan(x1), noise >> 16, FMT1, KIND1)
        _slot_store(row, _S0 + 2, blk, offs, mask, one_nan(x2), noise, FMT2, KIND2)


_COMPILED: dict[str, tuple[AlgorithmSpec, Any, Any]] = {}


@triton.jit
def _no_reduction(g, s0, s1, s2, h, k, f):
    return g


def _functions(spec: AlgorithmSpec) -> tuple[Any, Any]:
    """The spec's element and reduction as Triton functions (made once per spec)."""
    made = _COMPILED.get(spec.name)
    if made is None or made[0] is not spec:
        reduction = _no_reduction if spec.reduction is None else compiled(spec.reduction)
        made = _COMPILED[spec.name] = (spec, compiled(spec.element), reduction)
    return made[1], made[2]


def fused(spec, params, grads, states, precisions, streams, scalars, param_rounding) -> list[int]:
    """Run the kernel on the tensors it takes (those :func:`adamkit.kernels.lowbit._row`
    takes on their own device: the CPU kernel's cells), one launch per cell and device;
    return the indices of the others."""
    stored = lowbit.stored_slots(spec, scalars[2])
    batches: dict[tuple[Any, ...], tuple[list[int], list[list[int]]]] = {}
    rest = []
    for i, (p, g, state) in enumerate(zip(params, grads, states, strict=True)):
        taken = lowbit._row(
            spec, p, g, state, precisions[i], spec.scalar_state, streams[i], param_rounding,
            stored, device=p.device,
        )  # fmt: skip
        if taken is None:
            rest.append(i)
            continue
        row, storage = taken
        mode = PARAM_FLOAT32 if p.dtype == torch.float32 else _PARAM_MODES[param_rounding]
        cell = (tuple(FORMATS[name] for name in storage), mode, _HALVES.get(p.dtype, 0))
        idx, rows = batches.setdefault((*cell, p.device), ([], []))
        idx.append(i)
        rows.append(row)
    for (*cell, device), (idx, rows) in batches.items():
        _launch(spec, _Cell(*cell), [params[i] for i in idx], [states[i] for i in idx],
                rows, scalars, device)  # fmt: skip
    return rest


class _Cell(NamedTuple):
    formats: tuple[int, ...]
    param: int
    half: int


def _counters(spec: AlgorithmSpec, params, states, rows, bias):
    """Advance each tensor's counters one step, in place, then return each one's per-tensor
    scalars (a reduction's two columns 0 until made) and seed from the counters as they are
    then: the CPU kernel's order (so a counter two params share, as a hand-made checkpoint
    may have, advances once for each), with the scalar state stored, and read back, as
    float32."""
    aux_key = spec.scalar_state
    for state in states:
        old = float(state[aux_key]) if aux_key else 0.0
        step, aux = spec.advance(float(state["step"]), old, bias)
        state["step"].fill_(step)
        if aux_key:
            state[aux_key].fill_(aux)
    per_tensor, seeds = [], []
    for p, state, row in zip(params, states, rows, strict=True):
        step = float(state["step"])
        aux = float(state[aux_key]) if aux_key else 0.0
        k = [float(v) for v in spec.tensor_scalars(step, aux, bias)][:4]
        per_tensor.append(k + [0.0] * (6 - len(k)))
        seeds.append(tensor_seed(step, p.numel(), row[-1]))  # (the row's last: its stream)
    return per_tensor, seeds


def _launch(spec, cell: _Cell, params, states, rows, scalars, device) -> None:
    """One cell's launches on ``device``; a launch that fails (a kernel that does not
    compile, say) leaves the cell's counters as they were, with its params and slots. (Only
    this cell's: a group whose params make several cells, float32 beside bfloat16 say, keeps
    the steps of the cells launched before the failing one, counters included.)"""
    keys = ("step", spec.scalar_state) if spec.scalar_state else ("step",)
    # (all taken before any advances: a counter two params share is put back as it was)
    before = [[state[key].clone() for key in keys] for state in states]
    try:
        _run_cell(spec, cell, params, states, rows, scalars, device)
    except BaseException:
        for state, values in zip(states, before, strict=True):
            for key, value in zip(keys, values, strict=True):
                state[key].copy_(value)
        raise


def _run_cell(spec, cell: _Cell, params, states, rows, scalars, device) -> None:
    hyper, bias, flags = scalars
    per_tensor, seeds = _counters(spec, params, states, rows, bias)
    kinds = [KINDS[SLOT_KINDS[key]] for key in spec.tensor_state]
    kinds += [SIGNED] * (TENSOR_SLOTS - len(kinds))
    # a flag that switches on a slot the cell does not store reads False (lowbit._row takes
    # no tensor whose group has the flag on and the slot absent: the CPU kernel's rule)
    off = {flag for flag, fmt in zip(spec.slot_flags, cell.formats, strict=False) if fmt == ABSENT}
    mode = spec.reduction_mode(bool(flags[CAUTIOUS_FLAG]))
    numels = [p.numel() for p in params]
    block_counts = [-(-n // BLOCK) for n in numels]
    block_tensor = torch.repeat_interleave(
        torch.arange(len(params), dtype=torch.int32), torch.tensor(block_counts)
    ).to(device)
    numel_table = torch.tensor(numels, dtype=torch.int64).to(device)
    block_index = torch.cat([torch.arange(b, dtype=torch.int64) for b in block_counts])
    element, reduction = _functions(spec)
    n_blocks = sum(block_counts)
    tables = (
        block_tensor, block_index.to(device), numel_table,
        torch.tensor(seeds, dtype=torch.int64).to(device),
        torch.tensor(rows, dtype=torch.int64).to(device),
        torch.tensor(hyper, dtype=torch.float32).to(device),
    )  # fmt: skip
    constants = dict(
        ELEMENT=element, REDUCTION=reduction,
        **{f"F{i}": bool(flags[i]) and i not in off for i in range(FLAG_WIDTH)},
        **{f"FMT{i}": cell.formats[i] for i in range(TENSOR_SLOTS)},
        **{f"KIND{i}": kinds[i] for i in range(TENSOR_SLOTS)},
        PARAM=cell.param, HALF=cell.half, MODE=mode, B=BLOCK,
    )  # fmt: skip
    table = torch.tensor(per_tensor, dtype=torch.float64).to(device)
    if mode != NO_REDUCTION:  # the pass before the update: a partial sum per block
        partial = torch.zeros(n_blocks, dtype=torch.float64, device=device)
        _lowbit_kernel[(n_blocks,)](
            *tables, table.to(torch.float32), partial, **constants, REDUCING=True, **EXACT
        )
        table = _finished(table, partial, numel_table, BLOCK, mode)
    _lowbit_kernel[(n_blocks,)](
        *tables, table.to(torch.float32), tables[0], **constants, REDUCING=False, **EXACT
    )
