r"""StableAdamW (Wortsman et al., 2023) in NumPy float64, as torch-optimi's ``StableAdamW``.

AdamW with Adafactor's update clipping: the learning rate of each tensor is divided by the RMS
of g²/v̂ when that exceeds 1. optimi stores the bias-corrected averages directly, updating them
with "debiased" betas β̂_t = β·(1-β^{t-1})/(1-β^t) = (β^t - β)/(β^t - 1)::

    m̂_t  = β̂1_t·m̂_{t-1} + (1-β̂1_t)·g_t         (= m_t/(1-β1^t) of Adam, exactly in real numbers)
    v̂_t  = β̂2_t·v̂_{t-1} + (1-β̂2_t)·g_t²
    rms   = √mean(g_t² / max(v̂_t, ε²))            over the whole tensor, with the UPDATED v̂_t
    lr_t  = lr / max(1, rms)
    φ_t   = φ_{t-1}·(1 - lr_t·λ) - lr_t·m̂_t/(√v̂_t + ε)

Defaults are optimi's: betas=(0.9, 0.99), weight_decay=1e-2, eps=1e-6, and lr has none.
Weight decay is decoupled and uses the *clipped* lr_t. With ``decouple_lr=True`` it is "fully
decoupled", ``φ·(1 - (lr_t/max_lr)·λ)``, where max_lr defaults to ``lr`` (optimi takes the lr
given to the constructor; a pure step only sees the current one, so pass ``max_lr`` whenever lr
is scheduled).

Conventions, where implementations disagree or a choice was needed:

* The state holds m̂ and v̂ (optimi's ``exp_avg``/``exp_avg_sq``), not torch.optim's un-corrected
  m and v: a checkpoint's ``exp_avg`` differs from torch AdamW's by the factor 1-β1^t.
* The RMS uses ε² as a floor under v̂ (optimi); ε itself is added to √v̂ in the step.
* pytorch_optimizer's ``stable_adamw=True`` option divides the update (not the lr) by
  ``max(1, √mean(g²/max(v, 1e-16)))`` with its own v, so its decay is not clipped.
* timm's ``AdamWLegacy(clipping_threshold=1.0)`` clips the update by the RMS of
  ``g/(√v̂ + ε)``, not ``g²/max(v̂, ε²)``, and does not clip the decay.
* The step counter t is per array; optimi counts per group (equal while every parameter of the
  group has a gradient at every step).
* An empty tensor has rms = 0 (optimi's empty mean is NaN, and ``max(1, nan)`` is 1 in Python).

>>> import numpy as np
>>> from adamkit.reference import stable_adamw
>>> hyper = stable_adamw.StableAdamWHyper(lr=0.1, weight_decay=0.0)
>>> param, state, aux = stable_adamw.step(np.zeros(2), np.array([3.0, -0.5]),
...                                       stable_adamw.init(np.zeros(2)), hyper)
>>> np.round(param, 6), round(aux.rms, 6)  # first step: m̂ = g, v̂ = g², rms = 1
(array([-0.1,  0.1]), 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._common import as_real, like_input


@dataclass(frozen=True)
class StableAdamWHyper:
    """StableAdamW's hyperparameters, with optimi's defaults (lr has none)."""

    lr: float
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 1e-2
    eps: float = 1e-6
    decouple_lr: bool = False
    max_lr: float | None = None  # for decouple_lr; None: lr
    maximize: bool = False  # torch's option (optimi has none): g negated first


class StableAdamWState(NamedTuple):
    """Step t and the bias-corrected averages m̂ (``exp_avg``) and v̂ (``exp_avg_sq``)."""

    step: int
    m: np.ndarray
    v: np.ndarray


class StableAdamWAux(NamedTuple):
    rms: float  # √mean(g²/max(v̂, ε²))
    lr: float  # lr_t = lr / max(1, rms), the clipped lr
    denom: np.ndarray  # √v̂ + ε
    update: np.ndarray  # lr_t·m̂/(√v̂ + ε), decay excluded


def init(param: np.ndarray) -> StableAdamWState:
    """Zero state for ``param`` (real view for complex parameters)."""
    zeros = np.zeros_like(as_real(param))
    return StableAdamWState(step=0, m=zeros, v=zeros.copy())


def debias_beta(beta: float, t: int) -> float:
    """β̂_t = (β^t - β)/(β^t - 1): 0 at t = 1, tending to β."""
    return (beta**t - beta) / (beta**t - 1)


def step(
    param: np.ndarray, grad: np.ndarray, state: StableAdamWState, hyper: StableAdamWHyper
) -> tuple[np.ndarray, StableAdamWState, StableAdamWAux]:
    """One StableAdamW step for one parameter array. Pure: inputs are not modified."""
    phi, g = as_real(param), as_real(grad)
    if hyper.maximize:
        g = -g
    t = state.step + 1
    beta1_hat, beta2_hat = debias_beta(hyper.beta1, t), debias_beta(hyper.beta2, t)
    m = beta1_hat * state.m + (1.0 - beta1_hat) * g
    v = beta2_hat * state.v + (1.0 - beta2_hat) * g * g

    ratio = g * g / np.maximum(v, hyper.eps**2)
    rms = math.sqrt(float(ratio.mean())) if ratio.size else 0.0
    lr = hyper.lr / max(1.0, rms)
    if hyper.weight_decay != 0.0:
        max_lr = hyper.lr if hyper.max_lr is None else hyper.max_lr
        scale = lr / max_lr if hyper.decouple_lr else lr
        phi = phi * (1.0 - scale * hyper.weight_decay)
    denom = np.sqrt(v) + hyper.eps
    update = lr * m / denom
    aux = StableAdamWAux(rms, lr, denom, update)
    return like_input(phi - update, param), StableAdamWState(t, m, v), aux
