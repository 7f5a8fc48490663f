"""Hyperparameters written into ``param_groups`` after construction, checked at the next step.

Users and schedulers change ``group["lr"]`` (or any other value) between steps; torch.optim
uses whatever is there. adamkit validates a group again when its values changed, before the
step updates anything, so a NaN or out-of-range value raises instead of spreading into the
params. The check runs on every step, so it is written for speed: an unchanged group costs
one dict comparison (values by identity first).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor


def check_changed_groups(optimizer: Any) -> None:
    """Validate each param group of ``optimizer`` whose values changed since its last check.

    Each group is compared with a shallow copy kept at its last check and with the version
    counter of a CPU tensor ``lr``, which LR schedulers write in place (``fill_``). A device
    tensor's in-place change is not read (that would synchronise every step), nor a change
    inside a mutable value (a list ``betas`` written item by item).

    Raises ValueError naming the group, the argument and the bad value; nothing is changed.
    """
    groups = optimizer.param_groups
    checked = optimizer._checked_groups
    if len(checked) != len(groups):
        checked = optimizer._checked_groups = [None] * len(groups)
    for i, group in enumerate(groups):
        lr = group.get("lr")
        version = None if type(lr) is float else _cpu_version(lr)
        before = checked[i]
        if before is not None and before[1] == version:
            try:
                if group == before[0]:
                    continue
            except Exception:  # e.g. a tensor of several elements replaced by another
                pass
        changed = None if before is None else _changed_keys(group, *before, version)
        _validate(optimizer, i, group, changed)
        checked[i] = (dict(group), version)


def _changed_keys(
    group: dict[str, Any], seen: dict[str, Any], seen_version: int | None, version: int | None
) -> set[str] | None:
    """The keys of ``group`` whose values are other objects than at its last check (``lr``
    too where a CPU tensor lr was written in place); None if keys were added or removed, or
    the group holds a value that can change in place (a list, a tensor): an edit inside it is
    seen only when another value changes, and the whole group is validated then."""
    if group.keys() != seen.keys() or not all_immutable(group):
        return None
    changed = {key for key, value in group.items() if value is not seen[key]}
    if version != seen_version:
        changed.add("lr")
    return changed


_IMMUTABLE = frozenset({float, int, bool, str, type(None)})


def immutable(value: Any) -> bool:
    """Whether ``value`` cannot change in place: a number, str or None, or a tuple of them."""
    kind = type(value)
    return kind in _IMMUTABLE or (kind is tuple and all(type(v) in _IMMUTABLE for v in value))


# torch's own lists in a group: its params, and their names where it was given named ones
# (no check and no kernel reads the names)
LISTS = frozenset({"params", "param_names"})


def all_immutable(group: dict[str, Any]) -> bool:
    """Whether every value of ``group`` but its :data:`LISTS` is :func:`immutable`. (Written
    for speed: a scheduler's step asks twice.)"""
    for key, value in [item for item in group.items() if type(item[1]) not in _IMMUTABLE]:
        if type(value) is tuple:
            if not all(type(v) in _IMMUTABLE for v in value):
                return False
        elif key not in LISTS:
            return False
    return True


def _cpu_version(value: Any) -> int | None:
    """The version counter of a CPU tensor (every in-place write bumps it), else None."""
    return value._version if isinstance(value, Tensor) and value.is_cpu else None


def _validate(optimizer: Any, index: int, group: dict[str, Any], changed: set[str] | None) -> None:
    """``optimizer.validate_group(group)`` (or its check of the ``changed`` keys alone, where
    it has one: a scheduler's lr), its error naming the group."""
    name = type(optimizer).__name__
    try:
        if changed is None or not optimizer.validate_changed(group, changed):
            optimizer.validate_group(group)
    except KeyError as error:
        keys = sorted(k for k in optimizer.defaults if k != "params")
        raise ValueError(
            f"{name}: param group {index} has no {error.args[0]!r}, which {name} needs (its "
            f"groups hold {keys}); nothing was updated."
        ) from None
    except ValueError as error:
        raise ValueError(
            f"{name}: param group {index}: {error} (a value set through param_groups); "
            "nothing was updated."
        ) from None
