r"""Schedule-Free AdamW (Defazio et al., 2024) in NumPy float64, as schedulefree defines it.

Three sequences: z (the SGD-like base iterate), x (the weighted average of the z's, what to
evaluate) and y = (1-β1)·z + β1·x (where the gradient is taken). Only z is stored; the parameter
holds y in train mode and x in eval mode. With k = 0, 1, … the number of steps taken::

    lr_k     = lr·min(1, (k+1)/warmup_steps)                  linear warmup (none if 0)
    lr_max   = max(lr_max, lr_k)                              (starts at -1)
    w_k      = (k+1)^r · lr_max^weight_lr_power,  W = W + w_k  (W starts at 0)
    c_{k+1}  = w_k / W                                        (0 if W = 0): the averaging weight
    v        = β2·v + (1-β2)·g²,  d = √(v/(1-β2^(k+1))) + ε
    u        = g/d + λ·y                                      weight decay taken at y
    y       ← y + c_{k+1}·(z - y) + lr_k·(β1·(1-c_{k+1}) - 1)·u
    z       ← z - lr_k·u

The y line is x_{k+1} = (1-c)·x_k + c·z_{k+1} and y = (1-β1)·z + β1·x, with x eliminated.
Switching modes (``to_eval``/``to_train``) moves the parameter between y and x::

    x = y + (1 - 1/β1)·(z - y)        y = x + (1-β1)·(z - x)

Defaults are schedulefree's: lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
warmup_steps=0, r=0.0, weight_lr_power=2.0. ``weight_decay`` is added to the *normalised*
gradient (so it enters both y and z, scaled by lr_k), not decoupled as AdamW's ``φ·(1-lr·λ)``.

Conventions, where implementations disagree or a choice was needed:

* Group scalars: schedulefree keeps k, lr_max and weight_sum per parameter group and advances
  them once per ``step()`` even for parameters without a gradient; here each array's state
  carries its own copy (:func:`schedule` is the shared computation), which :func:`idle`
  advances on a step where the array has no gradient.
* Mode: schedulefree starts in eval mode (``train_mode=False``) and refuses ``step()`` until
  ``.train()``; it creates z = y lazily on the first step, so a mode switch before then is a no-op.
  :func:`init` sets z = param (the switch is then exactly the identity) and starts in train mode
  (``init(param, train_mode=False)`` for schedulefree's start). :func:`step` requires train mode.
* β1 = 0 makes y = z, and x cannot be recovered from them: :func:`to_eval` refuses it
  (schedulefree divides by zero).
* schedulefree overwrites ``p.grad`` with u; a reference is pure and does not.
* pytorch_optimizer's ``ScheduleFreeAdamW`` counts steps from 1 in the group (``step`` for our
  k+1); the numbers are the same.

>>> import numpy as np
>>> from adamkit.reference import schedule_free
>>> hyper = schedule_free.ScheduleFreeHyper(lr=0.1)
>>> state = schedule_free.init(np.zeros(2))
>>> y, state, aux = schedule_free.step(np.zeros(2), np.array([3.0, -0.5]), state, hyper)
>>> np.round(y, 4), float(aux.c)  # first step: c = 1, so x = z and y = z + β1·(x - z) = z
(array([-0.1,  0.1]), 1.0)
>>> x, state = schedule_free.to_eval(y, state, hyper)
>>> np.round(x, 4)
array([-0.1,  0.1])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ._common import as_real, like_input


@dataclass(frozen=True)
class ScheduleFreeHyper:
    """Schedule-Free AdamW's hyperparameters, with schedulefree's defaults."""

    lr: float = 0.0025
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    warmup_steps: int = 0
    r: float = 0.0
    weight_lr_power: float = 2.0
    maximize: bool = False  # torch's option (adamkit's class has it): g negated first


class ScheduleFreeState(NamedTuple):
    """z and v (``exp_avg_sq``), the group scalars k, lr_max, weight_sum, and the mode."""

    k: int
    lr_max: float
    weight_sum: float
    z: np.ndarray
    v: np.ndarray
    train_mode: bool


class ScheduleFreeAux(NamedTuple):
    """Intermediates of one step: the scheduled lr and the averaging weight c."""

    lr: float  # lr_k, after warmup (schedulefree's ``scheduled_lr``)
    weight: float  # w_k
    c: float  # c_{k+1} = w_k / W, the weight of the new z in the average x
    denom: np.ndarray  # √v̂ + ε
    normalized_grad: np.ndarray  # u = g/(√v̂ + ε) + λ·y


class Schedule(NamedTuple):
    lr: float
    lr_max: float
    weight: float
    weight_sum: float
    c: float


def init(param: np.ndarray, train_mode: bool = True) -> ScheduleFreeState:
    """State for ``param``: z = param, v = 0, no steps, in train mode unless told."""
    phi = as_real(param)
    return ScheduleFreeState(0, -1.0, 0.0, phi.copy(), np.zeros_like(phi), train_mode)


def schedule(k: int, lr_max: float, weight_sum: float, hyper: ScheduleFreeHyper) -> Schedule:
    """The group scalars of step k+1: warmed-up lr, running max lr, weight, sum and c."""
    sched = (k + 1) / hyper.warmup_steps if k < hyper.warmup_steps else 1.0
    lr = hyper.lr * sched
    lr_max = max(lr, lr_max)
    weight = ((k + 1) ** hyper.r) * (lr_max**hyper.weight_lr_power)
    weight_sum = weight_sum + weight
    c = weight / weight_sum if weight_sum != 0.0 else 0.0
    return Schedule(lr, lr_max, weight, weight_sum, c)


def step(
    param: np.ndarray, grad: np.ndarray, state: ScheduleFreeState, hyper: ScheduleFreeHyper
) -> tuple[np.ndarray, ScheduleFreeState, ScheduleFreeAux]:
    """One train-mode step: ``param`` is y, the result is the new y. Pure."""
    if not state.train_mode:
        raise ValueError("Schedule-Free step needs train mode (the param holding y): call to_train")
    y, g = as_real(param), as_real(grad)
    if hyper.maximize:
        g = -g
    s = schedule(state.k, state.lr_max, state.weight_sum, hyper)
    v = hyper.beta2 * state.v + (1.0 - hyper.beta2) * g * g
    denom = np.sqrt(v / (1.0 - hyper.beta2 ** (state.k + 1))) + hyper.eps
    u = g / denom
    if hyper.weight_decay != 0.0:
        u = u + hyper.weight_decay * y
    y_new = y + s.c * (state.z - y) + s.lr * (hyper.beta1 * (1.0 - s.c) - 1.0) * u
    z = state.z - s.lr * u
    new_state = ScheduleFreeState(state.k + 1, s.lr_max, s.weight_sum, z, v, True)
    return like_input(y_new, param), new_state, ScheduleFreeAux(s.lr, s.weight, s.c, denom, u)


def idle(state: ScheduleFreeState, hyper: ScheduleFreeHyper) -> ScheduleFreeState:
    """A step of the group in which this array has no gradient: schedulefree advances the
    group's k, lr_max and weight_sum all the same; z, v and the parameter stay."""
    s = schedule(state.k, state.lr_max, state.weight_sum, hyper)
    return state._replace(k=state.k + 1, lr_max=s.lr_max, weight_sum=s.weight_sum)


def to_eval(
    param: np.ndarray, state: ScheduleFreeState, hyper: ScheduleFreeHyper
) -> tuple[np.ndarray, ScheduleFreeState]:
    """Train → eval: y → x = y + (1 - 1/β1)·(z - y). A no-op in eval mode."""
    if not state.train_mode:
        return param, state
    if hyper.beta1 == 0.0:
        raise ValueError("Schedule-Free with beta1=0 has y = z, so x cannot be recovered")
    y = as_real(param)
    x = y + (1.0 - 1.0 / hyper.beta1) * (state.z - y)
    return like_input(x, param), state._replace(train_mode=False)


def to_train(
    param: np.ndarray, state: ScheduleFreeState, hyper: ScheduleFreeHyper
) -> tuple[np.ndarray, ScheduleFreeState]:
    """Eval → train: x → y = x + (1-β1)·(z - x). A no-op in train mode."""
    if state.train_mode:
        return param, state
    x = as_real(param)
    y = x + (1.0 - hyper.beta1) * (state.z - x)
    return like_input(y, param), state._replace(train_mode=True)
