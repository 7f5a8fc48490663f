"""Backends as records: what each can do, and the kernel it gives for an algorithm.

torch.optim's flags choose a backend *name* (:func:`choose_backend`): ``forloop`` (plain torch
ops, one tensor at a time: the ground truth), ``foreach`` (torch._foreach_* ops over lists),
``fused`` (one pass over memory, picked by device) or ``triton`` (the CUDA kernels on any
device, for running them on CPU tensors under ``TRITON_INTERPRET=1``). :func:`resolve` maps a
name, an algorithm and a device to the :class:`Backend` record that runs it. Its declared
capabilities are what the optimizers read (whether it computes half precision in float32
itself, keeps float32 state for half parameters, takes GradScaler's ``grad_scale``/
``found_inf``, accepts sparse gradients), instead of asking the kernel functions.

What ``fused`` (and the default, neither flag set) means on a device follows one rule: a
kernel becomes a device's default only after the parity suite (``adamkit check``) has passed
on that device. On the CPU that is adamkit's numba kernels (CI runs the suite). On CUDA it is
torch's own fastest kernel until a GPU run has passed: torch's fused kernels for Adam, AdamW
and SGD (:mod:`torch_fused`), torch's foreach order for the others; adamkit's Triton kernels
are opt-in, by ``set_default("cuda", "triton")`` or ``ADAMKIT_CUDA_KERNELS=triton`` in the
environment (see :func:`set_default`).

Every kernel is built from an algorithm spec (:mod:`spec_kernels`), except torch's own fused
kernels for Adam, AdamW and SGD (:mod:`torch_fused`), called with the same signature.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from ..algorithms import SPEC_BUILT

ALGORITHMS = SPEC_BUILT
TORCH_FUSED = ("adam", "sgd")  # the algorithms torch has a fused CUDA kernel for
Kernel = Callable[..., None]


@dataclass(frozen=True)
class Backend:
    """A backend and what it can do."""

    name: str  # "forloop", "foreach", "fused" (numba), "triton" or "torch_fused"
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
    Backend(  # torch's own fused kernels, called as torch.optim calls them
        "torch_fused",
        TORCH_FUSED,
        None,
        _module_kernel("torch_fused"),
        handles_half=True,
        grad_scaler=True,
    ),
    # torch's functional updates take sparse gradients (SGD's; Adam densifies them first)
    Backend("forloop", SPEC_BUILT, None, _spec_kernel("forloop", "any"), sparse_grads=True),
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


# The kernels "fused" means on each device type, and the choices: "numba" (adamkit's CPU
# kernels), "torch" (torch's own fused kernel where it has one, else its foreach order),
# "triton" (adamkit's Triton kernels: opt-in on CUDA until the parity suite has passed on a
# GPU; on the CPU only under Triton's interpreter, TRITON_INTERPRET=1, for testing).
KERNEL_CHOICES = {"cpu": ("numba", "triton"), "cuda": ("torch", "triton")}
ENV_VARIABLE = "ADAMKIT_CUDA_KERNELS"


def _checked(device_type: str, kernels: str, where: str) -> str:
    choices = KERNEL_CHOICES.get(device_type)
    if choices is None:
        raise ValueError(
            f"{where}: unknown device type {device_type!r}; expected one of "
            f"{', '.join(map(repr, KERNEL_CHOICES))}"
        )
    if kernels not in choices:
        raise ValueError(
            f"{where}: {kernels!r} is not a choice of kernels for {device_type!r}; expected one "
            f"of {', '.join(map(repr, choices))}"
        )
    return kernels


_DEFAULTS = {
    "cpu": "numba",
    "cuda": _checked("cuda", os.environ.get(ENV_VARIABLE) or "torch", ENV_VARIABLE),
}
_ON_CHANGE: list[Callable[[], None]] = []


def get_default(device_type: str) -> str:
    """The kernels that ``fused`` and the default (neither flag set) run on ``device_type``:
    "numba" on the CPU; "torch" or "triton" on CUDA (see :func:`set_default`)."""
    return _DEFAULTS.get(device_type, "torch")


def set_default(device_type: str, kernels: str) -> None:
    """Choose the kernels that ``fused=True`` and the default run on ``device_type``.

    On ``"cuda"``: ``"torch"`` (the default: torch's fused kernels for Adam, AdamW and SGD,
    torch's foreach order for RMSprop, NAdam, RAdam, Adamax and for low-memory state the torch
    ops path) or ``"triton"`` (adamkit's Triton kernels for all of them; they become the
    default once the parity suite has passed on a GPU). The environment variable
    ``ADAMKIT_CUDA_KERNELS`` sets the same at import. On ``"cpu"``: ``"numba"`` (the
    default) or ``"triton"`` (only under Triton's interpreter, ``TRITON_INTERPRET=1``: how
    the Triton kernels are tested without a GPU). Set it before the first step: a
    parameter's state is made for the kernels that run it (Triton keeps float32 state for
    half-precision parameters, torch's kernels keep the parameter's dtype).

    Example:
        >>> from adamkit.kernels import registry
        >>> before = registry.get_default("cuda")
        >>> registry.set_default("cuda", "torch")
        >>> [registry.resolve(name, "fused", "cuda").name for name in ("adam", "nadam")]
        ['torch_fused', 'foreach']
        >>> registry.set_default("cuda", "triton")
        >>> registry.get_default("cuda")
        'triton'
        >>> registry.set_default("cuda", before)
    """
    _DEFAULTS[device_type] = _checked(device_type, kernels, "set_default")
    resolve.cache_clear()
    for clear in _ON_CHANGE:
        clear()


def on_change(clear: Callable[[], None]) -> None:
    """Call ``clear`` whenever :func:`set_default` changes a choice (caches of kernels chosen
    by device, above this layer, register their ``cache_clear``)."""
    _ON_CHANGE.append(clear)


def triton_opted_in(device_type: str = "cuda") -> bool:
    """Whether ``fused`` runs adamkit's Triton kernels on ``device_type`` (opted in by
    :func:`set_default`, and triton installed)."""
    return get_default(device_type) == "triton" and triton_available()


def fused_name(device_type: str) -> str:
    """The backend ``fused`` means on a device: numba on CPU; on CUDA torch's own fused
    kernels; Triton where opted in (:func:`set_default`); foreach, which gives the same
    results, elsewhere."""
    if triton_opted_in(device_type):
        return "triton"
    if device_type == "cpu":
        return "fused"
    if device_type == "cuda":
        return "torch_fused"
    return "foreach"


@functools.lru_cache(maxsize=128)
def resolve(algorithm: str, backend: str, device_type: str) -> Backend:
    """The record that runs ``algorithm`` on ``backend`` (a flag-level name) for tensors on
    ``device_type``."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    if backend == "fused":
        backend = fused_name(device_type)
    if backend == "torch_fused" and algorithm not in TORCH_FUSED:
        backend = "foreach"  # torch has no fused kernel for it: its foreach order
    for record in BACKENDS:
        if record.name == backend and algorithm in record.algorithms:
            if record.devices is None or device_type in record.devices:
                return record
    raise ValueError(
        f"unknown backend {backend!r}; expected 'forloop', 'foreach', 'fused', 'triton' or "
        "'torch_fused'"
    )


def kernel(algorithm: str, backend: str, params: Sequence[Tensor] | str) -> Kernel:
    """The kernel function for ``algorithm`` on ``backend`` for tensors like ``params`` (or
    for the device type ``params`` names)."""
    if isinstance(params, str):
        device_type = params
    else:
        device_type = params[0].device.type if params else "cpu"
    return resolve(algorithm, backend, device_type).kernel(algorithm)
