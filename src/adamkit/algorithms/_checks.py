"""Hyperparameter checks, in torch.optim's words.

Each message starts as torch.optim's does ("Invalid learning rate: -1", "Invalid beta
parameter at index 0: 1.0") so code and tests that match torch's errors keep working, then
says what adamkit accepts. The optimizers run these on their defaults before ``params`` is
looked at, as torch does (torch's own error tests pass ``params=None``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor

# torch.optim's name for each hyperparameter in its messages.
TORCH_WORDS = {
    "lr": "learning rate",
    "eps": "epsilon value",
    "weight_decay": "weight_decay value",
    "momentum": "momentum value",
    "momentum_decay": "momentum_decay value",
    "alpha": "alpha value",
    "dampening": "dampening value",
}


def _words(name: str) -> str:
    return TORCH_WORDS.get(name, name)


def as_number(name: str, value: Any) -> float:
    """``value`` as a float; a 1-element tensor counts as a number."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element; got shape {tuple(value.shape)}")
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"Invalid {_words(name)}: {value!r}; {name} must be a number, got "
            f"{type(value).__name__}"
        )
    return float(value)


def nonnegative(name: str, value: Any) -> None:
    """``value`` must be a finite number >= 0."""
    number = as_number(name, value)
    if not (math.isfinite(number) and number >= 0.0):
        raise ValueError(f"Invalid {_words(name)}: {value}; {name} must be a finite number >= 0")


def unit_interval(name: str, value: Any, *, upper_inclusive: bool = False) -> None:
    """``value`` must lie in [0, 1) or, with ``upper_inclusive``, in [0, 1]."""
    number = as_number(name, value)
    ok = 0.0 <= number <= 1.0 if upper_inclusive else 0.0 <= number < 1.0
    if not ok:
        interval = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"Invalid {_words(name)}: {value}; {name} must be a number in {interval}")


def betas(value: Any) -> None:
    """Adam's ``betas``: a pair of numbers in [0, 1) (or one tensor of two, as torch takes)."""
    if isinstance(value, Tensor) and value.dim() == 1 and value.numel() == 2:
        value = tuple(value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(
            f"Invalid betas: {value!r}; betas must be a pair (beta1, beta2) or a tensor of "
            "two elements"
        )
    if isinstance(value[0], Tensor) != isinstance(value[1], Tensor):
        raise ValueError("betas must be either both floats or both Tensors")
    _each_in_unit_interval(value)


def _each_in_unit_interval(value: Any) -> None:
    """Every beta of ``value`` a number in [0, 1) (torch's words first)."""
    for index, beta in enumerate(value):
        number = as_number(f"betas[{index}]", beta)
        if not 0.0 <= number < 1.0:
            raise ValueError(
                f"Invalid beta parameter at index {index}: {beta}; betas[{index}] must be a "
                "number in [0, 1)"
            )


def betas_pair(name: str, value: Any) -> None:
    """:func:`betas` as a spec's check (which gets the name too)."""
    betas(value)


def backend_flags(*, foreach: bool | None, fused: bool | None, differentiable: bool) -> None:
    """``foreach``, ``fused`` and ``differentiable`` that cannot go together (torch's words)."""
    if fused and foreach:
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
    if fused and differentiable:
        raise RuntimeError("`fused` does not support `differentiable`")


def betas_triple(name: str, value: Any) -> None:
    """AdEMAMix's ``betas``: three numbers (β1, β2, β3) in [0, 1)."""
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(
            f"Invalid betas: {value!r}; betas must be a triple (beta1, beta2, beta3) of numbers"
        )
    _each_in_unit_interval(value)


def steps(name: str, value: Any, *, optional: bool = False) -> None:
    """A number of steps: a whole number >= 0, or with ``optional`` None too."""
    accepted = f"{'None or ' if optional else ''}a whole number of steps >= 0"
    if value is None and optional:
        return
    try:
        number = as_number(name, value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number >= 0.0 and number == int(number)):
        raise ValueError(f"Invalid {name}: {value!r}; {name} must be {accepted}")


def optional_steps(name: str, value: Any) -> None:
    """A warmup length: None (no warmup) or a whole number of steps >= 0 (0: none)."""
    steps(name, value, optional=True)


def cautious(group: Mapping[str, Any], takes_it: bool, optimizer: str) -> None:
    """``cautious`` (a group key only where given): a bool, on an optimizer that takes it,
    and not with ``differentiable`` or ``capturable`` (its kernels read the mask's mean)."""
    value = group.get("cautious", False)
    if not isinstance(value, bool):
        raise ValueError(f"cautious must be True or False, got {value!r}")
    if value and not takes_it:
        raise ValueError(
            f"{optimizer} does not take cautious=True (it masks the update of Adam, AdamW, "
            "NAdam, RAdam, Adamax, AdEMAMix, ADOPT and Lion)"
        )
    for option in ("differentiable", "capturable"):
        if value and group.get(option):
            raise ValueError(f"cautious=True does not combine with {option}=True")


def optional_positive(name: str, value: Any) -> None:
    """None, or a finite number > 0 (StableAdamW's ``max_lr``)."""
    if value is None:
        return
    number = as_number(name, value)
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"Invalid {_words(name)}: {value} (a number > 0, or None)")
