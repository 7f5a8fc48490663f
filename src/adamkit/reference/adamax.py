r"""Adamax (Kingma & Ba, 2015, §7.1) in NumPy float64, as torch.optim.Adamax defines it.

Adam's v generalised to the infinity norm: an exponentially weighted max of |g|::

    m_t = β1·m_{t-1} + (1-β1)·g_t
    u_t = max(β2·u_{t-1}, |g_t| + ε)
    φ_t = φ_{t-1} - α/(1-β1^t) · m_t/u_t

u needs no bias correction (a max is not pulled towards its zero start). ε inside the max is
torch's placement (the paper has none); ``weight_decay`` adds λ·φ to g.

>>> import numpy as np
>>> from adamkit.reference import adamax
>>> state = adamax.init(np.zeros(2))
>>> hyper = adamax.AdamaxHyper(lr=0.1)
>>> param, state, aux = adamax.step(np.zeros(2), np.array([3.0, -0.5]), state, hyper)
>>> np.round(param, 6)
array([-0.1,  0.1])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._common import as_real, like_input
from .cautious import apply as cautious_apply


@dataclass(frozen=True)
class AdamaxHyper:
    """Adamax's hyperparameters, with torch.optim.Adamax's defaults."""

    lr: float = 2e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    maximize: bool = False
    cautious: bool = False  # timm's masking (adamkit.reference.cautious)


class AdamaxState(NamedTuple):
    step: int
    m: np.ndarray
    u: np.ndarray  # torch's exp_inf


class AdamaxAux(NamedTuple):
    step_size: float  # α/(1-β1^t)
    update: np.ndarray  # what is subtracted from φ


def init(param: np.ndarray) -> AdamaxState:
    zeros = np.zeros_like(as_real(param))
    return AdamaxState(step=0, m=zeros, u=zeros.copy())


def step(
    param: np.ndarray, grad: np.ndarray, state: AdamaxState, hyper: AdamaxHyper
) -> tuple[np.ndarray, AdamaxState, AdamaxAux]:
    """One Adamax step for one parameter array. Pure: inputs are not modified."""
    phi, g = as_real(param), as_real(grad)
    t = state.step + 1
    if hyper.maximize:
        g = -g
    if hyper.weight_decay != 0.0:
        g = g + hyper.weight_decay * phi
    m = hyper.beta1 * state.m + (1.0 - hyper.beta1) * g
    u = np.maximum(hyper.beta2 * state.u, np.abs(g) + hyper.eps)  # NaN propagates
    step_size = hyper.lr / (1.0 - hyper.beta1**t)
    update = step_size * m / u
    if hyper.cautious:
        update = cautious_apply(update, g)
    return like_input(phi - update, param), AdamaxState(t, m, u), AdamaxAux(step_size, update)
