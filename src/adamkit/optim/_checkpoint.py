"""Validate an optimizer state_dict completely before ``load_state_dict`` changes anything.

torch.optim checks only the number of groups and parameters; a state tensor of the wrong
shape loads silently and fails (or broadcasts) steps later. Here every mismatch raises
ValueError naming the group, the parameter, the key and what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

from torch import Tensor


class Slot(Enum):
    """What a state entry must be."""

    STEP = "a step count: a finite integer >= 0 (number or 1-element tensor)"
    # an uncounted spec's (SGD's) low-memory state keeps a count; torch's format has none
    OPTIONAL_STEP = "a step count, where the state keeps one"
    LIKE_PARAM = "a tensor shaped like the parameter"
    LIKE_PARAM_OR_NONE = "a tensor shaped like the parameter, or None"
    # Adafactor's Kahan compensation of a half param: made at the step where it is missing
    OPTIONAL_LIKE_PARAM = "a tensor shaped like the parameter, where the state keeps one"
    SCALAR = "a finite number (number or 1-element tensor)"
    # Adafactor's factored second moment of a param (..., n, m): (..., n, 1) and (..., 1, m)
    ROW_FACTOR = "a tensor shaped like the parameter with its last dimension 1"
    COL_FACTOR = "a tensor shaped like the parameter with its next-to-last dimension 1"


class StateDictError(ValueError):
    """The state_dict does not fit this optimizer; nothing was loaded."""


def _fail(message: str) -> None:
    raise StateDictError(f"Cannot load optimizer state_dict: {message}; nothing was loaded.")


def check_state_dict(optimizer: Any, state_dict: Any) -> None:
    """Raise :class:`StateDictError` if ``state_dict`` does not fit ``optimizer``.

    ``optimizer`` provides ``param_groups``, ``validate_group(group)``,
    ``group_key_defaults`` and ``param_state_layout(group, param) -> {key: Slot}``, and may
    provide
    ``group_state_keys``: group-level state (Schedule-Free's count and average) that a group
    whose params have state must hold (the defaults are a fresh group's, not a stepped one's).
    """
    if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= state_dict.keys():
        _fail("expected a mapping with keys 'state' and 'param_groups'")
    saved_groups, saved_state = state_dict["param_groups"], state_dict["state"]
    groups = optimizer.param_groups
    if len(saved_groups) != len(groups):
        _fail(f"it has {len(saved_groups)} param group(s) but this optimizer has {len(groups)}")
    where: dict[Any, tuple[int, int, dict[str, Any]]] = {}
    for gi, (saved, group) in enumerate(zip(saved_groups, groups, strict=True)):
        n_saved, n_ours = len(saved["params"]), len(group["params"])
        if n_saved != n_ours:
            _fail(
                f"param group {gi} has {n_saved} parameter(s) in the state_dict but "
                f"{n_ours} in this optimizer"
            )
        merged = {**optimizer.group_key_defaults, **saved}
        try:
            optimizer.validate_group(merged)
        except KeyError as error:
            name = type(optimizer).__name__
            _fail(
                f"param group {gi} has no {error.args[0]!r}, which {name} needs (its param "
                f"groups hold {sorted(k for k in optimizer.defaults if k != 'params')}): the "
                "state_dict is likely another optimizer's"
            )
        except ValueError as error:
            _fail(f"param group {gi}: {error}")
        missing = [k for k in getattr(optimizer, "group_state_keys", ()) if k not in saved]
        if missing and any(saved_state.get(pid) for pid in saved["params"]):
            _fail(
                f"param group {gi} has no {missing}, the group state its stepped parameters "
                "go with (a checkpoint of another optimizer, or of one without it)"
            )
        for pi, pid in enumerate(saved["params"]):
            where[pid] = (gi, pi, merged)
    for pid, entry in saved_state.items():
        if pid not in where:
            _fail(f"it has state for parameter id {pid!r}, which no param group lists")
        gi, pi, merged = where[pid]
        param = groups[gi]["params"][pi]
        _check_entry(entry, param, optimizer.param_state_layout(merged, param), gi, pi)


def _check_entry(entry: Any, param: Tensor, layout: dict[str, Slot], gi: int, pi: int) -> None:
    at = f"state of parameter {pi} in group {gi}"
    if not isinstance(entry, Mapping):
        _fail(f"{at} is {type(entry).__name__}; expected a dict")
    if not entry:
        return  # never stepped
    optional = (Slot.OPTIONAL_STEP, Slot.OPTIONAL_LIKE_PARAM)
    missing = {k for k, slot in layout.items() if slot not in optional} - entry.keys()
    extra = entry.keys() - layout.keys()
    if missing or extra:
        _fail(
            f"{at} has keys {sorted(entry)}; expected {sorted(layout)}"
            + (f" (missing {sorted(missing)})" if missing else "")
            + (f" (unexpected {sorted(extra)})" if extra else "")
        )
    for key, slot in layout.items():
        if key not in entry:
            continue  # an optional step or compensation
        value = entry[key]
        if slot is Slot.STEP or slot is Slot.OPTIONAL_STEP:
            _check_step(value, f"{at}, key {key!r}")
        elif slot is Slot.SCALAR:
            _check_scalar(value, f"{at}, key {key!r}")
        elif not (value is None and slot is Slot.LIKE_PARAM_OR_NONE):
            _check_like_param(value, param, f"{at}, key {key!r}", slot)


def _check_step(value: Any, at: str) -> None:
    if isinstance(value, Tensor):
        number = value.item() if value.numel() == 1 else math.nan
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        number = math.nan
    if not (math.isfinite(number) and number >= 0 and number == int(number)):
        _fail(f"{at} is {value!r}; expected {Slot.STEP.value}")


def _check_scalar(value: Any, at: str) -> None:
    if isinstance(value, Tensor):
        number = value.item() if value.numel() == 1 and not value.is_complex() else math.nan
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        number = math.nan
    if not math.isfinite(number):
        _fail(f"{at} is {value!r}; expected {Slot.SCALAR.value}")


def expected_shape(param: Tensor, slot: Slot) -> tuple[int, ...]:
    """The shape of a state tensor of kind ``slot`` for ``param``."""
    shape = tuple(param.shape)
    if slot is Slot.ROW_FACTOR:
        return (*shape[:-1], 1)
    if slot is Slot.COL_FACTOR:
        return (*shape[:-2], 1, shape[-1])
    return shape


def _check_like_param(value: Any, param: Tensor, at: str, slot: Slot) -> None:
    if not isinstance(value, Tensor):
        _fail(f"{at} is {type(value).__name__}; expected {slot.value}")
    expected = expected_shape(param, slot)
    if tuple(value.shape) != expected:
        shape = "the parameter has" if expected == tuple(param.shape) else "expected"
        _fail(f"{at} has shape {tuple(value.shape)}; {shape} {expected}")
    if value.is_complex() != param.is_complex() or not (
        value.is_floating_point() or value.is_complex()
    ):
        kind = "complex" if param.is_complex() else "real floating-point"
        _fail(f"{at} has dtype {value.dtype}; the parameter is {param.dtype}, expected {kind}")
