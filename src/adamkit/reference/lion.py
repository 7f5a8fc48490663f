r"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms") in NumPy float64.

One slot, the momentum m (``exp_avg``), and a sign update::

    c = β1·m + (1-β1)·g          interpolation with the CURRENT gradient (β1)
    φ = φ·(1 - lr·λ) - lr·sign(c)
    m = β2·m + (1-β2)·g          the stored momentum uses the other beta (β2)

Every coordinate moves by exactly lr (or 0 where c = 0), so lr is usually 3-10× smaller than
AdamW's and λ larger. Defaults are lion-pytorch's: lr=1e-4, betas=(0.9, 0.99), weight_decay=0.

Conventions, where implementations disagree:

* Weight decay is decoupled and applied to the pre-step φ (lion-pytorch, timm, optimi,
  pytorch_optimizer's default ``weight_decouple=True``).
* ``max_lr``: "fully decoupled" decay ``φ·(1 - (lr/max_lr)·λ)``, which is lion-pytorch's
  ``decoupled_weight_decay=True`` (λ divided by the constructor's lr) and optimi's
  ``decouple_lr``. timm's ``corrected_weight_decay`` is a different scale, ``lr²/max_lr·λ``.
* ``sign(0) = 0`` and ``sign(NaN) = 0`` (torch's ``sign``/``sgn``): a coordinate with c = 0
  or NaN does not move.
* timm and pytorch_optimizer write the EMAs as ``lerp``; lion-pytorch as ``mul``/``add``; equal
  up to rounding, which can only flip a sign where c is within rounding of 0.
* ``cautious`` (timm's ``caution=True``): ``sign(c)`` masked where ``sign(c)·g ≤ 0`` and
  renormalised by 1/max(mean(mask), 1e-3); decay not masked. lion-pytorch's ``cautious_lion``
  floors the mean at 1e-5 instead.
* ``maximize`` (timm) negates g first.

>>> import numpy as np
>>> from adamkit.reference import lion
>>> param, state, aux = lion.step(np.ones(3), np.array([2.0, -1.0, 0.0]), lion.init(np.ones(3)),
...                               lion.LionHyper(lr=0.1))
>>> param, state.m
(array([0.9, 1.1, 1. ]), array([ 0.02, -0.01,  0.  ]))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._common import as_real, like_input
from .cautious import apply as cautious_apply


@dataclass(frozen=True)
class LionHyper:
    """Lion's hyperparameters, with lion-pytorch's defaults."""

    lr: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.0
    max_lr: float | None = None  # set: fully decoupled decay (lr/max_lr)·λ
    maximize: bool = False
    cautious: bool = False


class LionState(NamedTuple):
    """Lion's one slot, the momentum m (``exp_avg``)."""

    m: np.ndarray


class LionAux(NamedTuple):
    interpolation: np.ndarray  # c = β1·m + (1-β1)·g
    update: np.ndarray  # lr·sign(c) (masked if cautious), decay excluded


def init(param: np.ndarray) -> LionState:
    """Zero momentum for ``param`` (real view for complex parameters)."""
    return LionState(m=np.zeros_like(as_real(param)))


def step(
    param: np.ndarray, grad: np.ndarray, state: LionState, hyper: LionHyper
) -> tuple[np.ndarray, LionState, LionAux]:
    """One Lion step for one parameter array. Pure: inputs are not modified."""
    phi, g = as_real(param), as_real(grad)
    if hyper.maximize:
        g = -g
    if hyper.weight_decay != 0.0:
        scale = hyper.lr if hyper.max_lr is None else hyper.lr / hyper.max_lr
        phi = phi * (1.0 - scale * hyper.weight_decay)
    c = hyper.beta1 * state.m + (1.0 - hyper.beta1) * g
    direction = np.where(np.isnan(c), 0.0, np.sign(c))  # torch's sign: 0 for NaN
    if hyper.cautious:
        direction = cautious_apply(direction, g)
    update = hyper.lr * direction
    m = hyper.beta2 * state.m + (1.0 - hyper.beta2) * g
    return like_input(phi - update, param), LionState(m), LionAux(c, update)
