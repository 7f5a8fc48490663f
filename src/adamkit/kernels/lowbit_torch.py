"""The low-memory state formats in torch ops (any device), and a step on them for any spec.

The codes are :mod:`adamkit.reference.lowbit`'s, bit for bit (integer arithmetic on the
float32 patterns). This module serves the checkpoint conversions (quantize a loaded torch
checkpoint, :func:`adamkit.optim.dequantized_state_dict`), diagnostics, and the tensors the
fused kernels do not take (CUDA without Triton, non-contiguous tensors, RMSprop and SGD):
:func:`step_tensor` dequantizes one tensor's state to float32, runs the spec's element on
whole tensors, and stores back. It makes float32 temporaries of the tensor's size; the fused
kernels (:mod:`adamkit.kernels._numba_lowbit`) make none beyond a block.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..algorithms import AlgorithmSpec
from ..algorithms.state_formats import (
    ABSMAX_SUFFIX,
    BLOCK,
    CODES_SUFFIX,
    EXP_OFFSET,
    INF,
    KAHAN_KEY,
    MANTISSA_BITS,
    MIN_NORMAL_BITS,
    MIN_SCALE,
    NAN,
    NEAREST,
    PARAM_STREAM,
    ROUNDED_DOWN,
    SIGN,
    SLOT_KINDS,
    TOP,
    slot_precision,
    tensor_seed,
)
from . import _whole_tensor
from ._batching import StateSizeError
from .wrappers import dtensor_like, to_local

_U32 = 0xFFFFFFFF


def _bits(x: Tensor) -> Tensor:
    return x.contiguous().view(torch.int32).to(torch.int64) & _U32


def _from_bits(bits: Tensor) -> Tensor:
    return (bits & _U32).to(torch.int64).to(torch.int32).view(torch.float32)


def encode(r: Tensor, mantissa_bits: int, noise: Tensor | int = NEAREST) -> Tensor:
    """:func:`adamkit.reference.lowbit.encode`: 16-bit ``noise`` rounds stochastically."""
    shift = 23 - mantissa_bits
    bits = _bits(r)
    noise = torch.as_tensor(noise, device=r.device).to(torch.int64) & 0xFFFF
    normal = (bits - EXP_OFFSET + (noise << (shift - 16))) >> shift
    fraction = noise.to(torch.float32) * 2.0**-16
    subnormal = (r * 2.0 ** (14 + mantissa_bits) + fraction).to(torch.int64)
    code = torch.where(bits >= MIN_NORMAL_BITS, normal, subnormal)
    return code.clamp_(max=15 << mantissa_bits)


def decode(code: Tensor, mantissa_bits: int) -> Tensor:
    normal = _from_bits((code << (23 - mantissa_bits)) + EXP_OFFSET)
    subnormal = code.to(torch.float32) * 2.0 ** -(14 + mantissa_bits)
    return torch.where(code >= (1 << mantissa_bits), normal, subnormal)


def blocks(numel: int) -> int:
    return -(-numel // BLOCK)


def check_scales(key: str, scales: Any, numel: int, device: torch.device) -> None:
    """Raise :class:`~adamkit.kernels._batching.StateSizeError` unless ``scales`` (state
    ``key``) are the float32 block scales, one per block, of ``numel`` elements on
    ``device``."""
    want = blocks(numel)
    if not (
        isinstance(scales, Tensor)
        and scales.dtype == torch.float32
        and scales.shape == (want,)
        and scales.device == device
    ):
        raise StateSizeError(
            f"state {key!r} of a parameter of {numel} elements is {_described(scales)}; "
            f"expected float32 scales of shape ({want},) on {device}. Drop the parameter's "
            "state (del optimizer.state[p]) so that it starts afresh; nothing was updated."
        )


def _described(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)} on {value.device}"
    return f"a {type(value).__name__}"


def quantize(x: Tensor, kind: str, noise: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(uint8 codes shaped like ``x``, float32 absmax per block) of ``x`` (any float dtype);
    rounded to nearest, or stochastically with ``noise`` (16 bits per element)."""
    flat = x.detach().reshape(-1).to(torch.float32)
    n = flat.numel()
    padded = torch.nn.functional.pad(flat, (0, blocks(n) * BLOCK - n)).view(-1, BLOCK)
    add: Tensor | int = NEAREST
    if noise is not None:
        add = torch.nn.functional.pad(noise.reshape(-1) & 0xFFFF, (0, blocks(n) * BLOCK - n))
        add = add.view(-1, BLOCK)
    # √ in float64, rounded once to float32: correctly rounded, as NumPy's and LLVM's float32
    # sqrt are (torch's vectorized float32 sqrt can differ by an ulp).
    stored = padded.double().sqrt().float() if kind == "square" else padded
    magnitude = stored.abs()
    finite = stored.isfinite()
    absmax = torch.where(finite, magnitude, 0.0).amax(dim=1) if n else padded.new_zeros(0)
    inv = torch.where(absmax >= MIN_SCALE, 1.0 / absmax, 0.0)  # a tiny block flushes to 0
    r = torch.where(finite, magnitude * inv[:, None], 0.0)
    code = encode(r, MANTISSA_BITS[kind], add)
    if kind != "signed":
        code = torch.where((code == 0) & (r > 0), 1, code)
    code = torch.where(stored.isinf(), INF[kind], code)
    code = torch.where(stored.isnan(), NAN[kind], code)
    if kind == "signed":
        code = torch.where(stored.signbit(), code | SIGN, code)
    codes = code.reshape(-1)[:n].to(torch.uint8).reshape(x.shape)
    return codes, absmax


