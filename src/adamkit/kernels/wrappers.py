"""Kernel wrappers that adapt the tensors a kernel sees: half precision, DTensor shards.

Kernel arguments are lists in the order (params, grads, *state lists, ...), one entry per
parameter (or empty), then keyword hyperparameters. grads are read only; a ``None`` state entry
(SGD's momentum buffer before its first step) may be filled in by the kernel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

Kernel = Callable[..., None]

HALF_DTYPES = (torch.float16, torch.bfloat16)


def half_in_float32(kernel: Kernel) -> Kernel:
    """Wrap ``kernel`` so float16/bfloat16 tensors are computed in float32.

    torch.optim computes half-precision parameters in half precision, where ε = 1e-8 rounds
    to 0 and a zero gradient gives 0/0 = NaN. Here each half tensor of a call is copied to
    float32, the kernel runs on the copies, and parameters and state are written back (state
    keeps the parameter's dtype, as in torch). Kernel arguments are lists in the order
    (params, grads, *state, ...); grads are read only, and a ``None`` state entry (SGD's
    not-yet-created momentum buffer) that the kernel fills in comes back in the param's dtype.
    """

    @functools.wraps(kernel)
    def run(params: Sequence[Tensor], *lists: Any, **hyper: Any) -> None:
        half = [i for i, p in enumerate(params) if p.dtype in HALF_DTYPES]
        if not half:
            kernel(params, *lists, **hyper)
            return
        rest = [i for i in range(len(params)) if i not in half]
        all_lists = [params, *lists]
        for idx, upcast in ((rest, False), (half, True)):
            if not idx:
                continue
            picked = _select(all_lists, idx)
            args = [[_float32(t) for t in ts] for ts in picked] if upcast else picked
            kernel(*args, **hyper)
            for position, (full, updated) in enumerate(zip(all_lists, args, strict=True)):
                if position == 1 or len(full) != len(params):
                    continue  # grads are read only; empty lists hold nothing
                for j, i in enumerate(idx):
                    if updated[j] is full[i]:
                        continue
                    if full[i] is None:
                        full[i] = updated[j].to(params[i].dtype)
                    else:
                        full[i].copy_(updated[j])

    return run


def _select(lists: list[Any], idx: list[int]) -> list[list[Any]]:
    """The entries ``idx`` of every list that has one per parameter (others are passed empty)."""
    n = len(lists[0])
    return [[ts[i] for i in idx] if len(ts) == n else ts for ts in lists]


def _float32(t: Tensor | None) -> Tensor | None:
    return t.float() if t is not None and t.dtype in HALF_DTYPES else t


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return None
    return DTensor


def to_local(t: Any) -> Any:
    """A DTensor's local shard (the same storage); anything else as it is."""
    dtensor = _dtensor_type()
    return t.to_local() if dtensor is not None and isinstance(t, dtensor) else t


def dtensor_like(local: Tensor, template: Tensor) -> Tensor:
    """``local`` (a rank's shard) as a DTensor laid out like DTensor ``template``."""
    dtensor = _dtensor_type()
    assert dtensor is not None
    return dtensor.from_local(
        local, template.device_mesh, template.placements, shape=template.shape,
        stride=template.stride(),
    )  # fmt: skip


def on_local_shards(kernel: Kernel) -> Kernel:
    """Wrap ``kernel`` so DTensor parameters (FSDP2, tensor parallel) are updated through their
    local shards: the elementwise update of a shard needs nothing from other ranks, and the
    fused kernels then run on plain local tensors. A state tensor the kernel creates (SGD's
    first momentum buffer) is wrapped back into a DTensor laid out like its parameter."""
    dtensor = _dtensor_type()

    @functools.wraps(kernel)
    def run(params: Sequence[Tensor], *lists: Any, **hyper: Any) -> None:
        if dtensor is None or not any(isinstance(p, dtensor) for p in params):
            kernel(params, *lists, **hyper)
            return
        n = len(params)
        local = [
            [t.to_local() if isinstance(t, dtensor) else t for t in ts] if len(ts) == n else ts
            for ts in [params, *lists]
        ]
        kernel(*local, **hyper)
        for full, updated in zip([params, *lists], local, strict=True):
            if len(full) != n:
                continue
            for i, (t, u) in enumerate(zip(full, updated, strict=True)):
                if t is None and u is not None and isinstance(params[i], dtensor):
                    full[i] = dtensor_like(u, params[i])

    return run


class Adapted:
    """A kernel and its form under :func:`on_local_shards` (and :func:`half_in_float32` when
    ``upcast_half``). :meth:`for_params` picks the plain kernel when every parameter is a
    plain Tensor or Parameter and (with ``upcast_half``) not half precision: optimizers pick
    on every step, and each wrapper layer costs microseconds on a small model."""

    # Exact types (a set lookup: isinstance(p, DTensor) costs ~0.15 µs per parameter). Other
    # Tensor subclasses, DTensor among them, take the wrapped form, which checks properly.
    PLAIN_TYPES = frozenset({Tensor, torch.nn.Parameter})

    def __init__(self, kernel: Kernel, *, upcast_half: bool) -> None:
        self.kernel = kernel
        self.full = on_local_shards(half_in_float32(kernel) if upcast_half else kernel)
        self._special_dtypes = frozenset(HALF_DTYPES if upcast_half else ())

    def for_params(self, params: Sequence[Tensor]) -> Kernel:
        plain, special = self.PLAIN_TYPES, self._special_dtypes
        for p in params:
            if type(p) not in plain or p.dtype in special:
                return self.full
        return self.kernel
