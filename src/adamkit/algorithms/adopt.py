r"""ADOPT (Taniguchi et al., 2024, "ADOPT: Modified Adam Can Converge with Any β2 with the
Optimal Rate"), with the authors' ``ADOPT``'s signature, defaults, state and update
(iShohei220/adopt): the gradient is normalised by the *previous* second moment, clipped, and
only then averaged. With s = 0, 1, 2, … the calls before this one (the authors' ``step``)::

    s = 0:   v = g²                                   the first call only initialises v
    s ≥ 1:   n = clip(g / max(√v_{s-1}, ε), ±clip_lambda(s))
             m = lerp(m, n, 1 - β1)
             φ = φ - α·m                              (after φ - α·λ·φ with ``decouple``)
             v = β2·v + (1 - β2)·g²

State ``step``, ``exp_avg`` (m), ``exp_avg_sq`` (v): the authors', so checkpoints move both
ways. Conventions, where implementations disagree (see :mod:`adamkit.reference.adopt`):

* ``clip_lambda(s)`` is called with the authors' s (the first update clips at 1); timm's
  ``Adopt`` indexes alike with a default exponent of 0.333; pytorch_optimizer's is one step
  ahead. The default, ``step**0.25``, is computed inside the kernels from each tensor's step;
  any other callable is evaluated on the host once per distinct step of a group's tensors
  (the authors' foreach path evaluates it once for the group), and None does not clip.
* ``weight_decay`` λ is an L2 term ``g + λ·φ`` (before the first call's v too) unless
  ``decouple``, which decays φ by ``φ - α·λ·φ`` (the authors' ``add_``), not on the first
  call; ε floors √v (it is not added).
* ``cautious`` (timm's ``caution``) masks α·m where m·g ≤ 0 (g with the L2 term); the stored
  m is not masked.
* ``maximize`` negates g first. Complex params are pairs of reals (the authors' |g|² is the
  same sum).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from . import _checks
from ._ops import lerp, nan_max, sqrt, where
from ._spec import AlgorithmSpec, GroupScalars, Hyperparameter, complement, rounded

DEFAULT_CLIP_EXPONENT = 0.25  # the authors' clip_lambda: step**0.25


def default_clip_lambda(step: float) -> float:
    """The authors' default ``clip_lambda``: step**0.25 (computed inside the kernels)."""
    return step**DEFAULT_CLIP_EXPONENT


class Hyper(NamedTuple):  # h: the group's scalars in the data's dtype
    lr: float
    lr_times_decay: float  # α·λ with ``decouple``
    weight_decay: float
    one_minus_beta1: float
    beta1_complement: float
    beta2: float
    one_minus_beta2: float
    eps: float


class PerTensor(NamedTuple):  # k: from the tensor's step
    first: float  # 1 on the first call (only v is set), else 0
    clip: float  # clip_lambda(s); inf: no clip


def element(p, g, s0, s1, s2, h, k, f):
    lr, lr_wd, wd, one_minus_beta1, beta1_complement, beta2, one_minus_beta2, eps = (
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7],
    )  # fmt: skip
    maximize, l2, decouple = f[0], f[1], f[2]
    first, clip = k[0] == 1, k[1]
    g = where(maximize, -g, g)
    g = where(l2, g + wd * p, g)
    n = g / nan_max(sqrt(s1), eps)  # by the previous v (NaN from either side)
    n = where(n > clip, clip, where(n < -clip, -clip, n))  # (NaN stays NaN, as clamp_)
    m = where(first, s0, lerp(s0, n, one_minus_beta1, beta1_complement))
    v = where(first, g * g, s1 * beta2 + one_minus_beta2 * g * g)
    base = where(first, p, where(decouple, p - p * lr_wd, p))
    u = lr * m  # 0 on the first call: m is still its zeros there
    return base - u, m, v, s2, base, u, g


def intermediates(g, s0, s1, s2, h, k, f, lr):
    """The last step per element, for diagnostics: (m, √v, α, α·m). ADOPT's m is already
    normalised (by the √v before the step): the step is α·m, with no scale after it."""
    return s0, sqrt(s1), lr + 0 * s0, lr * s0


def advance(step, aux, b):
    return step + 1.0, aux


def tensor_scalars(step, aux, b):
    # b[3]: 1 where the kernels compute the authors' default clip from the step, else the
    # clip itself (b[4]; inf: none), evaluated on the host for this call's step
    calls_before = step - 1.0
    clip = where(b[3] > 0.0, calls_before**DEFAULT_CLIP_EXPONENT, b[4])
    return where(step == 1.0, 1.0, 0.0), clip, 0.0, 0.0


def group_scalars(group, dtype):
    lr, wd = float(group["lr"]), float(group["weight_decay"])
    beta1, beta2 = (float(b) for b in group["betas"])
    decouple = bool(group["decouple"])
    h = Hyper(
        lr, lr * wd if decouple else 0.0, wd, 1 - beta1, complement(dtype, 1 - beta1),
        beta2, 1 - beta2, float(group["eps"]),
    )  # fmt: skip
    clip = group.get("host_clip")  # the optimizer's, for a clip_lambda it evaluates
    in_kernel = clip is None
    b = (lr, beta1, beta2, 1.0 if in_kernel else 0.0, math.inf if in_kernel else float(clip))
    flags = (bool(group["maximize"]), wd != 0 and not decouple, decouple)
    return GroupScalars(rounded(dtype, *h), b, flags)


SPEC = AlgorithmSpec(
    name="adopt",
    torch_name="ADOPT",  # not in torch.optim: the class takes the authors' arguments
    hyperparameters=(
        Hyperparameter("lr", 1e-3, _checks.nonnegative),
        Hyperparameter("betas", (0.9, 0.9999), _checks.betas_pair),
        Hyperparameter("eps", 1e-6, _checks.nonnegative),
        Hyperparameter("weight_decay", 0.0, _checks.nonnegative),
        Hyperparameter("decouple", False),
    ),
    tensor_state=("exp_avg", "exp_avg_sq"),
    element=element,
    group_scalars=group_scalars,
    advance=advance,
    tensor_scalars=tensor_scalars,
    intermediates=intermediates,
    cautious=True,
    host_scalars=("host_clip",),
)
