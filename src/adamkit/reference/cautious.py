r"""Cautious masking (Liang et al., 2024, "Cautious Optimizers") in NumPy float64, as timm does it.

One function for every optimizer: given the update direction ``u`` an optimizer is about to
apply (before the learning rate's sign, i.e. the step is ``φ ← φ - lr·u``) and the gradient
``g`` it was computed from::

    mask_i = 1 if u_i·g_i > 0 else 0           a zero (or NaN) product is masked out
    u'     = u · mask / max(mean(mask), 1e-3)  renormalised so the mean step size is kept

Coordinates where the update would move *against* the current gradient are frozen for this step.
The references take it as a flag (``cautious=True``): Adam/AdamW, AdEMAMix, ADOPT and Lion.

Conventions, where implementations disagree (adamkit follows timm, ``timm/optim/adamw.py`` and
friends, because its ``c*`` optimizers are the ones people use):

* timm masks the first moment ``m`` (``exp_avg * grad > 0``) before dividing by the Adam
  denominator; since ``√v̂ + ε > 0`` and the bias correction is positive, ``u = m̂/(√v̂+ε)`` has the
  sign of ``m`` and the two masks are equal. For Lion timm masks ``sign(β1·m + (1-β1)·g)``.
* The renormalisation is ``1/max(mean(mask), 1e-3)`` (timm). pytorch_optimizer uses
  ``numel/(sum(mask) + 1)``; lion-pytorch's ``cautious_lion`` uses a ``cautious_factor`` (0 gives
  the mask) and ``1/max(mean, 1e-5)``.
* Decoupled weight decay (``φ·(1 - lr·λ)``) is *not* masked (timm; lion-pytorch masks it only
  with ``cautious_wd=True``). With L2 decay (``decoupled=False``) the decay term is part of ``g``,
  so the ``g`` that the mask compares against is ``g + λ·φ``, the gradient the moments see — as
  timm's ADOPT does. ``maximize`` negates ``g`` first.
* A NaN in u stays NaN (NaN·0), as in timm. An empty tensor has nothing to mask (the scale
  is 1 there, not the NaN of an empty mean).

>>> import numpy as np
>>> from adamkit.reference import cautious
>>> cautious.apply(np.array([1.0, -2.0, 3.0, 0.5]), np.array([2.0, -1.0, 0.0, -4.0]))
array([ 2., -4.,  0.,  0.])
"""

from __future__ import annotations

import numpy as np

MASK_FLOOR = 1e-3  # timm's floor on mean(mask)


def scale(update: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """The factor ``mask / max(mean(mask), 1e-3)`` that multiplies ``update``."""
    mask = (update * grad > 0).astype(np.float64)
    if mask.size == 0:
        return mask
    return mask / max(float(mask.mean()), MASK_FLOOR)


def apply(update: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """``update`` masked where it disagrees in sign with ``grad``, renormalised as timm does."""
    return update * scale(update, grad)
