"""Choose a kernel by algorithm, device and the user's ``foreach``/``fused`` flags.

Backends: ``forloop`` (plain torch ops, one tensor at a time: the ground truth),
``foreach`` (torch._foreach_* ops over lists) and ``fused`` (one pass over memory: numba on
CPU, Triton on CUDA; picked here by device). ``triton`` names the Triton kernels on any device,
for running them on CPU tensors under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from torch import Tensor

from ..algorithms import SPEC_BUILT
from . import foreach as _foreach
from . import forloop as _forloop

ALGORITHMS = ("adam", "sgd", "rmsprop", *SPEC_BUILT)
Kernel = Callable[..., None]


def choose_backend(
    *, foreach: bool | None, fused: bool | None, differentiable: bool, capturable: bool = False
) -> str:
    """Map torch.optim's flags to a backend name.

    ``fused=True`` → fused; ``foreach=True`` → foreach; ``foreach=False`` → forloop;
    ``fused=False`` without ``foreach`` → forloop (as in torch.optim, where an explicit
    ``fused=False`` skips the default choice); ``differentiable=True`` or ``capturable=True``
    (not fused) → forloop, the only path that keeps autograd history or keeps the step count
    on the device. With neither flag set (both None), the default is the fastest correct
    backend for the device.
    """
    if fused:
        return "fused"
    if differentiable or capturable or foreach is False:
        return "forloop"
    if foreach:
        return "foreach"
    if fused is False:
        return "forloop"
    return default_backend()


def default_backend() -> str:
    """The backend used when the user sets neither ``foreach`` nor ``fused``: the fused one."""
    return "fused"


def triton_available() -> bool:
    """Whether the Triton kernels can be imported (the package ``triton`` is installed)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _fused_module(device_type: str) -> ModuleType:
    if device_type == "cpu":
        from . import fused_cpu  # imports numba: only when a fused kernel is used

        return fused_cpu
    if device_type == "cuda" and triton_available():
        from . import triton_kernels

        return triton_kernels
    # No single-pass kernel for this device: the foreach kernel gives the same results.
    return _foreach


def kernel(algorithm: str, backend: str, params: Sequence[Tensor] | str) -> Kernel:
    """The kernel function for ``algorithm`` on ``backend`` for tensors like ``params`` (or
    for the device type ``params`` names)."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    if algorithm in SPEC_BUILT:  # built from its spec, for every backend
        from . import spec_kernels

        if isinstance(params, str):
            device_type = params
        else:
            device_type = params[0].device.type if params else "cpu"
        return spec_kernels.kernel(algorithm, backend, device_type)
    module: Any
    if backend == "forloop":
        module = _forloop
    elif backend == "foreach":
        module = _foreach
    elif backend == "fused":
        if isinstance(params, str):
            device_type = params
        else:
            device_type = params[0].device.type if params else "cpu"
        module = _fused_module(device_type)
    elif backend == "triton":  # the CUDA kernels on any device (CPU: Triton's interpreter)
        from . import triton_kernels

        module = triton_kernels
    else:
        raise ValueError(
            f"unknown backend {backend!r}; expected 'forloop', 'foreach', 'fused' or 'triton'"
        )
    return getattr(module, algorithm)
