"""bfloat16/float16 params with torch-format state stepped in place by the fused CPU
low-memory kernel (:mod:`adamkit.kernels._numba_lowbit`), rounded to nearest: which of a
group's params it takes, and the scratch counters of the specs that keep none."""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..algorithms import AlgorithmSpec
from . import lowbit, wrappers
from .registry import choose_backend


def half_in_place(
    spec: AlgorithmSpec,
    group: dict[str, Any],
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: Sequence[dict[str, Any]],
) -> list[int]:
    """The indices of the float16/bfloat16 ``params`` of ``group`` whose torch-format state
    ("fp32": the moments in the param's dtype, or float32) the fused CPU kernel steps in place,
    rounded to nearest: the same float32 arithmetic, rounded once, as the group's fp32 kernel
    on float32 copies (:func:`adamkit.kernels.wrappers.half_in_float32`), where that kernel is
    the numba one (the group fused, or the default) and not under torch.compile. Plain
    tensors listed once in the group, with a dense grad of their dtype and the slots the
    group's flags switch on (for SGD, Lion and Schedule-Free, whose torch-format state has no
    step, the kernel counts :func:`counted_states`' scratch steps). A pass before the update
    (StableAdamW's, ``cautious``'s) is the copies' too: the cautious count is an integer, and
    StableAdamW's terms are added in the same 256-element blocks by both kernels (a tensor
    either kernel splits over the threads adds its blocks in another grouping)."""
    half = wrappers.HALF_DTYPES
    for p in params:  # a plain loop: this runs every step, for every group
        if p.dtype in half:
            break
    else:
        return []
    if torch.compiler.is_compiling() or not lowbit.fuses(spec):  # (for Dynamo)
        return []
    backend = choose_backend(
        foreach=group.get("foreach"), fused=group.get("fused"),
        differentiable=bool(group.get("differentiable")), capturable=bool(group.get("capturable")),
    )  # fmt: skip
    if backend != "fused" or lowbit.fused_kernel("cpu") is not lowbit._numba_fused:
        return []
    plain, counts = wrappers.Adapted.PLAIN_TYPES, collections.Counter(map(id, group["params"]))
    aux_key = spec.scalar_state
    stored = lowbit.group_slots(spec, group)
    if not spec.counted:  # (read, not written, by _row)
        states = [{**state, "step": _STARTED} for state in states]
    return [
        i
        for i, (p, g, state) in enumerate(zip(params, grads, states, strict=True))
        if p.dtype in half
        and type(p) in plain
        and counts[id(p)] == 1
        and not g.is_sparse
        and lowbit._row(spec, p, g, state, "fp32", aux_key, 0, "nearest", stored) is not None
    ]


_STARTED = torch.ones((), dtype=torch.float64)


def counted_states(spec: AlgorithmSpec, states: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``states`` as :func:`half_in_place`'s step reads them. An uncounted spec's torch-format
    state (SGD, Lion, Schedule-Free) has no step: each of these shallow copies has a scratch
    one, 1, which the kernel advances to 2 before the element reads it (a count of 1 there
    would mean "the slots start now"; the half path takes only states whose slots have
    started). The step then drops it, as the copies' path keeps no count (nor advances a
    "step" left by low-memory state). Nearest rounding draws no random numbers, so the count
    seeds nothing."""
    if spec.counted:
        return list(states)
    return [{**state, "step": torch.ones((), dtype=torch.float64)} for state in states]
