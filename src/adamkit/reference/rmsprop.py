r"""RMSProp (Tieleman & Hinton, 2012) in NumPy float64, in torch.optim's convention.

This is the second-moment half of Adam on its own, with no bias correction::

    g_t ← -g_t                                     if maximize
    g_t ← g_t + λ·φ_{t-1}                          L2 weight decay λ
    v_t = a·v_{t-1} + (1-a)·g_t²                   a = ``alpha`` (smoothing constant)
    ḡ_t = a·ḡ_{t-1} + (1-a)·g_t                    centered only
    s_t = √(v_t - ḡ_t²) + ε   (centered)   or   s_t = √v_t + ε
    b_t = μ·b_{t-1} + g_t / s_t                    momentum μ > 0 only
    φ_t = φ_{t-1} - α·b_t     (μ > 0)      or   φ_t = φ_{t-1} - α·g_t / s_t

Conventions other libraries do differently: ε is added *outside* the square root
(TensorFlow/Keras add it inside: ``√(v_t + ε)``), v starts at 0 (not 1, as in some early
implementations), and there is no bias correction, so early steps are larger than Adam's.

Example — the first step is α·g/(√(1-a)·|g| + ε):

>>> import numpy as np
>>> from adamkit.reference import rmsprop
>>> hyper = rmsprop.RMSpropHyper(lr=0.01, alpha=0.99, eps=0.0)
>>> param, state, aux = rmsprop.step(np.zeros(1), np.ones(1), rmsprop.init(np.zeros(1)), hyper)
>>> np.round(param, 6)  # -0.01 / sqrt(0.01)
array([-0.1])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._common import as_real, like_input


@dataclass(frozen=True)
class RMSpropHyper:
    """Hyperparameters of RMSprop with torch.optim's defaults (α = 1e-2, a = 0.99, ε = 1e-8)."""

    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False
    maximize: bool = False


class RMSpropState(NamedTuple):
    """RMSprop's state for one parameter."""

    step: int
    v: np.ndarray  # torch: square_avg
    g_avg: np.ndarray  # torch: grad_avg (centered only)
    buf: np.ndarray  # torch: momentum_buffer (momentum > 0 only)


class RMSpropAux(NamedTuple):
    """Intermediates of one step."""

    denom: np.ndarray  # s_t
    effective_lr: np.ndarray  # α / s_t
    update: np.ndarray  # what is subtracted from φ


def init(param: np.ndarray) -> RMSpropState:
    """Zero state for ``param``."""
    zeros = np.zeros_like(as_real(param))
    return RMSpropState(step=0, v=zeros, g_avg=zeros.copy(), buf=zeros.copy())


def step(
    param: np.ndarray, grad: np.ndarray, state: RMSpropState, hyper: RMSpropHyper
) -> tuple[np.ndarray, RMSpropState, RMSpropAux]:
    """One RMSprop step for one parameter array. Pure: inputs are not modified."""
    phi, g = as_real(param), as_real(grad)
    a = hyper.alpha
    if hyper.maximize:
        g = -g
    if hyper.weight_decay != 0.0:
        g = g + hyper.weight_decay * phi

    v = a * state.v + (1.0 - a) * g * g
    g_avg = state.g_avg
    if hyper.centered:
        g_avg = a * g_avg + (1.0 - a) * g
        denom = np.sqrt(v - g_avg * g_avg) + hyper.eps
    else:
        denom = np.sqrt(v) + hyper.eps

    buf = state.buf
    if hyper.momentum > 0.0:
        buf = hyper.momentum * buf + g / denom
        update = hyper.lr * buf
    else:
        update = hyper.lr * g / denom
    phi = phi - update
    new_state = RMSpropState(state.step + 1, v, g_avg, buf)
    return like_input(phi, param), new_state, RMSpropAux(denom, hyper.lr / denom, update)
