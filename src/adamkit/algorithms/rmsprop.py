r"""RMSprop (Hinton, 2012), as torch.optim.RMSprop computes it.

The equations are :mod:`adamkit.reference.rmsprop`'s. This spec holds the hyperparameter
checks, the state keys and the per-element update every fused kernel runs; the for-loop and
foreach kernels are torch's own functional update. RMSprop has no bias correction: its step
counter is only counted, and ε is added after the square root of v (not of a bias-corrected
v̂). ``grad_avg`` exists only when centered, ``momentum_buffer`` only with momentum > 0.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch.optim.rmsprop import rmsprop as torch_rmsprop

from . import _checks
from ._ops import lerp, sqrt, where
from ._spec import AlgorithmSpec, GroupScalars, Hyperparameter, complement, rounded


class Hyper(NamedTuple):  # h: the group's scalars in the data's dtype
    lr: float
    alpha: float
    one_minus_alpha: float
    alpha_complement: float  # 1 - (1-α) in the data's dtype: torch's lerp of grad_avg
    eps: float
    weight_decay: float
    momentum: float


def element(p, g, s0, s1, s2, h, k, f):
    # Slots: square_avg, grad_avg (centered), momentum_buffer (momentum > 0); the options
    # are selects between values computed either way (branches stop vectorization).
    lr, alpha, one_minus_alpha, alpha_complement, eps, wd, momentum = (
        h[0], h[1], h[2], h[3], h[4], h[5], h[6],
    )  # fmt: skip
    centered, maximize, l2, has_momentum = f[0], f[1], f[2], f[3]
    g = where(maximize, -g, g)
    g = where(l2, g + wd * p, g)
    v = s0 * alpha + one_minus_alpha * g * g
    g_avg = lerp(s1, g, one_minus_alpha, alpha_complement)
    avg = sqrt(where(centered, v - g_avg * g_avg, v)) + eps
    direction = g / avg
    buf = s2 * momentum + direction
    u = lr * where(has_momentum, buf, direction)
    return p - u, v, g_avg, buf, p, u, g


def advance(step, aux, b):
    return step + 1.0, aux


def tensor_scalars(step, aux, b):
    return 0.0, 0.0, 0.0, 0.0  # no bias correction


def group_scalars(group, dtype):
    alpha, wd, momentum = float(group["alpha"]), float(group["weight_decay"]), group["momentum"]
    h = Hyper(
        float(group["lr"]), alpha, 1 - alpha, complement(dtype, 1 - alpha), group["eps"], wd,
        momentum,
    )  # fmt: skip
    flags = (bool(group["centered"]), bool(group["maximize"]), wd != 0, momentum > 0)
    return GroupScalars(rounded(dtype, *h), (), flags)


def torch_step(params, grads, states, steps, aux, group: dict[str, Any], **flags):
    torch_rmsprop(
        params, grads, states[0], states[1], states[2], steps, maximize=group["maximize"],
        alpha=group["alpha"], eps=group["eps"], weight_decay=group["weight_decay"],
        momentum=group["momentum"], centered=group["centered"], **flags,
    )  # fmt: skip


SPEC = AlgorithmSpec(
    name="rmsprop",
    torch_name="RMSprop",
    hyperparameters=(
        Hyperparameter("lr", 1e-2, _checks.nonnegative),
        Hyperparameter("eps", 1e-8, _checks.nonnegative),
        Hyperparameter(
            "alpha", 0.99, lambda name, v: _checks.unit_interval(name, v, upper_inclusive=True)
        ),
        Hyperparameter("weight_decay", 0, _checks.nonnegative),
        Hyperparameter("momentum", 0, _checks.nonnegative),
        Hyperparameter("centered", False),
    ),
    tensor_state=("square_avg", "grad_avg", "momentum_buffer"),
    slot_flags=(None, 0, 3),  # grad_avg when centered, momentum_buffer with momentum
    slot_options=(None, "centered", "momentum"),  # momentum ≥ 0: on when > 0
    element=element,
    group_scalars=group_scalars,
    advance=advance,
    tensor_scalars=tensor_scalars,
    torch_functional=torch_step,
)
