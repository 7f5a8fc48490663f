"""Per-element quantities of an optimizer's last step, read from its state.

Nothing here re-runs the update: m̂, √v̂ and the effective learning rate come from the moments
the optimizer stored, which are the ones its last step used. Works for adamkit's optimizers and
for torch.optim's namesakes (same state format). Adam, the spec family (NAdam, RAdam, Adamax)
and Lion are read through their algorithm specs' ``intermediates``, the same per-element
function their kernels are built from, evaluated with torch ops; RMSprop and SGD by the small
functions below, Adafactor (whose second moment is factored) by :mod:`._adafactor`.

For a large group, summaries are computed on a fixed sample: evenly spaced blocks of contiguous
elements from each tensor, about ``max_elements`` per group in all; groups smaller than that
(and tensors less than twice their share) are used whole, so the numbers are exact.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..algorithms import SPECS
from ..algorithms._spec import BIAS_WIDTH
from ..algorithms._torch_ops import torch_compiled
from ..kernels._tensors import real_view
from ..kernels.lowbit_torch import dequantized_entry
from . import _adafactor, _sampling


@dataclass
class Elements:
    """Flat float64 vectors over (a sample of) a group's elements; None where it doesn't apply."""

    algorithm: str
    param: Tensor
    update: Tensor  # what the last step subtracted from φ (weight decay not included)
    grad: Tensor | None = None  # the gradient still in .grad (maximize: its negation)
    momentum: Tensor | None = None  # Adam's m̂, or the momentum buffer of SGD/RMSprop
    sqrt_v: Tensor | None = None  # Adam's √v̂, RMSprop's denominator without ε (see specs)
    effective_lr: Tensor | None = None  # α / (√v̂ + ε) per element
    slow_ema: Tensor | None = None  # AdEMAMix's slow EMA m2 (the spec's "exp_avg_slow" slot)
    group_values: dict[str, float] | None = None  # the spec's group_diagnostics
    eps: float = 0.0
    step: int | None = 0  # None: not known (torch.optim.SGD keeps no count)


def unwrap(optimizer: Any) -> torch.optim.Optimizer:
    """The optimizer inside wrappers that keep it as ``.optimizer`` (accelerate's
    ``AcceleratedOptimizer``, which is what a Hugging Face ``trainer.optimizer`` is;
    Lightning's ``LightningOptimizer``), or ``optimizer`` itself."""
    for _ in range(8):  # wrappers of wrappers, never a cycle
        if _known(optimizer):
            return optimizer
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    return optimizer


# torch.optim's classes and the algorithm each is (same state format as adamkit's).
_TORCH_CLASSES = (
    (torch.optim.Adam, "adam"),
    (torch.optim.AdamW, "adam"),
    (torch.optim.SGD, "sgd"),
    (torch.optim.RMSprop, "rmsprop"),
    (torch.optim.NAdam, "nadam"),
    (torch.optim.RAdam, "radam"),
    (torch.optim.Adamax, "adamax"),
    *(((torch.optim.Adafactor, "adafactor"),) if hasattr(torch.optim, "Adafactor") else ()),
)
ALGORITHMS = ("sgd", *SPECS, "adafactor")
SLOW_EMA = "exp_avg_slow"  # a slot shown on its own beside m̂ (AdEMAMix's m2)


def _known(optimizer: Any) -> bool:
    if getattr(optimizer, "algorithm", None) in ALGORITHMS:
        return True
    return isinstance(optimizer, tuple(cls for cls, _ in _TORCH_CLASSES))


def algorithm_of(optimizer: torch.optim.Optimizer) -> str:
    """The algorithm of adamkit's optimizers and torch.optim's namesakes ('adam', 'sgd',
    'rmsprop', 'nadam', 'radam', 'adamax', 'adafactor')."""
    name = getattr(optimizer, "algorithm", None)
    if name in ALGORITHMS:
        return name
    for cls, algorithm in _TORCH_CLASSES:
        if isinstance(optimizer, cls):
            return algorithm
    raise TypeError(
        "diagnostics support Adam, AdamW, SGD, RMSprop, NAdam, RAdam, Adamax and Adafactor "
        "(adamkit or torch.optim) and adamkit's Lion, AdEMAMix, ScheduleFreeAdamW, ADOPT and "
        "StableAdamW; got "
        f"{type(optimizer).__name__}"
    )


def _flat(t: Tensor, share: int) -> Tensor:
    """The sample of ``t`` that :func:`adamkit.diagnostics._sampling.blocks` describes, as a
    flat (real) view."""
    flat = real_view(t.detach()).reshape(-1)
    layout = _sampling.blocks(flat.numel(), share)
    if layout is None:
        return flat
    strided = flat.as_strided(
        (layout.count, layout.length), (layout.spacing, 1), flat.storage_offset()
    )
    return strided.reshape(-1)


def _value(x: Any) -> float:
    return float(x.item()) if isinstance(x, Tensor) else float(x)


def _gather(tensors: list[Tensor | None], plan: _sampling.Sample) -> Tensor | None:
    """The samples of all tensors, concatenated, in float64 (None if any tensor is missing):
    one numba call for CPU tensors, else torch views."""
    if any(t is None for t in tensors):
        return None
    gathered = _sampling.gather_cpu(tensors, plan)
    if gathered is not None:
        return gathered
    flats = [_flat(t, share) for t, share in zip(tensors, plan.shares, strict=True)]
    return torch.cat(flats).double()


def group_elements(
    algorithm: str,
    group: dict[str, Any],
    state: dict[Tensor, dict[str, Any]],
    params: list[Tensor] | None = None,
    max_elements: int = 1 << 16,
    steps_taken: int | None = None,
) -> Elements | None:
    """The per-element quantities of ``params`` (default: the group's stepped params).

    Samples are gathered per tensor and concatenated first, so the arithmetic runs once per
    group, not once per tensor.
    """
    # Stepped params: those with state (SGD without momentum keeps none: those with a grad).
    params = [
        p
        for p in (params or group["params"])
        if state.get(p) or (algorithm == "sgd" and p.grad is not None)
    ]
    sizes = [real_view(p).numel() for p in params]
    if sum(sizes) == 0:
        return None
    plan = _sampling.sample(sizes, max_elements)
    # Low-memory state (8-bit codes, bfloat16) is read as float32 values.
    states = [dequantized_entry(state.get(p, {})) for p in params]
    key = lambda name: [st.get(name) for st in states]  # noqa: E731
    grads = [p.grad if p.grad is not None and not p.grad.is_sparse else None for p in params]
    grad = _gather(grads, plan)
    if grad is not None and group.get("maximize"):
        grad = -grad
    steps = [int(_value(st.get("step", 0))) for st in states]
    e = Elements(
        algorithm=algorithm,
        param=_gather(params, plan),
        update=torch.zeros(0),
        grad=grad,
        eps=0.0 if algorithm == "adafactor" else float(group.get("eps", 0.0)),  # (a pair)
        # SGD and Lion keep no step count in their state (torch's and lion-pytorch's
        # format): the optimizer's own count.
        step=max(steps) if algorithm == "adafactor" or SPECS[algorithm].counted else steps_taken,
    )
    lr = _value(group["lr"])
    if algorithm == "rmsprop":
        _rmsprop(e, group, lr, key, plan)
    elif algorithm == "sgd":
        _sgd(e, group, lr, key, plan)
    elif algorithm == "adafactor":
        _adafactor.elements(e, group, params, states, plan)
    else:
        _from_spec(e, SPECS[algorithm], group, lr, key, plan, states)
    return e


def _from_spec(e: Elements, spec, group, lr: float, key, plan: _sampling.Sample, states) -> None:
    """m̂, the scale, the effective lr and the update from the spec's own ``intermediates``
    (evaluated with torch ops on the samples), with each tensor's scalars from its counters by
    the spec's ``tensor_scalars``: no copy of the algorithm's math here."""
    n = sum(plan.lengths)
    zeros = torch.zeros(n, dtype=torch.float64)
    slots = [_gather(key(name), plan) for name in spec.tensor_state]  # None: a slot off
    slots = [zeros if t is None else t for t in slots] + [zeros] * (3 - len(slots))
    scalars = spec.group_scalars(group, np.dtype(np.float64))
    bias = scalars.bias + (0.0,) * (BIAS_WIDTH - len(scalars.bias))
    steps = torch.tensor([_value(st.get("step", 0)) for st in states], dtype=torch.float64)
    aux = (
        torch.tensor([_value(st[spec.scalar_state]) for st in states], dtype=torch.float64)
        if spec.scalar_state
        else torch.zeros_like(steps)
    )
    k = _spec_functions(spec)[0](steps, aux, bias)
    lengths = torch.tensor(plan.lengths)
    k = tuple(
        torch.repeat_interleave(torch.as_tensor(v, dtype=torch.float64).expand(len(steps)), lengths)
        for v in k
    )
    grad = e.grad if e.grad is not None else zeros
    first, scale, e.effective_lr, e.update = _spec_functions(spec)[1](
        grad, *slots, scalars.hyper, k, scalars.flags, lr
    )
    e.momentum, e.sqrt_v = first, scale  # (a scale of None: the algorithm has none)
    if SLOW_EMA in spec.tensor_state:
        e.slow_ema = slots[spec.tensor_state.index(SLOW_EMA)]
    if spec.group_diagnostics is not None:
        e.group_values = spec.group_diagnostics(group)


@functools.lru_cache(maxsize=16)
def _spec_functions(spec) -> tuple[Any, Any]:
    return torch_compiled(spec.tensor_scalars), torch_compiled(spec.intermediates)


def _rmsprop(e: Elements, group, lr: float, key, plan: _sampling.Sample) -> None:
    v = _gather(key("square_avg"), plan)
    if group.get("centered"):
        v = v - _gather(key("grad_avg"), plan) ** 2
    e.sqrt_v = v.sqrt()
    e.effective_lr = lr / (e.sqrt_v + group["eps"])
    buf = _gather(key("momentum_buffer"), plan) if group.get("momentum", 0) > 0 else None
    if buf is not None:
        e.momentum, e.update = buf, lr * buf
    else:
        e.update = e.effective_lr * e.grad if e.grad is not None else torch.zeros_like(v)


def _sgd(e: Elements, group, lr: float, key, plan: _sampling.Sample) -> None:
    n = sum(plan.lengths)
    buf = _gather(key("momentum_buffer"), plan) if group.get("momentum", 0) else None
    if buf is not None:
        nesterov = group.get("nesterov") and e.grad is not None
        e.momentum = buf
        e.update = lr * (e.grad + group["momentum"] * buf if nesterov else buf)
    else:
        e.update = lr * e.grad if e.grad is not None else torch.zeros(n, dtype=torch.float64)
    e.effective_lr = torch.full((n,), lr, dtype=torch.float64)
