r"""ADOPT (Taniguchi et al., 2024) in NumPy float64, as the authors' ``ADOPT`` (iShohei220/adopt).

Adam with the second moment taken *before* the current gradient, and momentum applied after
normalising. With s = 0, 1, 2, … the number of earlier calls (the authors' ``state["step"]``)::

    s = 0:   v = g²                                 the first call only initialises v:
                                                    no update, no weight decay
    s ≥ 1:   n = clip(g / max(√v, ε), ±clip_lambda(s))   normalised by the PREVIOUS v
             m = β1·m + (1-β1)·n
             φ = φ - lr·m
             v = β2·v + (1-β2)·g²

Defaults are the authors': lr=1e-3, betas=(0.9, 0.9999), eps=1e-6,
``clip_lambda=lambda step: step**0.25``, weight_decay=0, decouple=False. ``weight_decay`` λ is
an L2 penalty (``g ← g + λ·φ``, before the first-call v as well) unless ``decouple``, which
multiplies φ by (1 - lr·λ) before the update on calls s ≥ 1. ε is a floor under √v, not added.
m needs no bias correction: m_0 = 0 only shrinks the first steps.

Conventions, where implementations disagree:

* Clip indexing: the authors call ``clip_lambda(s)`` with s the number of *earlier* calls, so
  the first update (second call) clips at 1^0.25 = 1. timm's ``Adopt`` uses the same indexing,
  ``(step-1)**clip_exp`` after incrementing step, but its default ``clip_exp=0.333`` (a cube
  root, not the authors' fourth root); ``Adopt(clip_exp=0.25)`` is the authors'.
  pytorch_optimizer's ``ADOPT`` increments first and calls ``clip_lambda(step)``, one ahead:
  its k-th update clips at (k+1)^0.25 where the authors' clips at k^0.25.
* pytorch_optimizer applies decoupled weight decay on the first call too (the authors and timm
  skip it: the first call changes nothing but v).
* timm's ``Adopt(decoupled=True)`` is the authors' ``decouple=True``; its
  ``corrected_weight_decay`` (lr²/max_lr) is not in the authors' optimizer.
* The authors' foreach path decides "first call" from the group's first parameter (here s is
  per array, as in timm), and calls ``clip_lambda`` on the float32 step tensor, so its clip is
  rounded to float32 (a 1e-9 relative difference; the for-loop path uses a Python float).
* ``cautious`` (timm's ``caution=True``): the update ``m`` is masked where ``m·g ≤ 0`` (g with
  the L2 term, before normalising) and renormalised; the stored m is not masked, decay is not.
* ``maximize`` negates g first.

>>> import numpy as np
>>> from adamkit.reference import adopt
>>> hyper = adopt.ADOPTHyper(lr=0.1)
>>> state = adopt.init(np.zeros(2))
>>> param, state, aux = adopt.step(np.zeros(2), np.array([3.0, -0.5]), state, hyper)
>>> param, state.v  # the first call only fills v
(array([0., 0.]), array([9.  , 0.25]))
>>> param, state, aux = adopt.step(param, np.array([3.0, -0.5]), state, hyper)
>>> np.round(param, 6)  # n = g/|g| = ±1 (clip 1), m = 0.1·n
array([-0.01,  0.01])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._common import as_real, like_input
from .cautious import apply as cautious_apply


def default_clip(step: int) -> float:
    """The authors' clip_lambda: step**0.25."""
    return step**0.25


@dataclass(frozen=True)
class ADOPTHyper:
    """ADOPT's hyperparameters, with the authors' defaults."""

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.9999
    eps: float = 1e-6
    clip_lambda: Callable[[int], float] | None = default_clip
    weight_decay: float = 0.0
    decouple: bool = False
    maximize: bool = False
    cautious: bool = False


class ADOPTState(NamedTuple):
    """Calls so far s (the authors' ``step``), first moment m, second moment v."""

    step: int
    m: np.ndarray
    v: np.ndarray


class ADOPTAux(NamedTuple):
    """Intermediates of one call (zeros/None on the first, which only fills v)."""

    denom: np.ndarray  # max(√v_prev, ε)
    normalized_grad: np.ndarray  # n, after clipping
    clip: float | None  # clip_lambda(s)
    update: np.ndarray  # lr·m (masked if cautious), decay excluded


def init(param: np.ndarray) -> ADOPTState:
    """Zero state for ``param`` (real view for complex parameters)."""
    zeros = np.zeros_like(as_real(param))
    return ADOPTState(step=0, m=zeros, v=zeros.copy())


def step(
    param: np.ndarray, grad: np.ndarray, state: ADOPTState, hyper: ADOPTHyper
) -> tuple[np.ndarray, ADOPTState, ADOPTAux]:
    """One ADOPT call for one parameter array. Pure: inputs are not modified."""
    phi, g = as_real(param), as_real(grad)
    s = state.step
    if hyper.maximize:
        g = -g
    if hyper.weight_decay != 0.0 and not hyper.decouple:
        g = g + hyper.weight_decay * phi
    if s == 0:
        zeros = np.zeros_like(phi)
        aux = ADOPTAux(zeros, zeros, None, zeros)
        return like_input(phi, param), ADOPTState(1, state.m, g * g), aux
    if hyper.weight_decay != 0.0 and hyper.decouple:
        phi = phi * (1.0 - hyper.lr * hyper.weight_decay)

    denom = np.maximum(np.sqrt(state.v), hyper.eps)
    n = g / denom
    clip = None if hyper.clip_lambda is None else hyper.clip_lambda(s)
    if clip is not None:
        n = np.clip(n, -clip, clip)
    m = hyper.beta1 * state.m + (1.0 - hyper.beta1) * n
    update = hyper.lr * (cautious_apply(m, g) if hyper.cautious else m)
    v = hyper.beta2 * state.v + (1.0 - hyper.beta2) * g * g
    aux = ADOPTAux(denom, n, clip, update)
    return like_input(phi - update, param), ADOPTState(s + 1, m, v), aux
