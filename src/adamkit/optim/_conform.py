"""Put a parameter's low-memory state in the format its options give it, before any kernel
runs.

A parameter's state format follows from the options in force (``state_precision``,
``min_8bit_size``, ``param_rounding``, ``amsgrad``) and the parameter's dtype, and any of those
can change between steps: ``model.to(torch.bfloat16)``, ``opt.state_precision = "bf16"``, a
group's ``amsgrad`` turned on. The kernels read each slot at the address and in the format they
expect, so a slot of another format would be reinterpreted (a crash, or silent garbage). Here
each slot is checked and, where it differs, converted by value (decoded to float32, encoded in
the new format); a missing slot is made (AMSGrad's max as zeros: max(0, v) = v, so the max
starts at the step's v); Kahan's compensation is made when a parameter becomes half precision
and folded back into it when it stops being so. A slot of the wrong size is left for the
kernels' size check, which names it and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ..algorithms.state_formats import ABSMAX_SUFFIX, KAHAN_KEY, SLOT_KINDS, slot_precision
from ..kernels._batching import StateSizeError, check_sizes
from ..kernels._state_checks import StateFormatError
from ..kernels.lowbit_torch import check_scales, dequantize, is_8bit, quantize, to_bf16
from ..kernels.wrappers import HALF_DTYPES, dtensor_like, to_local
from ._checkpoint import Slot


def check_shapes(stated: list[tuple[Tensor, dict[str, Any]]]) -> None:
    """Raise :class:`StateSizeError` if a state slot of a (param, state) pair is not shaped like
    its param (a param replaced by one of another shape): nothing is converted then."""
    keys = sorted({key for _, state in stated for key in state if key in (*SLOT_KINDS, KAHAN_KEY)})
    params = [p for p, _ in stated]
    roles = [[_tensor_or_none(state.get(key)) for _, state in stated] for key in keys]
    check_sizes(params, roles, keys)


def _tensor_or_none(value: Any) -> Tensor | None:
    return value if isinstance(value, Tensor) else None


def kahan_needed(p: Tensor, rounding: str) -> bool:
    """Whether ``p`` keeps Kahan's compensation: a half-precision param rounded "kahan"."""
    return rounding == "kahan" and p.dtype in HALF_DTYPES


def _low(p: Tensor, precision: str, rounding: str) -> bool:
    """Whether ``p``'s state is low-memory (as the optimizer's ``_low_memory``): 8-bit or
    bf16, or a half param rounded stochastically or with Kahan's compensation."""
    return precision != "fp32" or (rounding != "nearest" and p.dtype in HALF_DTYPES)


def check_present(
    stated: list[tuple[Tensor, dict[str, Any]]], layout: Mapping[str, Any], startable
) -> None:
    """Raise :class:`~adamkit.kernels._state_checks.StateFormatError` if a stepped state lacks
    a slot of ``layout`` that no option switches on (not in ``startable``): a moment deleted
    by hand, which conforming would otherwise make as zeros (nothing is converted then)."""
    for p, state in stated:
        if "step" not in state:
            continue  # never stepped, or an uncounted spec's torch-format state
        for key in layout:
            if key in SLOT_KINDS and key not in startable and state.get(key) is None:
                raise StateFormatError(
                    f"state {key!r} of a parameter of shape {tuple(p.shape)} is missing; its "
                    "step reads it. Was it deleted by hand? Put it back, or drop the "
                    "parameter's state (del optimizer.state[p]) so that it starts afresh; "
                    "nothing was updated."
                )


def conform(
    p: Tensor,
    state: dict[str, Any],
    layout: Mapping[str, Any],
    precision: str,
    rounding: str,
    fp32_dtype: Callable[[], torch.dtype],
) -> bool:
    """Conform ``p``'s ``state`` (in place) to ``precision`` ("fp32": a plain tensor of dtype
    ``fp32_dtype()``; "bf16"; "8bit") for the slots of ``layout`` and to Kahan's compensation
    for ``rounding``. Returns whether the state is now low-memory (8-bit, bf16, or Kahan)."""
    if "step" not in state and not _count_started(p, state, layout, precision, rounding):
        return False  # never stepped: made in the right format on its first step
    for key in [k for k in state if k in SLOT_KINDS and k not in layout]:
        del state[key]  # amsgrad turned off: its max is not kept (nor checkpointed)
        state.pop(key + ABSMAX_SUFFIX, None)
    for key in layout:
        if key in SLOT_KINDS:
            _conform_slot(p, state, key, slot_precision(precision, key, layout), fp32_dtype)
    _conform_kahan(p, state, rounding)
    return precision != "fp32" or KAHAN_KEY in state


