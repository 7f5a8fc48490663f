"""Choose a kernel by algorithm, device and the user's ``foreach``/``fused`` flags.

Backends: ``forloop`` (plain torch ops, one tensor at a time: the ground truth),
``foreach`` (torch._foreach_* ops over lists) and ``fused`` (one pass over memory per tensor;
the device-specific implementation is picked here).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from . import foreach as _foreach
from . import forloop as _forloop

ALGORITHMS = ("adam", "sgd", "rmsprop")
Kernel = Callable[..., None]


def choose_backend(
    *, foreach: bool | None, fused: bool | None, differentiable: bool, capturable: bool = False
) -> str:
    """Map torch.optim's flags to a backend name.

    ``fused=True`` → fused; ``foreach=True`` → foreach; ``foreach=False`` → forloop;
    ``differentiable=True`` or ``capturable=True`` (not fused) → forloop, the only path that
    keeps autograd history or keeps the step count on the device. With neither flag set, the
    default is the fastest correct backend for the device.
    """
    if fused:
        return "fused"
    if differentiable or capturable or foreach is False:
        return "forloop"
    if foreach:
        return "foreach"
    return default_backend()


def default_backend() -> str:
    """The backend used when the user sets neither ``foreach`` nor ``fused``: the fused one."""
    return "fused"


def _fused_module(device_type: str) -> ModuleType:
    if device_type == "cpu":
        from . import fused_cpu  # imports numba: only when a fused kernel is used

        return fused_cpu
    # No single-pass kernel for this device yet: the foreach kernel gives the same results.
    return _foreach


def kernel(algorithm: str, backend: str, params: Sequence[Tensor]) -> Kernel:
    """The kernel function for ``algorithm`` on ``backend`` for tensors like ``params``."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    module: Any
    if backend == "forloop":
        module = _forloop
    elif backend == "foreach":
        module = _foreach
    elif backend == "fused":
        device_type = params[0].device.type if params else "cpu"
        module = _fused_module(device_type)
    else:
        raise ValueError(f"unknown backend {backend!r}; expected 'forloop', 'foreach' or 'fused'")
    return getattr(module, algorithm)


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
