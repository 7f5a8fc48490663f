r"""Adafactor (Shazeer & Stern, 2018) in NumPy float64, as ``torch.optim.Adafactor`` (torch 2.13).

Adam without a first moment, whose second moment of a matrix is stored factored: a row
statistic R (one number per row) and a column statistic C (one per column) instead of one
number per element. For a param of shape (..., n, m) the factors are of shape (..., n, 1) and
(..., 1, m); a vector (or a 0-d tensor) keeps a full second moment V::

    β̂2_t  = 1 - t^τ                                   (τ = beta2_decay, default -0.8)
    ρ_t    = min(lr, 1/√t)
    α_t    = max(ε2, RMS(φ_{t-1}))·ρ_t                  (RMS over the whole tensor)
    φ      = φ_{t-1}·(1 - lr·λ)                         (decoupled decay, with the plain lr)
    R_t    = β̂2_t·R_{t-1} + (1-β̂2_t)·mean_cols(g²)     (torch.lerp with weight t^τ)
    C_t    = β̂2_t·C_{t-1} + (1-β̂2_t)·mean_rows(g²)
    V̂_t    = R_t·C_t / max(mean_rows(R_t), ε1)          (matrix)  or  V_t = lerp(V, g², t^τ)
    U_t    = g / √max(V̂_t, ε1²)
    φ_t    = φ - α_t/max(1, RMS(U_t)/d)·U_t

Conventions, where implementations disagree (torch's choices throughout):

* Means, not sums, of g² (the paper writes sums; equal up to scale in the factored estimate).
* ε1 (default: the param dtype's machine epsilon) floors mean(R) and V̂, not g² (the paper and
  transformers' ``Adafactor`` add ε1 to g² before the statistics); transformers' ε1 is 1e-30.
* No first moment (the paper's β1 = 0; transformers offers one).
* Weight decay multiplies by ``1 - lr·λ`` with the *given* lr, not ρ_t or α_t.
* ``relative_step``: the step size is always min(lr, 1/√t) scaled by the param's RMS (there is no
  ``scale_parameter``/``relative_step``/``warmup_init`` switch as in transformers).
* An empty tensor is not changed (torch divides 0 by √0 and raises ZeroDivisionError); its step
  count still advances.

>>> import numpy as np
>>> from adamkit.reference import adafactor
>>> p = np.array([[1.0, -1.0], [2.0, 0.5]])
>>> g = np.array([[0.5, 0.5], [-1.0, 0.0]])
>>> new, state, aux = adafactor.step(p, g, adafactor.init(p), adafactor.AdafactorHyper())
>>> aux.alpha  # max(1e-3, RMS(p)) · min(1e-2, 1/√1)
0.0125
>>> np.round(new - p, 6)
array([[-0.008839, -0.019764],
       [ 0.0125  ,  0.      ]])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._common import as_real, like_input

# float32's machine epsilon: torch's ε1 for a float32 param when eps=(None, ...)
FLOAT32_EPS = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class AdafactorHyper:
    """Adafactor's hyperparameters, with torch's defaults; ``eps1=None`` means the machine
    epsilon of the param's dtype (float32's here: pass ``eps1`` for another)."""

    lr: float = 1e-2
    beta2_decay: float = -0.8
    eps1: float | None = None
    eps2: float = 1e-3
    d: float = 1.0
    weight_decay: float = 0.0
    maximize: bool = False


class AdafactorState(NamedTuple):
    """A matrix keeps ``row_var`` (..., n, 1) and ``col_var`` (..., 1, m); a vector keeps
    ``variance``. The others are None."""

    step: int
    row_var: np.ndarray | None
    col_var: np.ndarray | None
    variance: np.ndarray | None


class AdafactorAux(NamedTuple):
    """What one step computed: β̂2_t's complement t^τ, ρ_t, α_t, the second-moment estimate
    V̂_t, the update U_t and the clipping divisor max(1, RMS(U_t)/d)."""

    one_minus_beta2: float
    rho: float
    alpha: float
    var_estimate: np.ndarray
    update: np.ndarray
    clip_divisor: float


def init(param: np.ndarray) -> AdafactorState:
    x = as_real(param)
    if x.ndim > 1:
        row = np.zeros((*x.shape[:-1], 1))
        col = np.zeros((*x.shape[:-2], 1, x.shape[-1]))
        return AdafactorState(0, row, col, None)
    return AdafactorState(0, None, None, np.zeros_like(x, dtype=np.float64))


def _lerp(start: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
    """torch's lerp: exact at both ends (weight 1, i.e. beta2_decay = 0, gives ``end``)."""
    diff = end - start
    return start + weight * diff if weight < 0.5 else end - diff * (1.0 - weight)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.sum(x * x)) / math.sqrt(x.size))


def step(
    param: np.ndarray, grad: np.ndarray, state: AdafactorState, hyper: AdafactorHyper
) -> tuple[np.ndarray, AdafactorState, AdafactorAux | None]:
    if np.iscomplexobj(param) or np.iscomplexobj(grad):
        raise ValueError("Adafactor does not support complex parameters (as torch)")
    p, g = as_real(param), as_real(grad)
    g = -g if hyper.maximize else g
    t = state.step + 1
    if p.size == 0:
        return like_input(p, param), state._replace(step=t), None
    eps1 = FLOAT32_EPS if hyper.eps1 is None else hyper.eps1
    one_minus_beta2 = float(t) ** hyper.beta2_decay
    rho = min(hyper.lr, 1.0 / math.sqrt(t))
    alpha = max(hyper.eps2, _rms(p)) * rho
    p = p * (1.0 - hyper.lr * hyper.weight_decay)
    g2 = g * g
    if p.ndim > 1:
        assert state.row_var is not None and state.col_var is not None
        row = _lerp(state.row_var, g2.mean(axis=-1, keepdims=True), one_minus_beta2)
        col = _lerp(state.col_var, g2.mean(axis=-2, keepdims=True), one_minus_beta2)
        var_estimate = row * col / np.maximum(row.mean(axis=-2, keepdims=True), eps1)
        new_state = AdafactorState(t, row, col, None)
    else:
        assert state.variance is not None
        variance = _lerp(state.variance, g2, one_minus_beta2)
        var_estimate = variance
        new_state = AdafactorState(t, None, None, variance)
    update = g / np.sqrt(np.maximum(var_estimate, eps1 * eps1))
    clip_divisor = max(1.0, _rms(update) / hyper.d)
    p = p - (alpha / clip_divisor) * update
    aux = AdafactorAux(one_minus_beta2, rho, alpha, var_estimate, update, clip_divisor)
    return like_input(p, param), new_state, aux