def dequantize(codes: Tensor, absmax: Tensor, kind: str) -> Tensor:
    """float32 values of uint8 ``codes`` with block scales ``absmax``."""
    flat = codes.reshape(-1).to(torch.int64)
    magnitude = flat & 0x7F if kind == "signed" else flat
    value = _scaled(decode(magnitude.clamp(max=TOP[kind]), MANTISSA_BITS[kind]), absmax)
    value = torch.where(magnitude == INF[kind], torch.inf, value)
    value = torch.where(magnitude == NAN[kind], torch.nan, value)
    if kind == "signed":
        value = torch.where((flat & SIGN) != 0, -value, value)
    elif kind == "square":
        value = value * value
    return value.reshape(codes.shape)


def _scaled(value: Tensor, absmax: Tensor) -> Tensor:
    """Each element of flat ``value`` times its block's scale: the whole blocks as a (blocks,
    BLOCK) view times a column, the partial last block times its one scale. (Not a per-element
    gather of the scales, ``absmax.repeat_interleave(BLOCK)[:n]`` or ``absmax[i // BLOCK]``:
    Inductor in torch 2.13 compiles those wrongly on the CPU when n is not a multiple of
    BLOCK, reading garbage for the blocks after the first, so a torch.compile'd 8-bit step
    left the partial block's params unchanged and its scale garbage.)"""
    full = value.numel() // BLOCK
    scale = absmax.to(torch.float32)
    head = (value[: full * BLOCK].view(full, BLOCK) * scale[:full, None]).reshape(-1)
    return torch.cat([head, value[full * BLOCK :] * scale[full:]])


def random_bits(seed: int, numel: int, device: torch.device) -> Tensor:
    """:func:`adamkit.reference.lowbit.random_bits` of indices 0..numel-1 (int64 in 0..2^32)."""
    x = (torch.arange(numel, dtype=torch.int64, device=device) * 0x9E3779B1 + seed) & _U32
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & _U32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & _U32
    return x ^ (x >> 16)


def to_bf16(x: Tensor, noise: Tensor | None) -> Tensor:
    """float32 ``x`` as bfloat16: stochastic rounding with 16-bit ``noise``, else nearest."""
    if noise is None:
        return x.to(torch.bfloat16)
    bits = _bits(x)
    rounded = (bits + (noise & 0xFFFF)) >> 16
    rounded = torch.where(x.isnan(), 0x7FC0, rounded)
    return rounded.to(torch.int16).view(torch.bfloat16).reshape(x.shape)


def to_float16_stochastic(x: Tensor, noise: Tensor) -> Tensor:
    """float32 ``x`` as float16 with stochastic rounding: the float16 neighbour above with
    probability (x - below)/(above - below), from 16-bit ``noise``."""
    nearest = x.to(torch.float16)
    up = nearest.float() < x
    other = torch.nextafter(nearest, torch.where(up, torch.inf, -torch.inf).to(torch.float16))
    lo = torch.where(up, nearest, other).float()
    hi = torch.where(up, other, nearest).float()
    gap = hi - lo
    take_hi = ((noise & 0xFFFF).to(torch.float32) + 0.5) / 65536.0 < (x - lo) / gap
    out = torch.where(take_hi, hi, lo).to(torch.float16)
    exact = (nearest.float() == x) | ~x.isfinite() | ~gap.isfinite()
    return torch.where(exact, nearest, out)


