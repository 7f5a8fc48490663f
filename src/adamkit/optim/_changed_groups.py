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
        _validate(optimizer, i, group)
        checked[i] = (dict(group), version)


def _cpu_version(value: Any) -> int | None:
    """The version counter of a CPU tensor (every in-place write bumps it), else None."""
    return value._version if isinstance(value, Tensor) and value.is_cpu else None


def _validate(optimizer: Any, index: int, group: dict[str, Any]) -> None:
    """``optimizer.validate_group(group)``, its error naming the group."""
    name = type(optimizer).__name__
    try:
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
