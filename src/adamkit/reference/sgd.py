r"""Stochastic gradient descent with momentum (heavy ball or Nesterov), in NumPy float64.

This is the first-moment half of Adam on its own, in torch.optim's convention::

    g_t ← -g_t                                     if maximize
    g_t ← g_t + λ·φ_{t-1}                          L2 weight decay λ
    b_1 = g_1                                      first step: the buffer starts as the gradient
    b_t = μ·b_{t-1} + (1-τ)·g_t                    momentum μ, dampening τ
    d_t = g_t + μ·b_t   (Nesterov)   or   d_t = b_t   (heavy ball)   or   d_t = g_t   (μ = 0)
    φ_t = φ_{t-1} - α·d_t

Conventions other libraries do differently: the buffer starts as ``g_1`` (not 0, and
dampening is not applied on the first step), and the learning rate multiplies the buffer
rather than being folded into it (Sutskever et al. write ``b_t = μ·b_{t-1} + α·g_t``; the two
agree while α is constant). Unlike Adam, the momentum buffer is not bias-corrected.

Example — heavy-ball momentum accumulates a constant gradient:

>>> import numpy as np
>>> from adamkit.reference import sgd
>>> hyper = sgd.SGDHyper(lr=0.1, momentum=0.9)
>>> param, state = np.zeros(1), sgd.init(np.zeros(1))
>>> for _ in range(3):
...     param, state, aux = sgd.step(param, np.ones(1), state, hyper)
>>> np.round(state.buf, 6)  # 1, 1.9, 2.71
array([2.71])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._common import as_real, like_input


@dataclass(frozen=True)
class SGDHyper:
    """Hyperparameters of SGD with torch.optim's defaults (α = 1e-3, no momentum)."""

    lr: float = 1e-3
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    maximize: bool = False


class SGDState(NamedTuple):
    """SGD's state for one parameter: step count and the momentum buffer (None before step 1)."""

    step: int
    buf: np.ndarray | None


class SGDAux(NamedTuple):
    """Intermediates of one step."""

    direction: np.ndarray  # d_t
    update: np.ndarray  # α·d_t, what is subtracted from φ


def init(param: np.ndarray) -> SGDState:
    """Empty state: the momentum buffer is created from the first gradient."""
    return SGDState(step=0, buf=None)


def step(
    param: np.ndarray, grad: np.ndarray, state: SGDState, hyper: SGDHyper
) -> tuple[np.ndarray, SGDState, SGDAux]:
    """One SGD step for one parameter array. Pure: inputs are not modified."""
    phi, g = as_real(param), as_real(grad)
    if hyper.maximize:
        g = -g
    if hyper.weight_decay != 0.0:
        g = g + hyper.weight_decay * phi

    buf = state.buf
    direction = g
    if hyper.momentum != 0.0:
        if buf is None:
            buf = g.copy()
        else:
            buf = hyper.momentum * buf + (1.0 - hyper.dampening) * g
        direction = g + hyper.momentum * buf if hyper.nesterov else buf

    update = hyper.lr * direction
    phi = phi - update
    return like_input(phi, param), SGDState(state.step + 1, buf), SGDAux(direction, update)
