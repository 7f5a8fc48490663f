"""What a low-memory step checks of every state before it writes anything: its counters are
one-element tensors, each slot the group's options use is there in the format its precision
stores it in (8-bit codes with their block scales, bfloat16, or torch's floating-point
format), and a half param rounded "kahan" has its compensation, shaped like it.

The optimizer puts the state in those formats when an option or a param's dtype changes
(:mod:`adamkit.optim._conform`). A slot deleted or replaced by hand since then would be read
as another format (a missing moment as the gradient, 8-bit codes written as numbers into a
float32 tensor) or fail after other params were updated; it is refused here, by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..algorithms import AlgorithmSpec
from ..algorithms.state_formats import ABSMAX_SUFFIX, KAHAN_KEY, slot_precision
from .lowbit_torch import check_scales
from .wrappers import HALF_DTYPES

_EXPECTED = {
    "8bit": "uint8 codes",
    "bf16": "a bfloat16 tensor",
    "fp32": "a floating-point tensor",
}


class StateFormatError(RuntimeError):
    """A state slot missing, or not in the format its parameter's state precision stores it in
    (a RuntimeError, as :class:`~adamkit.kernels._batching.StateSizeError`)."""


def check_state(
    spec: AlgorithmSpec,
    stored: Sequence[bool],
    params: Sequence[Tensor],
    states: Sequence[Mapping[str, Any]],
    precisions: Sequence[str],
    param_rounding: str,
) -> None:
    """Raise :class:`StateFormatError` (or :class:`~adamkit.kernels._batching.StateSizeError`
    for block scales) naming the first slot of ``states`` that the step cannot read: one of
    the slots ``stored`` (the spec's ``slots_used`` by the group's flags) missing or in
    another format than its param's precision gives it, or Kahan's compensation missing."""
    used = [key for key, on in zip(spec.tensor_state, stored, strict=False) if on]
    counters = ("step", spec.scalar_state) if spec.scalar_state else ("step",)
    for p, state, precision in zip(params, states, precisions, strict=True):
        for key in counters:  # (the kernels read and write element 0)
            value = state.get(key)
            if not (isinstance(value, Tensor) and value.numel() == 1):
                raise StateFormatError(_refusal(p, value, key, "a one-element counter tensor"))
        for key in used:
            want = slot_precision(precision, key, used)
            scales = state.get(key + ABSMAX_SUFFIX)
            if want == "8bit" and not isinstance(scales, Tensor):
                expected = f"float32 block scales beside the 8-bit {key!r}"
                raise StateFormatError(_refusal(p, scales, key + ABSMAX_SUFFIX, expected))
            if not _in_format(state, key, want):
                raise StateFormatError(_refusal(p, state.get(key), key, _EXPECTED[want]))
        for key in spec.tensor_state:
            scales = state.get(key + ABSMAX_SUFFIX)
            if scales is not None:
                check_scales(key + ABSMAX_SUFFIX, scales, p.numel(), p.device)
        comp = state.get(KAHAN_KEY)
        if param_rounding == "kahan" and p.dtype in HALF_DTYPES:
            if not (
                isinstance(comp, Tensor) and comp.is_floating_point() and comp.shape == p.shape
            ):
                expected = "a floating-point tensor of the param's shape (Kahan's compensation)"
                raise StateFormatError(_refusal(p, comp, KAHAN_KEY, expected))


def _in_format(state: Mapping[str, Any], key: str, precision: str) -> bool:
    value = state.get(key)
    if not isinstance(value, Tensor):
        return False
    if precision == "8bit":
        return value.dtype == torch.uint8  # (its scales: checked by the caller)
    if precision == "bf16":
        return value.dtype == torch.bfloat16
    return value.is_floating_point() or value.is_complex()


def _refusal(p: Tensor, value: Any, key: str, expected: str) -> str:
    found = (
        "missing"
        if value is None
        else f"a {value.dtype} tensor of shape {tuple(value.shape)}"
        if isinstance(value, Tensor)
        else f"a {type(value).__name__}"
    )
    return (
        f"state {key!r} of a parameter of shape {tuple(p.shape)} is {found}; its state "
        f"precision stores it as {expected}. Was it deleted or replaced by hand? Put back a "
        "tensor in that format, or drop the parameter's state (del optimizer.state[p]) so that "
        "it starts afresh; nothing was updated."
    )