def step_tensor(
    spec: AlgorithmSpec,
    p: Tensor,
    g: Tensor,
    state: dict[str, Any],
    scalars: tuple[tuple[float, ...], tuple[float, ...], tuple[bool, ...]],
    *,
    precision: str,
    param_rounding: str,
    stream: int,
) -> None:
    """One step of ``spec`` for one tensor whose state is in ``precision`` ("8bit", "bf16", or
    "fp32": the param's own dtype) with ``param_rounding`` for half params; math in float32;
    stochastic rounding draws from random stream ``stream`` (:func:`tensor_seed`).
    ``scalars`` are the group's (hyper, bias, flags) for float32, padded; the counters in
    ``state`` are advanced here. Everything is computed before anything is written."""
    hyper, bias, flags = scalars
    aux_key = spec.scalar_state
    step, aux = spec.advance(float(state["step"]), float(state[aux_key]) if aux_key else 0.0, bias)
    # A Python float, as the numba and Triton kernels and torch see it: advance returns NAdam's
    # mu_product as a NumPy float32, and NumPy 2 would then keep tensor_scalars' float64
    # products with it (Π_t·μ_{t+1}) in float32.
    aux = float(aux)
    k = tuple(
        float(torch.tensor(v, dtype=torch.float32)) for v in spec.tensor_scalars(step, aux, bias)
    )
    update_and_store(
        spec.tensor_state, _whole_tensor.stepper(spec, flags), p, g, state, (hyper, k, flags),
        precision=precision, param_rounding=param_rounding,
        seed=tensor_seed(step, p.numel(), stream),
    )  # fmt: skip
    state["step"].fill_(step)
    if aux_key:
        state[aux_key].fill_(aux)


def update_and_store(
    slot_keys: tuple[str, ...],
    update: Any,
    p: Tensor,
    g: Tensor,
    state: dict[str, Any],
    scalars: tuple[Any, Any, Any],
    *,
    precision: str,
    param_rounding: str,
    seed: int | Tensor,
) -> None:
    """``update`` (:func:`adamkit.kernels._whole_tensor.stepper`) of one tensor in float32
    (``scalars``: the group's hyper, the tensor's k, the flags), then the param and the slots
    stored in their formats, stochastic rounding drawing from ``seed`` (an int, or a 0-d
    tensor under torch.compile). Everything is computed before anything is written; the
    counters are the caller's."""
    p32 = p.detach().to(torch.float32)
    if KAHAN_KEY in state:
        p32 = p32 + state[KAHAN_KEY].to(torch.float32)
    g32 = g.to(torch.float32)
    keys = [key for key in slot_keys if key in state]  # AMSGrad's max only with it
    slots = [load(state, key) if key in state else g32 for key in slot_keys]
    slots += [g32] * (3 - len(slots))
    new_p, *new_slots = update(p32, g32, slots, *scalars)
    low = precision in ("8bit", "bf16")  # both round the moments stochastically
    noise = random_bits(seed, p.numel(), p.device).view(p.shape) if low else None
    stores: dict[str, Tensor] = {}
    for key in keys:
        i = slot_keys.index(key)
        shift = 16 * (i % 2)  # m takes the low 16 bits of an element's number, v the high
        value = torch.as_tensor(new_slots[i]).expand(p.shape)
        slot_noise = torch.zeros_like(noise) if low and key in ROUNDED_DOWN else noise
        stored_in = slot_precision(precision, key, keys)
        stores.update(_stored(key, value, stored_in, state[key].dtype, slot_noise, shift))
    stores.update(param_stores(p, new_p, param_rounding, seed))
    for key, value in stores.items():
        (p.detach() if key == "param" else state[key]).copy_(value)


def load(state: Mapping[str, Any], key: str) -> Tensor:
    """State slot ``key`` as float32, whatever its format (8-bit codes are a uint8 tensor with
    their scales beside it; a state's slots need not share one format, see
    :func:`adamkit.algorithms.state_formats.slot_precision`)."""
    value = state[key]
    if is_8bit(state, key):
        return dequantize(value, state[key + ABSMAX_SUFFIX], SLOT_KINDS[key])
    return value.to(torch.float32)


def _stored(
    key: str, value: Tensor, precision: str, dtype: torch.dtype, noise: Tensor | None, shift: int
) -> dict[str, Tensor]:
    if precision in ("8bit", "bf16"):
        assert noise is not None
    if precision == "8bit":
        codes, absmax = quantize(value, SLOT_KINDS[key], noise >> shift)
        return {key: codes, key + ABSMAX_SUFFIX: absmax}
    if precision == "bf16":
        return {key: to_bf16(value, noise >> shift)}
    return {key: value.to(dtype)}


def param_stores(p: Tensor, value: Tensor, param_rounding: str, seed: int) -> dict[str, Tensor]:
    """What to write for param ``p`` whose new value in float32 is ``value``: {"param": ...}
    rounded by ``param_rounding`` (stochastic rounding drawing from ``seed``'s param stream),
    and for "kahan" on a half param {KAHAN_KEY: what the rounding lost}."""
    if p.dtype not in (torch.bfloat16, torch.float16) or param_rounding == "nearest":
        return {"param": value.to(p.dtype)}
    if param_rounding == "kahan":
        rounded = value.to(p.dtype)
        return {"param": rounded, KAHAN_KEY: (value - rounded.to(torch.float32)).to(p.dtype)}
    noise = random_bits(seed ^ PARAM_STREAM, p.numel(), p.device).view(p.shape)
    if p.dtype == torch.bfloat16:
        return {"param": to_bf16(value, noise)}
    return {"param": to_float16_stochastic(value, noise)}


