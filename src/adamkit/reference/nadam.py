r"""NAdam (Dozat, 2016) in NumPy float64, as torch.optim.NAdam defines it.

With the momentum schedule μ_t = β1·(1 - ½·0.96^(t·ψ)) and its running product
Π_t = μ_1···μ_t (m_0 = v_0 = 0, Π_0 = 1)::

    m_t = β1·m_{t-1} + (1-β1)·g_t
    v_t = β2·v_{t-1} + (1-β2)·g_t²,   v̂_t = v_t/(1-β2^t)
    φ_t = φ_{t-1} - α·[(1-μ_t)/(1-Π_t)·g_t + μ_{t+1}/(1-Π_t·μ_{t+1})·m_t] / (√v̂_t + ε)

The bracket is Nesterov's look-ahead: the current gradient bias-corrected with this step's
momentum weight, plus the first moment bias-corrected with the next step's. ``weight_decay``
adds λ·φ to g, or with ``decoupled`` multiplies φ by (1 - α·λ) first.

torch.optim.NAdam keeps Π_t as a float32 scalar (float32 products, whatever the parameter's
dtype); ``mu_product_float32`` (default True) does the same here, so float64 results equal
torch's to 1e-12. With False, Π_t is the exact float64 product (differences of ~1e-9 relative).

>>> import numpy as np
>>> from adamkit.reference import nadam
>>> state = nadam.init(np.zeros(2))
>>> hyper = nadam.NAdamHyper(lr=0.1)
>>> param, state, aux = nadam.step(np.zeros(2), np.array([3.0, -0.5]), state, hyper)
>>> np.round(param, 4)
array([-0.1056,  0.1056])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._common import as_real, like_input
from .cautious import apply as cautious_apply


@dataclass(frozen=True)
class NAdamHyper:
    """NAdam's hyperparameters, with torch.optim.NAdam's defaults."""

    lr: float = 2e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum_decay: float = 4e-3
    decoupled: bool = False
    maximize: bool = False
    cautious: bool = False  # timm's masking (adamkit.reference.cautious)
    mu_product_float32: bool = True  # torch's float32 Π_t


class NAdamState(NamedTuple):
    step: int
    mu_product: float  # Π_t
    m: np.ndarray
    v: np.ndarray


class NAdamAux(NamedTuple):
    mu: float  # μ_t
    mu_next: float  # μ_{t+1}
    v_hat: np.ndarray
    denom: np.ndarray  # √v̂ + ε
    update: np.ndarray  # what is subtracted from φ


def init(param: np.ndarray) -> NAdamState:
    zeros = np.zeros_like(as_real(param))
    return NAdamState(step=0, mu_product=1.0, m=zeros, v=zeros.copy())


def momentum_weight(hyper: NAdamHyper, t: int) -> float:
    """μ_t = β1·(1 - ½·0.96^(t·ψ))."""
    return hyper.beta1 * (1.0 - 0.5 * 0.96 ** (t * hyper.momentum_decay))


def step(
    param: np.ndarray, grad: np.ndarray, state: NAdamState, hyper: NAdamHyper
) -> tuple[np.ndarray, NAdamState, NAdamAux]:
    """One NAdam step for one parameter array. Pure: inputs are not modified."""
    phi, g = as_real(param), as_real(grad)
    t = state.step + 1
    if hyper.maximize:
        g = -g
    if hyper.weight_decay != 0.0:
        if hyper.decoupled:
            phi = phi * (1.0 - hyper.lr * hyper.weight_decay)
        else:
            g = g + hyper.weight_decay * phi
    mu, mu_next = momentum_weight(hyper, t), momentum_weight(hyper, t + 1)
    if hyper.mu_product_float32:
        mu_product = float(np.float32(state.mu_product) * np.float32(mu))
    else:
        mu_product = state.mu_product * mu
    m = hyper.beta1 * state.m + (1.0 - hyper.beta1) * g
    v = hyper.beta2 * state.v + (1.0 - hyper.beta2) * g * g
    v_hat = v / (1.0 - hyper.beta2**t)
    denom = np.sqrt(v_hat) + hyper.eps
    # Each term over the denominator, as torch does: 0/0 is NaN where (0 + m)/0 would be ±inf.
    grad_coef = hyper.lr * (1.0 - mu) / (1.0 - mu_product)
    exp_avg_coef = hyper.lr * mu_next / (1.0 - mu_product * mu_next)
    update = grad_coef * (g / denom) + exp_avg_coef * (m / denom)
    if hyper.cautious:
        update = cautious_apply(update, g)
    aux = NAdamAux(mu, mu_next, v_hat, denom, update)
    return like_input(phi - update, param), NAdamState(t, mu_product, m, v), aux
