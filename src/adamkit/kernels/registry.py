"""Backends as records: what each can do, and the kernel it gives for an algorithm.

torch.optim's flags choose a backend *name* (:func:`choose_backend`): ``forloop`` (plain torch
ops, one tensor at a time: the ground truth), ``foreach`` (torch._foreach_* ops over lists),
``fused`` (one pass over memory, picked by device) or ``triton`` (the CUDA kernels on any
device, for running them on CPU tensors under ``TRITON_INTERPRET=1``). :func:`resolve` maps a
name, an algorithm and a device to the :class:`Backend` record that runs it. Its declared
capabilities are what the optimizers read (whether it computes half precision in float32
itself, keeps float32 state for half parameters, takes GradScaler's ``grad_scale``/
``found_inf``, accepts sparse gradients), instead of asking the kernel functions.

Two families of kernels: the written-out ones (Adam, SGD, RMSprop in :mod:`forloop`,
:mod:`foreach`, :mod:`fused_cpu`, :mod:`triton_kernels`) and those built from an algorithm
spec (:mod:`spec_kernels`: NAdam, RAdam, Adamax).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from ..algorithms import SPEC_BUILT

WRITTEN = ("adam", "sgd", "rmsprop")
ALGORITHMS = (*WRITTEN, *SPEC_BUILT)
Kernel = Callable[..., None]


@dataclass(frozen=True)
class Backend:
    """A backend and what it can do."""

    name: str  # the flag-level name: "forloop", "foreach", "fused" or "triton"
    algorithms: tuple[str, ...]
    devices: tuple[str, ...] | None  # device types it runs on; None: any
    make: Callable[[str], Kernel]  # algorithm -> its kernel
    handles_half: bool = False  # computes float16/bfloat16 parameters in float32 itself
    float32_state_for_half: bool = False  # half parameters keep float32 state (mixed precision)
    grad_scaler: bool = False  # unscales gradients and skips Inf steps itself
    sparse_grads: bool = False  # accepts sparse gradients

    def kernel(self, algorithm: str) -> Kernel:
        return _made(self, algorithm)


@functools.lru_cache(maxsize=64)
def _made(backend: Backend, algorithm: str) -> Kernel:
    return backend.make(algorithm)


def _module_kernel(module_name: str) -> Callable[[str], Kernel]:
    def make(algorithm: str) -> Kernel:
        import importlib

        module = importlib.import_module(f"{__package__}.{module_name}")
        return getattr(module, algorithm)

    return make


def _spec_kernel(backend: str, device_type: str) -> Callable[[str], Kernel]:
    def make(algorithm: str) -> Kernel:
        from . import spec_kernels

        return spec_kernels.kernel(algorithm, backend, device_type)

    return make


def triton_available() -> bool:
    """Whether the Triton kernels can be imported (the package ``triton`` is installed)."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


BACKENDS = (
    Backend("forloop", WRITTEN, None, _module_kernel("forloop"), sparse_grads=True),
    Backend("foreach", WRITTEN, None, _module_kernel("foreach")),
    Backend("fused", WRITTEN, ("cpu",), _module_kernel("fused_cpu")),
    Backend(
        "triton",
        WRITTEN,
        None,
        _module_kernel("triton_kernels"),
        handles_half=True,
        float32_state_for_half=True,
        grad_scaler=True,
    ),
    Backend("forloop", SPEC_BUILT, None, _spec_kernel("forloop", "any")),
    Backend("foreach", SPEC_BUILT, None, _spec_kernel("foreach", "any")),
    Backend("fused", SPEC_BUILT, ("cpu",), _spec_kernel("fused", "cpu")),
    Backend(
        "triton",
        SPEC_BUILT,
        None,
        _spec_kernel("triton", "cuda"),
        handles_half=True,
        float32_state_for_half=True,
        grad_scaler=True,
    ),
)


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


def fused_name(device_type: str) -> str:
    """The backend ``fused`` means on a device: numba on CPU, Triton on CUDA (when installed),
    else foreach, which gives the same results."""
    if device_type == "cpu":
        return "fused"
    if device_type == "cuda" and triton_available():
        return "triton"
    return "foreach"


@functools.lru_cache(maxsize=128)
def resolve(algorithm: str, backend: str, device_type: str) -> Backend:
    """The record that runs ``algorithm`` on ``backend`` (a flag-level name) for tensors on
    ``device_type``."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    if backend == "fused":
        backend = fused_name(device_type)
    for record in BACKENDS:
        if record.name == backend and algorithm in record.algorithms:
            if record.devices is None or device_type in record.devices:
                return record
    raise ValueError(
        f"unknown backend {backend!r}; expected 'forloop', 'foreach', 'fused' or 'triton'"
    )


def kernel(algorithm: str, backend: str, params: Sequence[Tensor] | str) -> Kernel:
    """The kernel function for ``algorithm`` on ``backend`` for tensors like ``params`` (or
    for the device type ``params`` names)."""
    if isinstance(params, str):
        device_type = params
    else:
        device_type = params[0].device.type if params else "cpu"
    return resolve(algorithm, backend, device_type).kernel(algorithm)
