"""A spec's element on whole tensors with torch ops, with the engine's pass before the update.

The torch-ops kernels (the for-loop of a spec torch lacks, the low-memory state's torch path)
call :func:`step` where the numba and Triton drivers run their loops: the element on whole
tensors, after the spec's reduction (summed over the tensor in float64) or with cautious
masking, as the drivers compute them (:mod:`adamkit.kernels._numba_driver`). Nothing here
reads a value back to the host.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..algorithms import AlgorithmSpec
from ..algorithms._spec import (
    CAUTIOUS_COUNT,
    CAUTIOUS_FLAG,
    MASK_FLOOR,
    NO_REDUCTION,
    TENSOR_WIDTH,
)
from ..algorithms._torch_ops import torch_compiled

_COMPILED: dict[Any, Any] = {}  # a plain dict: Dynamo warns on lru_cache in a trace


def _compiled(function: Any) -> Any:
    found = _COMPILED.get(function)
    if found is None:
        found = _COMPILED[function] = torch_compiled(function)
    return found


def prepare(spec: AlgorithmSpec) -> None:
    """Compile ``spec``'s functions now, outside any trace (Dynamo cannot trace the
    compiling: :mod:`adamkit.kernels.lowbit_compiled` calls this at import)."""
    for function in (spec.element, spec.reduction):
        if function is not None:
            _compiled(function)


def stepper(spec: AlgorithmSpec, flags: tuple[bool, ...]) -> Any:
    """``(p, g, slots, hyper, k, flags) -> (p, s0, s1, s2)``: :func:`step` for a group whose
    padded ``flags`` (the engine's options after the spec's) are these."""
    mode = spec.reduction_mode(len(flags) > CAUTIOUS_FLAG and bool(flags[CAUTIOUS_FLAG]))

    def update(p, g, slots, hyper, k, flags):
        return step(spec, p, g, slots, hyper, k, flags, mode)

    return update


def step(
    spec: AlgorithmSpec,
    p: Tensor,
    g: Tensor,
    slots: list[Tensor],
    hyper: tuple[float, ...],
    k: tuple[Any, ...],
    flags: tuple[bool, ...],
    mode: int,
) -> tuple[Any, Any, Any, Any]:
    """The new (param, slot 0, slot 1, slot 2) of one tensor: ``spec``'s element on whole
    tensors with torch ops, ``k`` its first scalars (padded here), ``mode`` the spec's
    ``reduction_mode`` for the group."""
    element = _compiled(spec.element)
    k = tuple(k)[:4] + (0.0,) * (TENSOR_WIDTH - min(len(k), 4))
    if torch.compiler.is_compiling():  # Dynamo's symbolic floats: a comparison of them
        # (ADOPT's first call) is a SymBool, which torch.where cannot take; 0-d tensors
        k = tuple(torch.as_tensor(v, dtype=p.dtype, device=p.device) for v in k)
    new_p, s0, s1, s2, base, u, g_seen = element(p, g, *slots, hyper, k, flags)
    if mode == NO_REDUCTION:
        return new_p, s0, s1, s2
    n = p.numel()
    if mode == CAUTIOUS_COUNT:
        agrees = u * g_seen > 0
        mean = agrees.sum(dtype=torch.float64) / max(n, 1)
        scale = (1.0 / mean.clamp(min=MASK_FLOOR)).to(p.dtype) if n else 1.0
        return base - u * torch.where(agrees, scale, torch.zeros_like(u)), s0, s1, s2
    term = torch.as_tensor(_compiled(spec.reduction)(g_seen, s0, s1, s2, hyper, k, flags))
    total = term.expand(p.shape).sum(dtype=torch.float64).to(p.dtype)
    count = torch.tensor(float(n), dtype=p.dtype, device=p.device)
    k = (*k[:4], total, count)
    return element(p, g, *slots, hyper, k, flags)[:4]
