"""What to do when a gradient holds NaN or Inf: ``on_nonfinite`` = propagate, skip or raise.

The check runs before any parameter or state is touched, so "skip" and "raise" leave the
optimizer and the model bitwise as they were.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..kernels._tensors import group_by_device_and_dtype, real_view

MODES = ("propagate", "skip", "raise")


class NonFiniteGradientError(FloatingPointError):
    """A gradient held NaN or Inf and the optimizer was built with ``on_nonfinite="raise"``."""


def check_mode(value: Any) -> str:
    if value not in MODES:
        raise ValueError(
            f"Invalid on_nonfinite: {value!r}; expected one of " + ", ".join(repr(m) for m in MODES)
        )
    return value


# Returned when another rank's shard of a DTensor gradient holds NaN or Inf.
ON_ANOTHER_RANK = (-1, -1)


def _is_dtensor(t: Tensor) -> bool:
    return hasattr(t, "to_local") and hasattr(t, "device_mesh")


def _checked_values(grad: Tensor) -> Tensor:
    """The numbers of a gradient to check: this rank's shard of a DTensor, a sparse gradient's
    values, a complex one's real parts."""
    if _is_dtensor(grad):
        grad = grad.to_local()
    values = grad._values() if grad.is_sparse else grad
    return real_view(values.detach())


def _any_rank(found: bool, device: torch.device) -> bool:
    """Whether any rank found a bad shard (so all ranks skip or raise together)."""
    import torch.distributed as dist

    flag = torch.tensor([1.0 if found else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def first_nonfinite(param_groups: list[dict[str, Any]]) -> tuple[int, int] | None:
    """(group index, parameter index) of the first gradient holding NaN or Inf, or None.

    Uses the max-abs norm of each gradient: finite for any finite tensor (no overflow, unlike
    the 2-norm), NaN or Inf otherwise; one host synchronisation per device and dtype. With
    DTensor gradients (FSDP2) each rank checks its shards and the ranks agree by an all-reduce,
    returning ``ON_ANOTHER_RANK`` where only another rank's shard was bad.
    """
    where, tensors = [], []
    sharded_device = None
    for gi, group in enumerate(param_groups):
        for pi, p in enumerate(group["params"]):
            if p.grad is None:
                continue
            if _is_dtensor(p.grad):
                sharded_device = p.grad.device
            values = _checked_values(p.grad)
            if values.numel():
                where.append((gi, pi))
                tensors.append(values)
    bad: list[tuple[int, int]] = []
    for idx in group_by_device_and_dtype(tensors):
        norms = torch._foreach_norm([tensors[i] for i in idx], ord=float("inf"))
        finite = torch.stack(norms).isfinite()
        if not bool(finite.all()):
            bad += [where[idx[j]] for j in (~finite).nonzero().flatten().tolist()]
    if sharded_device is not None and _any_rank(bool(bad), sharded_device) and not bad:
        return ON_ANOTHER_RANK
    return min(bad) if bad else None


def describe(param_groups: list[dict[str, Any]], group_index: int, param_index: int) -> str:
    """'parameter 'fc.weight' (group 0, index 2, shape (3, 4), float32)'."""
    if (group_index, param_index) == ON_ANOTHER_RANK:
        return "a parameter's shard on another rank"
    group = param_groups[group_index]
    p = group["params"][param_index]
    names = group.get("param_names")
    name = f"{names[param_index]!r} " if names else ""
    return (
        f"parameter {name}(group {group_index}, index {param_index}, "
        f"shape {tuple(p.shape)}, {str(p.dtype).removeprefix('torch.')})"
    )