def needs_work(
    p: Tensor,
    state: Mapping[str, Any],
    layout: Mapping[str, Any],
    precision: str,
    rounding: str,
    fp32_dtype: Callable[[], torch.dtype],
) -> bool:
    """Whether :func:`conform` would change ``state``: a slot to drop, make or convert, or
    Kahan's compensation to make, convert or fold back (only reads dtypes, shapes and keys,
    so a traced step can decide it)."""
    if "step" not in state:  # as _count_started: low-memory state of an uncounted spec
        if layout.get("step") is not Slot.OPTIONAL_STEP:  # gets a count once it has a slot
            return False
        return _low(p, precision, rounding) and any(k in state for k in layout if k in SLOT_KINDS)
    if any(k in SLOT_KINDS and k not in layout for k in state):
        return True
    for key in layout:
        if key not in SLOT_KINDS:
            continue
        value = state.get(key)
        if value is None:
            return True
        if not isinstance(value, Tensor) or value.shape != p.shape:
            continue  # (the kernels' size check names it)
        try:
            if not _fits(p, state, key, slot_precision(precision, key, layout), fp32_dtype):
                return True
        except StateSizeError:
            return True  # (conform raises it)
    comp = state.get(KAHAN_KEY)
    if kahan_needed(p, rounding):
        return not (
            isinstance(comp, Tensor)
            and comp.shape == p.shape
            and comp.dtype == p.dtype
            and comp.is_contiguous()
        )
    return comp is not None


def _count_started(
    p: Tensor, state: dict[str, Any], layout: Mapping[str, Any], precision: str, rounding: str
) -> bool:
    """For an uncounted spec (SGD: its layout's step is optional), whether ``state`` was
    stepped: its slots are there. Going low-memory, it then gets the count low-memory state
    keeps (1: the buffer has started); slots left None (a torch checkpoint's param not yet
    stepped) are dropped, so that the state starts afresh in the right format."""
    if layout.get("step") is not Slot.OPTIONAL_STEP:
        return False
    low = _low(p, precision, rounding)
    slots = [k for k in layout if k in SLOT_KINDS]
    for key in [k for k in slots if low and k in state and state[k] is None]:
        del state[key]
    if not any(state.get(k) is not None for k in slots):
        return False  # (torch's format keeps a None buffer as it was loaded)
    if low:
        state["step"] = torch.ones((), dtype=torch.float64)
    return True


def holds_low_memory(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` holds a low-memory field: 8-bit scales, a bfloat16 moment, Kahan's
    compensation."""
    return any(
        key == KAHAN_KEY
        or key.endswith(ABSMAX_SUFFIX)
        or (key in SLOT_KINDS and getattr(value, "dtype", None) == torch.bfloat16)
        for key, value in state.items()
    )


def _format(state: Mapping[str, Any], key: str) -> str:
    if is_8bit(state, key):
        return "8bit"
    return "bf16" if state[key].dtype == torch.bfloat16 else "plain"


def _fits(p: Tensor, state: Mapping[str, Any], key: str, precision: str, fp32_dtype) -> bool:
    value, current = state[key], _format(state, key)
    if precision == "8bit":
        if current != "8bit":
            return False
        local = to_local(p)
        check_scales(key + ABSMAX_SUFFIX, state[key + ABSMAX_SUFFIX], local.numel(), local.device)
        return True
    if precision == "bf16":
        return current == "bf16"
    return current != "8bit" and value.dtype in (p.dtype, fp32_dtype())


def _conform_slot(p: Tensor, state: dict[str, Any], key: str, precision: str, fp32_dtype) -> None:
    value = state.get(key)
    if value is None:  # a slot switched on mid-run (AMSGrad's max): zeros
        local = torch.zeros_like(to_local(p), dtype=torch.float32)
        _store(p, state, key, local, precision, fp32_dtype)
        return
    if not isinstance(value, Tensor) or value.shape != p.shape:
        return  # the kernels' size check names it before anything changes
    if _fits(p, state, key, precision, fp32_dtype):
        return
    local = to_local(value)
    if _format(state, key) == "8bit":
        decoded = dequantize(local, to_local(state[key + ABSMAX_SUFFIX]), SLOT_KINDS[key])
    else:
        decoded = local.to(torch.float32)
    state.pop(key + ABSMAX_SUFFIX, None)
    _store(p, state, key, decoded.reshape(to_local(p).shape), precision, fp32_dtype)


def _store(
    p: Tensor, state: dict[str, Any], key: str, local: Tensor, precision: str, fp32_dtype
) -> None:
    """Store float32 ``local`` (the param's local shard's shape) in ``precision``."""
    if precision == "8bit":
        codes, scales = quantize(local, SLOT_KINDS[key])
        state[key + ABSMAX_SUFFIX] = scales
        stored = codes
    elif precision == "bf16":
        stored = to_bf16(local.contiguous(), None)
    else:
        stored = local.to(fp32_dtype()).contiguous()
    state[key] = stored if to_local(p) is p else dtensor_like(stored, p)


def _conform_kahan(p: Tensor, state: dict[str, Any], rounding: str) -> None:
    comp = state.get(KAHAN_KEY)
    usable = isinstance(comp, Tensor) and comp.shape == p.shape and comp.is_floating_point()
    if kahan_needed(p, rounding):
        if usable and comp.dtype == p.dtype and comp.is_contiguous():
            return
        state[KAHAN_KEY] = (
            comp.to(p.dtype).contiguous()
            if usable
            else torch.zeros_like(p, memory_format=torch.contiguous_format)
        )
        return
    if comp is None:
        return
    del state[KAHAN_KEY]
    if usable and p.dtype not in HALF_DTYPES:  # the param left half precision: keep what it owed
        p.detach().add_(comp.to(p.dtype))
