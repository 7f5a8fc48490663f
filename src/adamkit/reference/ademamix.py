r"""AdEMAMix (Pagliardini, Ablin & Grangier, 2024) in NumPy float64.

Adam with a second, slow first moment mixed into the numerator. For step t = 1, 2, … and
m1_0 = m2_0 = v_0 = 0::

    α_t   = min(t·α / T_α, α)                                   α warmup (none if T_α is None)
    β3_t  = min(exp(ln β1·ln β3 / ((1-s)·ln β3 + s·ln β1)), β3),  s = min(t/T_β3, 1)
    m1_t  = β1·m1_{t-1} + (1-β1)·g_t                            fast EMA, bias-corrected
    m2_t  = β3_t·m2_{t-1} + (1-β3_t)·g_t                        slow EMA, NOT bias-corrected
    v_t   = β2·v_{t-1} + (1-β2)·g_t²
    m̂1_t = m1_t/(1-β1^t),  √v̂_t = √v_t/√(1-β2^t)
    φ_t   = φ_{t-1}·(1 - lr·λ) - lr·(m̂1_t + α_t·m2_t)/(√v̂_t + ε)

The update is the authors' reference (apple/ml-ademamix ``pytorch/ademamix.py``); the signature
and defaults are bitsandbytes' ``AdEMAMix`` (what ``optim="ademamix"`` in HF Trainer gives):
betas=(0.9, 0.999, 0.9999), alpha=5.0, t_alpha=None, t_beta3=None, eps=1e-8, weight_decay=1e-2.

Conventions, where implementations disagree:

* Defaults: the authors' class has alpha=2.0 and weight_decay=0, and names the warmups
  ``alpha_warmup``/``beta3_warmup``; pytorch_optimizer's ``AdEMAMix`` has weight_decay=0 as an
  L2 penalty (``weight_decouple=False``) and one warmup length ``t_alpha_beta3`` for both.
  adamkit: bitsandbytes' defaults, decoupled decay as the authors.
* Weight decay is decoupled and uses the pre-step parameter: the authors and bitsandbytes'
  ``_ReferenceAdEMAMix`` write it as ``update += λ·φ; φ -= lr·update``, bitsandbytes' kernels as
  ``φ·(1 - lr·λ)`` first; the same number.
* β3 warmup: bitsandbytes' closed form above (also pytorch_optimizer's). It is the authors'
  ``linear_hl_warmup_scheduler`` — half-life ``ln ½/ln β - 1`` interpolated linearly from β1's to
  β3's — solved in closed form, except that the authors take ``ln(β + 1e-8)``, which lengthens
  the half-life of β3 = 0.9999 by 1e-4 (relative) and raises β3_t by up to ~1e-6 early in the
  warmup. With β1 = 0 the closed form is its limit
  ``min(β3^(T_β3/t), β3)`` (bitsandbytes raises on ``log(0)``).
* α warmup: ``min(t·α/T_α, α)`` (bitsandbytes); the authors write ``(t/T_α)·α`` for t < T_α,
  equal up to rounding. ``T_α`` or ``T_β3`` of ``None`` or 0 means no warmup (bitsandbytes'
  kernels test ``if t_alpha:``; its pure-torch ``_ReferenceAdEMAMix`` divides by 0).
* The step t is per parameter (the authors, bitsandbytes' optimizer class); bitsandbytes'
  ``_ReferenceAdEMAMix`` and pytorch_optimizer count per group — equal while every parameter of
  the group gets a gradient at every step. ``_ReferenceAdEMAMix`` also writes the scheduled α_t
  and β3_t back into its loop variables, so within a group the warmups compound from one
  parameter to the next (its first parameter is right; the tests give each its own group).
* ``cautious`` masks the whole update ``(m̂1 + α_t·m2)/(√v̂+ε)`` against g (see
  :mod:`adamkit.reference.cautious`); pytorch_optimizer masks only m1, with its own renormalisation.

>>> import numpy as np
>>> from adamkit.reference import ademamix
>>> hyper = ademamix.AdEMAMixHyper(lr=0.1, weight_decay=0.0)
>>> state = ademamix.init(np.zeros(2))
>>> param, state, aux = ademamix.step(np.zeros(2), np.array([3.0, -0.5]), state, hyper)
>>> np.round(param, 6)  # m̂1 = g, m2 = 1e-4·g, √v̂ = |g|: -0.1·(1 + 5e-4)·sign(g)
array([-0.10005,  0.10005])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._common import as_real, like_input
from .cautious import apply as cautious_apply


@dataclass(frozen=True)
class AdEMAMixHyper:
    """AdEMAMix's hyperparameters, with bitsandbytes' defaults."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    beta3: float = 0.9999
    alpha: float = 5.0
    t_alpha: int | None = None
    t_beta3: int | None = None
    eps: float = 1e-8
    weight_decay: float = 1e-2
    cautious: bool = False
    maximize: bool = False  # torch's option (adamkit's class has it): g negated first