def dequantized_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A parameter's state with every low-memory slot as a float32 tensor (torch's keys):
    8-bit codes (in memory under the slot's key, in a state_dict under ``<key>_codes``)
    decoded with their scales, bfloat16 slots widened; the scales and Kahan's compensation
    dropped. Raises ValueError naming what is malformed."""
    entry = canonical_entry(entry)
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key == KAHAN_KEY or (
            key.endswith(ABSMAX_SUFFIX) and key[: -len(ABSMAX_SUFFIX)] in entry
        ):
            continue
        scales = entry.get(key + ABSMAX_SUFFIX)
        if scales is not None:
            out[key] = _decoded(key, value, scales)
        elif key in SLOT_KINDS and isinstance(value, Tensor) and value.dtype == torch.uint8:
            raise ValueError(
                f"state {key!r} holds uint8 8-bit codes but their block scales "
                f"{key + ABSMAX_SUFFIX!r} are missing"
            )
        elif key in SLOT_KINDS and isinstance(value, Tensor) and value.dtype == torch.bfloat16:
            out[key] = value.to(torch.float32)
        elif key.endswith(ABSMAX_SUFFIX):
            raise ValueError(
                f"state key {key!r} holds block scales but the state has no "
                f"{key[: -len(ABSMAX_SUFFIX)] + CODES_SUFFIX!r} codes beside it"
            )
        else:
            out[key] = value
    return out


def canonical_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """``entry`` with a state_dict's 8-bit codes (``<key>_codes``) back under their slot's
    key, as the optimizer holds them. Raises ValueError when codes lack their scales or a slot
    is given both ways."""
    out: dict[str, Any] = {}
    for key, value in entry.items():
        base = key[: -len(CODES_SUFFIX)] if key.endswith(CODES_SUFFIX) else None
        if base is None or base not in SLOT_KINDS:
            out.setdefault(key, value)
            continue
        if base in entry:
            raise ValueError(f"state has both {key!r} and {base!r}; expected one of them")
        if base + ABSMAX_SUFFIX not in entry:
            raise ValueError(
                f"state {key!r} (8-bit codes) has no block scales: {base + ABSMAX_SUFFIX!r} "
                "is missing"
            )
        out[base] = value
    return out


def saved_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """``entry`` as a state_dict saves it: 8-bit codes under ``<key>_codes``."""
    return {
        key + CODES_SUFFIX if key in SLOT_KINDS and is_8bit(entry, key) else key: value
        for key, value in entry.items()
    }


def is_8bit(entry: Mapping[str, Any], key: str) -> bool:
    """Whether slot ``key`` of a state ``entry`` holds 8-bit codes: a uint8 tensor with its
    block scales beside it."""
    value = entry.get(key)
    return isinstance(value, Tensor) and value.dtype == torch.uint8 and key + ABSMAX_SUFFIX in entry


def _decoded(key: str, codes: Any, scales: Any) -> Tensor:
    if key not in SLOT_KINDS:
        raise ValueError(
            f"state key {key!r} has 8-bit block scales, but only {sorted(SLOT_KINDS)} can be 8-bit"
        )
    if not (isinstance(codes, Tensor) and codes.dtype == torch.uint8):
        raise ValueError(
            f"8-bit state {key!r} must be a uint8 tensor of codes; got "
            f"{getattr(codes, 'dtype', type(codes).__name__)}"
        )
    local = to_local(codes)
    if local is not codes:  # a DTensor param's (FSDP2): its scales are of the local shard
        return dtensor_like(_decoded(key, local, scales), codes)
    want = blocks(codes.numel())
    if not (
        isinstance(scales, Tensor) and scales.dtype == torch.float32 and scales.shape == (want,)
    ):
        got = (
            (tuple(scales.shape), scales.dtype)
            if isinstance(scales, Tensor)
            else type(scales).__name__
        )
        raise ValueError(
            f"{key + ABSMAX_SUFFIX!r} must be a float32 tensor of shape ({want},) "
            f"(one scale per {BLOCK} codes); got {got}"
        )
    if not bool((scales.isfinite() & (scales >= 0)).all()):
        raise ValueError(
            f"{key + ABSMAX_SUFFIX!r} holds a NaN, infinite or negative block scale; a scale "
            "is the largest finite magnitude of its block: finite and >= 0"
        )
    return dequantize(codes, scales, SLOT_KINDS[key])
