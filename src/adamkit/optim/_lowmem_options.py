"""The low-memory options (``state_precision``, ``min_8bit_size``, ``param_rounding``): their
accepted values, the checks that name what was wrong, each param's precision, and the
optimizer-wide attributes that check a new value when it is set."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

PRECISIONS = ("fp32", "bf16", "8bit")
ROUNDINGS = ("nearest", "stochastic", "kahan")
_LOW_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_options(state_precision: Any, min_8bit_size: Any, param_rounding: Any) -> None:
    """Raise ValueError naming the argument, its value and what is accepted."""
    if state_precision not in PRECISIONS:
        raise ValueError(
            f"Invalid state_precision: {state_precision!r}; expected one of "
            f"{', '.join(map(repr, PRECISIONS))}"
        )
    if isinstance(min_8bit_size, bool) or not isinstance(min_8bit_size, int) or min_8bit_size < 0:
        raise ValueError(
            f"Invalid min_8bit_size: {min_8bit_size!r}; expected an int >= 0 (the smallest "
            "parameter, in elements, whose state is 8-bit)"
        )
    if param_rounding not in ROUNDINGS:
        raise ValueError(
            f"Invalid param_rounding: {param_rounding!r}; expected one of "
            f"{', '.join(map(repr, ROUNDINGS))}"
        )


def check_group_supports(group: Mapping[str, Any], state_precision: str, rounding: str) -> None:
    """Options low-memory state does not combine with, refused when they are asked for."""
    if state_precision == "fp32" and rounding == "nearest":
        return
    for flag in ("differentiable", "capturable"):
        if group.get(flag):
            raise ValueError(
                f"{flag}=True needs state_precision='fp32' and param_rounding='nearest' "
                f"(got {state_precision!r}, {rounding!r}): low-memory state is updated by "
                "its own kernels, which keep no autograd history and count steps on the host"
            )


def _precision(p: Tensor, state_precision: str, min_8bit_size: int) -> str:
    if state_precision == "fp32" or p.dtype not in _LOW_DTYPES:
        return "fp32"
    if state_precision == "8bit" and p.numel() < min_8bit_size:
        return "fp32"
    return state_precision


_OPTION_NAMES = ("state_precision", "min_8bit_size", "param_rounding")


def _checked_option(name: str) -> property:
    """An optimizer-wide option as an attribute whose new value is checked when it is set."""

    def get(self: Any) -> Any:
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(name) from None

    def set_(self: Any, value: Any) -> None:
        d = self.__dict__
        check_options(**{**{key: d[key] for key in _OPTION_NAMES}, name: value})
        for group in self.param_groups:  # as if the group had the new value, unless its own
            self.validate_group(group if name in group else {**group, name: value})
        d[name] = value

    return property(get, set_, doc=f"The optimizer-wide ``{name}`` (a group may override it).")
