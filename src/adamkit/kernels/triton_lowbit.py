"""The fused Triton kernel for low-memory state: any two-slot Adam-family spec, one program
per block of 256 elements.

Each program loads its block's codes (or bfloat16 patterns) and scales, decodes them, runs
the spec's own ``element`` in float32 (the same Triton element as the fp32 driver,
:mod:`adamkit.kernels.triton_driver`), stores the param (float32, or bfloat16 rounded to
nearest, stochastically or with Kahan's compensation), takes the block's new absmax with one
reduction and encodes the moments: one pass over memory, nothing but registers in between.
The formats are :mod:`adamkit.reference.lowbit`'s, written as integer arithmetic on the
float32 patterns; the counters are advanced on the host (low-memory state is never
capturable), as :func:`adamkit.kernels.lowbit_torch.step_tensor` does. Under
``TRITON_INTERPRET=1`` the kernel runs on CPU tensors, which is how CI tests it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..algorithms import AlgorithmSpec
from ..algorithms._spec import TENSOR_WIDTH
from ..algorithms.state_formats import (
    ABSMAX_SUFFIX,
    BLOCK,
    EXP_OFFSET,
    INF,
    KAHAN_KEY,
    MIN_NORMAL_BITS,
    MIN_SCALE,
    NAN,
    PARAM_STREAM,
    SLOT_KINDS,
    TOP,
    tensor_seed,
)
from .triton_driver import compiled

_MIN_SCALE: tl.constexpr = tl.constexpr(MIN_SCALE)

PARAM_FLOAT32, PARAM_NEAREST, PARAM_STOCHASTIC, PARAM_KAHAN = 0, 1, 2, 3
_PARAM_MODES = {"nearest": PARAM_NEAREST, "stochastic": PARAM_STOCHASTIC, "kahan": PARAM_KAHAN}


@triton.jit
def _decode(code, scale, MANTISSA: tl.constexpr, SIGNED: tl.constexpr, TOP_CODE: tl.constexpr,
            INF_CODE: tl.constexpr, NAN_CODE: tl.constexpr, EXP: tl.constexpr):  # fmt: skip
    c = code.to(tl.int32)
    if SIGNED:
        magnitude = c & 0x7F
    else:
        magnitude = c
    m = tl.minimum(magnitude, TOP_CODE)
    normal = ((m << (23 - MANTISSA)) + EXP).to(tl.float32, bitcast=True)
    subnormal = m.to(tl.float32) * (1.0 / (1 << (14 + MANTISSA)))
    value = tl.where(m >= (1 << MANTISSA), normal, subnormal) * scale
    value = tl.where(magnitude == INF_CODE, float("inf"), value)
    value = tl.where(magnitude == NAN_CODE, float("nan"), value)
    if SIGNED:
        value = tl.where((c & 0x80) != 0, -value, value)
    return value


@triton.jit
def _encode(y, inverse, noise, MANTISSA: tl.constexpr, SIGNED: tl.constexpr, TOP_CODE: tl.constexpr,
            INF_CODE: tl.constexpr, NAN_CODE: tl.constexpr, EXP: tl.constexpr,
            MIN_NORMAL: tl.constexpr):  # fmt: skip
    y_bits = y.to(tl.int32, bitcast=True)
    magnitude_bits = y_bits & 0x7FFFFFFF
    r = magnitude_bits.to(tl.float32, bitcast=True) * inverse
    r_bits = r.to(tl.int32, bitcast=True)
    noise16 = (noise & 0xFFFF).to(tl.int32)  # 0x8000 rounds to nearest
    normal = (r_bits - EXP + (noise16 << (7 - MANTISSA))) >> (23 - MANTISSA)
    fraction = noise16.to(tl.float32) * (1.0 / 65536.0)
    subnormal = (r * float(1 << (14 + MANTISSA)) + fraction).to(tl.int32)
    code = tl.where(r_bits >= MIN_NORMAL, normal, subnormal)
    code = tl.minimum(code, TOP_CODE)
    if not SIGNED:  # a denominator never reads back as 0
        code = tl.where((code == 0) & (r > 0), 1, code)
    code = tl.where(magnitude_bits == 0x7F800000, INF_CODE, code)
    code = tl.where(magnitude_bits > 0x7F800000, NAN_CODE, code)
    if SIGNED:
        code = tl.where(y_bits < 0, code | 0x80, code)
    return code.to(tl.uint8)


@triton.jit
def _bf16_load(bits):
    return (bits.to(tl.uint32) << 16).to(tl.float32, bitcast=True)


@triton.jit
def _bf16_round(x, noise, NEAREST: tl.constexpr):
    """bfloat16 pattern of float32 ``x``: nearest even, or stochastic with 16-bit ``noise``."""
    bits = x.to(tl.uint32, bitcast=True)
    if NEAREST:
        added = bits + 0x7FFF + ((bits >> 16) & 1)
    else:
        added = bits + (noise & 0xFFFF)
    return tl.where(x != x, 0x7FC0, added >> 16).to(tl.uint16)


@triton.jit
def _one_nan(x):
    """``x``, or the positive quiet NaN (0x7FC00000) for any NaN: the CPU kernel stores one
    NaN (:func:`adamkit.kernels._numba_lowbit._one_nan`), and this kernel equals it bit for
    bit."""
    return tl.where(x != x, float("nan"), x)


@triton.jit
def _random_bits(seed, index):
    """:func:`adamkit.reference.lowbit.random_bits`, modulo 2^32 in uint32 lanes."""
    x = index.to(tl.uint32) * 0x9E3779B1 + seed.to(tl.uint32)
    x ^= x >> 16
    x = x * 0x85EBCA6B
    x ^= x >> 13
    x = x * 0xC2B2AE35
    return x ^ (x >> 16)


@triton.jit
def _lowbit_kernel(
    block_tensor, block_index, numels, seeds, p_addr, g_addr, s0_addr, s1_addr, a0_addr,
    a1_addr, comp_addr, hyper, per_tensor,
    ELEMENT: tl.constexpr, F0: tl.constexpr, F1: tl.constexpr, F2: tl.constexpr,
    F3: tl.constexpr,
    Q8: tl.constexpr, PARAM: tl.constexpr, SQUARE: tl.constexpr, EXP: tl.constexpr,
    MIN_NORMAL: tl.constexpr, TOP_S: tl.constexpr, INF_S: tl.constexpr, NAN_S: tl.constexpr,
    TOP_U: tl.constexpr, INF_U: tl.constexpr, NAN_U: tl.constexpr, STREAM: tl.constexpr,
    B: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    t = tl.load(block_tensor + pid)
    blk = tl.load(block_index + pid)
    n = tl.load(numels + t)
    seed = tl.load(seeds + t)
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
    if PARAM == 0:
        p_ptr = tl.load(p_addr + t).to(tl.pointer_type(tl.float32))
        p = tl.load(p_ptr + offs, mask=mask, other=0.0)
        g_ptr = tl.load(g_addr + t).to(tl.pointer_type(tl.float32))
        g = tl.load(g_ptr + offs, mask=mask, other=0.0)
    else:
        p_ptr = tl.load(p_addr + t).to(tl.pointer_type(tl.uint16))
        p = _bf16_load(tl.load(p_ptr + offs, mask=mask, other=0))
        g_ptr = tl.load(g_addr + t).to(tl.pointer_type(tl.uint16))
        g = _bf16_load(tl.load(g_ptr + offs, mask=mask, other=0))
        comp_ptr = tl.load(comp_addr + t).to(tl.pointer_type(tl.uint16))
        if PARAM == 3:
            p = p + _bf16_load(tl.load(comp_ptr + offs, mask=mask, other=0))
    if Q8:
        c0_ptr = tl.load(s0_addr + t).to(tl.pointer_type(tl.uint8))
        c1_ptr = tl.load(s1_addr + t).to(tl.pointer_type(tl.uint8))
        a0_ptr = tl.load(a0_addr + t).to(tl.pointer_type(tl.float32))
        a1_ptr = tl.load(a1_addr + t).to(tl.pointer_type(tl.float32))
        s0 = _decode(tl.load(c0_ptr + offs, mask=mask, other=0), tl.load(a0_ptr + blk),
                     3, True, TOP_S, INF_S, NAN_S, EXP)  # fmt: skip
        s1 = _decode(tl.load(c1_ptr + offs, mask=mask, other=0), tl.load(a1_ptr + blk),
                     4, False, TOP_U, INF_U, NAN_U, EXP)  # fmt: skip
        if SQUARE:
            s1 = s1 * s1
    else:
        h0_ptr = tl.load(s0_addr + t).to(tl.pointer_type(tl.uint16))
        h1_ptr = tl.load(s1_addr + t).to(tl.pointer_type(tl.uint16))
        s0 = _bf16_load(tl.load(h0_ptr + offs, mask=mask, other=0))
        s1 = _bf16_load(tl.load(h1_ptr + offs, mask=mask, other=0))
    # F2 is False where it switches on a third slot (Adam's AMSGrad: the torch-ops path runs
    # with it); another spec's (ADOPT's decouple) reads as given.
    new_p, x0, x1, _, _, _, _ = ELEMENT(p, g, s0, s1, g, h, k, (F0, F1, F2, F3))
    new_p, x0, x1 = _one_nan(new_p), _one_nan(x0), _one_nan(x1)
    if PARAM == 0:
        tl.store(p_ptr + offs, new_p, mask=mask)
    elif PARAM == 1:
        tl.store(p_ptr + offs, _bf16_round(new_p, 0, True), mask=mask)
    elif PARAM == 2:
        noise = _random_bits(seed ^ STREAM, offs)
        tl.store(p_ptr + offs, _bf16_round(new_p, noise, False), mask=mask)
    else:
        rounded = _bf16_round(new_p, 0, True)
        tl.store(p_ptr + offs, rounded, mask=mask)
        tl.store(comp_ptr + offs, _bf16_round(new_p - _bf16_load(rounded), 0, True), mask=mask)
    if Q8:
        if SQUARE:
            x1 = tl.sqrt_rn(x1)  # correctly rounded, as the reference's
        largest0 = tl.max(tl.where(mask & (tl.abs(x0) < float("inf")), tl.abs(x0), 0.0), axis=0)
        largest1 = tl.max(tl.where(mask & (tl.abs(x1) < float("inf")), tl.abs(x1), 0.0), axis=0)
        tl.store(a0_ptr + blk, largest0)
        tl.store(a1_ptr + blk, largest1)
        inverse0 = tl.where(largest0 >= _MIN_SCALE, 1.0 / largest0, 0.0)  # tiny: flushed
        inverse1 = tl.where(largest1 >= _MIN_SCALE, 1.0 / largest1, 0.0)
        noise = _random_bits(seed, offs)  # stochastic rounding, as bf16: m low bits, v high
        tl.store(c0_ptr + offs, _encode(x0, inverse0, noise, 3, True, TOP_S, INF_S, NAN_S,
                                        EXP, MIN_NORMAL), mask=mask)  # fmt: skip
        tl.store(c1_ptr + offs, _encode(x1, inverse1, noise >> 16, 4, False, TOP_U, INF_U,
                                        NAN_U, EXP, MIN_NORMAL), mask=mask)  # fmt: skip
    else:
        noise = _random_bits(seed, offs)
        tl.store(h0_ptr + offs, _bf16_round(x0, noise, False), mask=mask)
        tl.store(h1_ptr + offs, _bf16_round(x1, noise >> 16, False), mask=mask)


_ELEMENTS: dict[str, Any] = {}


def _element(spec: AlgorithmSpec) -> Any:
    if spec.name not in _ELEMENTS:
        _ELEMENTS[spec.name] = compiled(spec.element)
    return _ELEMENTS[spec.name]


def eligible(spec: AlgorithmSpec, p: Tensor, g: Tensor, state: dict[str, Any], precision: str):
    """Whether the kernel takes this tensor: contiguous float32/bfloat16 tensors on one
    device, "8bit" or "bf16" state in two slots."""
    if precision not in ("8bit", "bf16") or p.dtype not in (torch.float32, torch.bfloat16):
        return False
    keys = [key for key in spec.tensor_state if key in state]
    if len(keys) != 2 or not p.numel() or g.dtype != p.dtype:
        return False
    tensors = [p, g, *(state[key] for key in keys)]
    return all(t.device == p.device and t.is_contiguous() and not t.is_neg() for t in tensors)


def fused(spec, params, grads, states, precisions, streams, scalars, param_rounding) -> list[int]:
    """Run the kernel on the tensors it takes, one launch per (precision, param mode);
    return the indices of the others."""
    batches: dict[tuple[bool, int, torch.device], list[int]] = {}
    rest = []
    for i, (p, g, state) in enumerate(zip(params, grads, states, strict=True)):
        if not eligible(spec, p, g, state, precisions[i]):
            rest.append(i)
            continue
        mode = PARAM_FLOAT32 if p.dtype == torch.float32 else _PARAM_MODES[param_rounding]
        batches.setdefault((precisions[i] == "8bit", mode, p.device), []).append(i)
    for (q8, mode, device), idx in batches.items():
        _launch(spec, [params[i] for i in idx], [grads[i] for i in idx],
                [states[i] for i in idx], [streams[i] for i in idx], scalars, q8, mode,
                device)  # fmt: skip
    return rest


def _launch(spec, params, grads, states, streams, scalars, q8: bool, mode: int, device) -> None:
    hyper, bias, flags = scalars
    keys = [key for key in spec.tensor_state if key in states[0]]
    aux_key = spec.scalar_state
    counters, per_tensor, seeds = [], [], []
    for p, state, stream in zip(params, states, streams, strict=True):
        old = float(state[aux_key]) if aux_key else 0.0
        step, aux = spec.advance(float(state["step"]), old, bias)
        counters.append((step, aux))
        k = [float(v) for v in spec.tensor_scalars(step, aux, bias)][:4]
        per_tensor.append(k + [0.0] * (TENSOR_WIDTH - len(k)))  # (no reduction here)
        seeds.append(tensor_seed(step, p.numel(), stream))
    numels = [p.numel() for p in params]
    block_counts = [-(-n // BLOCK) for n in numels]

    def table(values: Sequence[Any], dtype: torch.dtype) -> Tensor:
        return torch.tensor(values, dtype=dtype).to(device)

    def addresses(tensors: Sequence[Tensor]) -> Tensor:
        return table([t.data_ptr() for t in tensors], torch.int64)

    block_tensor = torch.repeat_interleave(
        torch.arange(len(params), dtype=torch.int32), torch.tensor(block_counts)
    ).to(device)
    block_index = torch.cat([torch.arange(b, dtype=torch.int64) for b in block_counts]).to(device)
    slots = [[state[key] for state in states] for key in keys]
    scales = (
        [[state[key + ABSMAX_SUFFIX] for state in states] for key in keys]
        if q8
        else [params, params]  # never read
    )
    comps = [state.get(KAHAN_KEY, p) for p, state in zip(params, states, strict=True)]
    _lowbit_kernel[(sum(block_counts),)](
        block_tensor, block_index, table(numels, torch.int64), table(seeds, torch.int64),
        addresses(params), addresses(grads), addresses(slots[0]), addresses(slots[1]),
        addresses(scales[0]), addresses(scales[1]), addresses(comps),
        table(hyper, torch.float32), table(per_tensor, torch.float32).contiguous(),
        ELEMENT=_element(spec), F0=flags[0], F1=flags[1],
        F2=flags[2] and 2 not in spec.slot_flags, F3=flags[3], Q8=q8, PARAM=mode,
        SQUARE=SLOT_KINDS[keys[1]] == "square", EXP=EXP_OFFSET, MIN_NORMAL=MIN_NORMAL_BITS,
        TOP_S=TOP["signed"], INF_S=INF["signed"], NAN_S=NAN["signed"], TOP_U=TOP["square"],
        INF_U=INF["square"], NAN_U=NAN["square"], STREAM=PARAM_STREAM, B=BLOCK,
    )  # fmt: skip
    for state, (step, aux) in zip(states, counters, strict=True):
        state["step"].fill_(step)
        if aux_key:
            state[aux_key].fill_(aux)
