"""A spec's functions recompiled with torch operations, to run on tensors of many elements or
many tensors at once (the Triton driver's per-tensor counters; the diagnostics' samples)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._spec import recompiled


def _where(condition, if_true, if_false):
    return torch.where(torch.as_tensor(condition), if_true, if_false)


def _nan_max(a, b):
    return torch.maximum(torch.as_tensor(a), torch.as_tensor(b))  # propagates NaN


def _lerp(start, end, weight, one_minus_weight):
    return torch.lerp(start, end, weight)


OPS = {
    "where": _where,
    "sqrt": torch.sqrt,
    "absolute": torch.abs,
    "nan_max": _nan_max,
    "lerp": _lerp,
    "sign": torch.sign,  # 0 for NaN
    "to_float32": lambda x: torch.as_tensor(x).to(torch.float32),
}


def torch_compiled(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with torch's operations in place of :mod:`adamkit.algorithms._ops`' (its
    module's helper functions too, e.g. NAdam's ``_mu``)."""
    return recompiled(function, OPS, helpers=lambda helper: helper)
