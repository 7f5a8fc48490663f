r"""RAdam (Liu et al., 2020) in NumPy float64, as torch.optim.RAdam defines it.

ρ_∞ = 2/(1-β2) - 1 is the length of the approximated simple moving average of v and
ρ_t = ρ_∞ - 2t·β2^t/(1-β2^t) its value at step t. While ρ_t ≤ 5 the variance of the adaptive
step is intractable and RAdam takes momentum SGD steps; after that, Adam's step scaled by the
variance rectification r_t::

    m_t = β1·m_{t-1} + (1-β1)·g_t,   v_t = β2·v_{t-1} + (1-β2)·g_t²,   m̂_t = m_t/(1-β1^t)
    r_t = √((ρ_t-4)(ρ_t-2)ρ_∞ / ((ρ_∞-4)(ρ_∞-2)ρ_t))
    φ_t = φ_{t-1} - α·m̂_t·r_t·√(1-β2^t)/(√v_t + ε)    if ρ_t > 5
    φ_t = φ_{t-1} - α·m̂_t                              otherwise

ε is added to √v_t before bias correction (the paper's and torch's placement for RAdam).

>>> import numpy as np
>>> from adamkit.reference import radam
>>> state = radam.init(np.zeros(2))
>>> hyper = radam.RAdamHyper(lr=0.1)
>>> param, state, aux = radam.step(np.zeros(2), np.array([3.0, -0.5]), state, hyper)
>>> np.round(param, 4), aux.rectified
(array([-0.3 ,  0.05]), False)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._common import as_real, like_input
from .cautious import apply as cautious_apply


@dataclass(frozen=True)
class RAdamHyper:
    """RAdam's hyperparameters, with torch.optim.RAdam's defaults."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    maximize: bool = False
    cautious: bool = False  # timm's masking (adamkit.reference.cautious)


class RAdamState(NamedTuple):
    step: int
    m: np.ndarray
    v: np.ndarray


class RAdamAux(NamedTuple):
    rho_t: float
    rectified: bool  # ρ_t > 5: the adaptive step is on
    rectification: float  # r_t (0 while not rectified)
    m_hat: np.ndarray
    update: np.ndarray  # what is subtracted from φ


def init(param: np.ndarray) -> RAdamState:
    zeros = np.zeros_like(as_real(param))
    return RAdamState(step=0, m=zeros, v=zeros.copy())


def step(
    param: np.ndarray, grad: np.ndarray, state: RAdamState, hyper: RAdamHyper
) -> tuple[np.ndarray, RAdamState, RAdamAux]:
    """One RAdam step for one parameter array. Pure: inputs are not modified."""
    phi, g = as_real(param), as_real(grad)
    t = state.step + 1
    if hyper.maximize:
        g = -g
    if hyper.weight_decay != 0.0:
        if hyper.decoupled:
            phi = phi * (1.0 - hyper.lr * hyper.weight_decay)
        else:
            g = g + hyper.weight_decay * phi
    m = hyper.beta1 * state.m + (1.0 - hyper.beta1) * g
    v = hyper.beta2 * state.v + (1.0 - hyper.beta2) * g * g
    m_hat = m / (1.0 - hyper.beta1**t)
    bias_correction2 = 1.0 - hyper.beta2**t
    rho_inf = 2.0 / (1.0 - hyper.beta2) - 1.0
    rho_t = rho_inf - 2.0 * t * hyper.beta2**t / bias_correction2
    rectified = rho_t > 5.0
    if rectified:
        r = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        update = hyper.lr * m_hat * r * math.sqrt(bias_correction2) / (np.sqrt(v) + hyper.eps)
    else:
        r = 0.0
        update = hyper.lr * m_hat
    if hyper.cautious:
        update = cautious_apply(update, g)
    aux = RAdamAux(rho_t, rectified, r, m_hat, update)
    return like_input(phi - update, param), RAdamState(t, m, v), aux
