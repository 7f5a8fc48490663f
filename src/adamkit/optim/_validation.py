"""The one place that validates hyperparameters. Messages name the argument, the bad value
and what is accepted."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor


def _as_number(name: str, value: Any) -> float:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} as a Tensor must have exactly 1 element; got shape {tuple(value.shape)}"
            )
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number; got {value!r} of type {type(value).__name__}")
    return float(value)


def check_nonnegative(name: str, value: Any) -> None:
    """``value`` must be a finite number ≥ 0 (a 1-element tensor counts as a number)."""
    number = _as_number(name, value)
    if not (math.isfinite(number) and number >= 0.0):
        raise ValueError(f"Invalid {name}: {number!r}; expected a finite number >= 0")


def check_in_range(name: str, value: Any, *, upper_inclusive: bool) -> None:
    """``value`` must lie in [0, 1) or, with ``upper_inclusive``, in [0, 1]."""
    number = _as_number(name, value)
    ok = 0.0 <= number <= 1.0 if upper_inclusive else 0.0 <= number < 1.0
    if not ok:
        interval = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"Invalid {name}: {number!r}; expected a number in {interval}")


def check_betas(betas: Any) -> None:
    """Adam's ``betas``: a pair of numbers in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"Invalid betas: {betas!r}; expected a pair (beta1, beta2)")
    if isinstance(betas[0], Tensor) != isinstance(betas[1], Tensor):
        raise ValueError("betas must be either both floats or both Tensors")
    check_in_range("betas[0]", betas[0], upper_inclusive=False)
    check_in_range("betas[1]", betas[1], upper_inclusive=False)


def check_backend_flags(*, foreach: bool | None, fused: bool | None, differentiable: bool) -> None:
    """``foreach``, ``fused`` and ``differentiable`` that cannot go together."""
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    if fused and differentiable:
        raise RuntimeError("`fused` does not support `differentiable`")