class AdEMAMixState(NamedTuple):
    """Step t and the three slots: fast EMA m1, slow EMA m2, second moment v."""

    step: int
    m1: np.ndarray
    m2: np.ndarray
    v: np.ndarray


class AdEMAMixAux(NamedTuple):
    """Intermediates of one step: what steers it, the slow EMA beside m̂1."""

    m1_hat: np.ndarray
    m2: np.ndarray
    sqrt_v_hat: np.ndarray  # √v̂
    alpha: float  # α_t
    beta3: float  # β3_t
    update: np.ndarray  # lr·(m̂1 + α_t·m2)/(√v̂ + ε) (masked if cautious), decay excluded


def init(param: np.ndarray) -> AdEMAMixState:
    """Zero state for ``param`` (real view for complex parameters)."""
    zeros = np.zeros_like(as_real(param))
    return AdEMAMixState(step=0, m1=zeros, m2=zeros.copy(), v=zeros.copy())


def alpha_schedule(hyper: AdEMAMixHyper, t: int) -> float:
    """α_t = min(t·α/T_α, α): linear from 0 over T_α steps."""
    if not hyper.t_alpha:
        return hyper.alpha
    return min(t * hyper.alpha / hyper.t_alpha, hyper.alpha)


def beta3_schedule(hyper: AdEMAMixHyper, t: int) -> float:
    """β3_t in bitsandbytes' closed form: the half-life grows linearly from β1's to β3's,
    then stays at β3's (s stops at 1, as the authors' scheduler does: bitsandbytes' form
    agrees for β3 ≥ β1, and overflows past T_β3 for β3 < β1)."""
    if not hyper.t_beta3:
        return hyper.beta3
    step_scale = min(t / hyper.t_beta3, 1.0)
    if hyper.beta3 == 0.0:  # ln β3 → -∞: β3_t = 0
        return 0.0
    if hyper.beta1 == 0.0:  # the limit ln β1 → -∞ of the form below
        return min(hyper.beta3 ** (1.0 / step_scale), hyper.beta3)
    ln_beta1, ln_beta3 = math.log(hyper.beta1), math.log(hyper.beta3)
    mixed = ((1 - step_scale) * ln_beta3) + (step_scale * ln_beta1)
    return min(math.exp((ln_beta1 * ln_beta3) / mixed), hyper.beta3)


def step(
    param: np.ndarray, grad: np.ndarray, state: AdEMAMixState, hyper: AdEMAMixHyper
) -> tuple[np.ndarray, AdEMAMixState, AdEMAMixAux]:
    """One AdEMAMix step for one parameter array. Pure: inputs are not modified."""
    phi, g = as_real(param), as_real(grad)
    if hyper.maximize:
        g = -g
    t = state.step + 1
    alpha_t, beta3_t = alpha_schedule(hyper, t), beta3_schedule(hyper, t)
    if hyper.weight_decay != 0.0:
        phi = phi * (1.0 - hyper.lr * hyper.weight_decay)

    m1 = hyper.beta1 * state.m1 + (1.0 - hyper.beta1) * g
    m2 = beta3_t * state.m2 + (1.0 - beta3_t) * g
    v = hyper.beta2 * state.v + (1.0 - hyper.beta2) * g * g
    m1_hat = m1 / (1.0 - hyper.beta1**t)
    sqrt_v_hat = np.sqrt(v) / math.sqrt(1.0 - hyper.beta2**t)
    direction = (m1_hat + alpha_t * m2) / (sqrt_v_hat + hyper.eps)
    if hyper.cautious:
        direction = cautious_apply(direction, g)
    update = hyper.lr * direction

    aux = AdEMAMixAux(m1_hat, m2, sqrt_v_hat, alpha_t, beta3_t, update)
    return like_input(phi - update, param), AdEMAMixState(t, m1, m2, v), aux
