r"""Adam (Kingma & Ba, 2015) in NumPy float64: the equations, literally.

For parameter :math:`\phi`, gradient :math:`g_t`, step :math:`t = 1, 2, \dots` and
:math:`m_0 = v_0 = 0`::

    m_t   = β1·m_{t-1} + (1-β1)·g_t            first moment: direction and push
    v_t   = β2·v_{t-1} + (1-β2)·g_t²           second moment: per-parameter scale
    m̂_t  = m_t / (1-β1^t)                     bias corrections
    v̂_t  = v_t / (1-β2^t)
    φ_t   = φ_{t-1} - α · m̂_t / (√v̂_t + ε)    ε is added AFTER the square root

Options, each a one-line change to the above:

* ``maximize``: use ``-g_t`` in place of ``g_t``.
* ``weight_decay`` λ with ``decoupled=False`` (Adam's L2 penalty): ``g_t ← g_t + λ·φ_{t-1}``.
* ``weight_decay`` λ with ``decoupled=True`` (AdamW): ``φ_{t-1} ← φ_{t-1}·(1 - α·λ)``
  before the update, and the gradient is left alone.
* ``amsgrad``: ``v_max_t = max(v_max_{t-1}, v_t)`` and ``v̂_t = v_max_t / (1-β2^t)``.
* ``cautious`` (timm's ``caution=True``, see :mod:`adamkit.reference.cautious`): the update
  ``α·m̂/(√v̂+ε)`` is masked where it disagrees in sign with ``g`` (``g + λ·φ`` under L2 decay)
  and renormalised; decoupled decay is not masked.
* ``bias_correction=False`` (for teaching, not in torch.optim): ``m̂_t = m_t``, ``v̂_t = v_t``,
  which shows why the correction is there: m and v start biased towards 0 by different
  amounts, so the first step is ``α·(1-β1)/√(1-β2)`` ≈ 3.2α with the defaults, not α.

Conventions other libraries do differently: TensorFlow/Keras add an "ε-hat" to
``√v_t`` *before* bias correction (``α_t = α·√(1-β2^t)/(1-β1^t)``, ``φ -= α_t·m_t/(√v_t + ε̂)``),
which equals this form with ``ε = ε̂/√(1-β2^t)``. adamkit, like the paper and torch.optim,
adds ε to the bias-corrected ``√v̂_t``.

Example — the first step is ``α·g/(|g|+ε)`` whatever the betas:

>>> import numpy as np
>>> from adamkit.reference import adam
>>> hyper = adam.AdamHyper(lr=0.1)
>>> state = adam.init(np.zeros(2))
>>> param, state, aux = adam.step(np.zeros(2), np.array([3.0, -0.5]), state, hyper)
>>> np.round(param, 6)
array([-0.1,  0.1])
>>> int(state.step), np.round(aux.effective_lr, 6)
(1, array([0.033333, 0.2     ]))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._common import as_real, like_input
from .cautious import apply as cautious_apply


@dataclass(frozen=True)
class AdamHyper:
    """Adam's hyperparameters, with torch.optim's defaults."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False
    amsgrad: bool = False
    maximize: bool = False
    bias_correction: bool = True
    cautious: bool = False


class AdamState(NamedTuple):
    """Adam's state for one parameter: step t, moments m and v, AMSGrad's running max of v."""

    step: int
    m: np.ndarray
    v: np.ndarray
    v_max: np.ndarray


class AdamAux(NamedTuple):
    """Intermediates of one step, so diagnostics read them instead of recomputing."""

    m_hat: np.ndarray
    v_hat: np.ndarray
    denom: np.ndarray  # √v̂ + ε
    step_size: float  # α / (1-β1^t)
    effective_lr: np.ndarray  # α / (√v̂ + ε), per coordinate
    update: np.ndarray  # α · m̂ / (√v̂ + ε) (masked if cautious), what is subtracted from φ


def init(param: np.ndarray) -> AdamState:
    """Zero state for ``param`` (real view for complex parameters)."""
    zeros = np.zeros_like(as_real(param))
    return AdamState(step=0, m=zeros, v=zeros.copy(), v_max=zeros.copy())


def step(
    param: np.ndarray, grad: np.ndarray, state: AdamState, hyper: AdamHyper
) -> tuple[np.ndarray, AdamState, AdamAux]:
    """One Adam step for one parameter array. Pure: inputs are not modified."""
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
    v_max = np.maximum(state.v_max, v) if hyper.amsgrad else state.v_max

    bc1, bc2 = (1.0 - hyper.beta1**t, 1.0 - hyper.beta2**t) if hyper.bias_correction else (1, 1)
    m_hat = m / bc1
    v_hat = (v_max if hyper.amsgrad else v) / bc2
    denom = np.sqrt(v_hat) + hyper.eps
    update = hyper.lr * m_hat / denom
    if hyper.cautious:
        update = cautious_apply(update, g)
    phi = phi - update

    aux = AdamAux(
        m_hat=m_hat,
        v_hat=v_hat,
        denom=denom,
        step_size=hyper.lr / bc1,
        effective_lr=hyper.lr / denom,
        update=update,
    )
    return like_input(phi, param), AdamState(t, m, v, v_max), aux
