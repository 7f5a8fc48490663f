r"""StableAdamW (Wortsman et al., 2023, "Stable and low-precision training for large-scale
vision-language models"), with torch-optimi's ``StableAdamW``'s signature, defaults, state
and update: AdamW whose learning rate is divided, per tensor, by the RMS of g²/v̂ when that
exceeds 1 (Adafactor's update clipping)::

    β̂_t  = (β^t - β)/(β^t - 1)                     "debiased" betas: 0 at t = 1, → β
    m_t  = lerp(m_{t-1}, g_t, 1 - β̂1_t)            the bias-corrected averages themselves
    v_t  = β̂2_t·v_{t-1} + (1 - β̂2_t)·g_t²
    rms  = √mean(g_t² / max(v_t, ε²))              over the whole tensor, the UPDATED v_t
    α_t  = α / max(1, rms)
    φ_t  = φ_{t-1}·(1 - α_t·λ) - α_t·m_t/(√v_t + ε)

The RMS is a per-tensor reduction: every driver computes it in a read-only pass before the
update (the spec's ``reduction``), on the device, with no host synchronisation (optimi reads
it back with ``.item()`` per tensor).

Conventions, where implementations disagree (see :mod:`adamkit.reference.stable_adamw`):

* optimi's state: ``exp_avg`` and ``exp_avg_sq`` hold m̂ and v̂ (not torch AdamW's
  un-corrected moments); the step is counted per parameter (optimi counts per group; equal
  while every parameter has a gradient at every step); optimi's ``eps_sq`` and
  ``kahan_comp`` state are not kept (ε² comes from the group; Kahan summation is
  ``param_rounding="kahan"``). The group holds ``betas`` (torch's key; optimi's ``beta1``
  and ``beta2``).
* ``decouple_lr=True`` is optimi's "fully decoupled" decay ``φ·(1 - (α_t/max_lr)·λ)``;
  ``max_lr`` None means the group's current lr (optimi takes the lr given to the
  constructor: pass ``max_lr`` when lr is scheduled).
* An empty tensor has rms 0; a NaN rms clips nothing (``max(1, nan)`` is 1, as in Python).
* ``maximize`` (torch's option; optimi has none) negates g first.
"""

from __future__ import annotations

from typing import NamedTuple

from . import _checks
from ._ops import lerp, nan_max, sqrt, where
from ._spec import REQUIRED, AlgorithmSpec, GroupScalars, Hyperparameter, rounded


class Hyper(NamedTuple):  # h: the group's scalars in the data's dtype
    lr: float
    weight_decay: float
    eps: float
    eps_squared: float
    one: float
    max_lr: float


class PerTensor(NamedTuple):  # k: from the tensor's step (then the reduction's k[4], k[5])
    beta1_weight: float  # 1 - β̂1_t, lerp's weight
    beta2_hat: float  # β̂2_t
    one_minus_beta2_hat: float
    beta1_hat: float  # lerp's 1 - weight


def element(p, g, s0, s1, s2, h, k, f):
    lr, wd, eps, one, max_lr = h[0], h[1], h[2], h[4], h[5]
    g = where(f[0], -g, g)  # maximize
    m = lerp(s0, g, k[0], k[3])
    v = s1 * k[1] + k[2] * g * g
    rms = sqrt(k[4] / where(k[5] > 0, k[5], one))  # k[4]: Σ g²/max(v, ε²); k[5]: its count
    lr_t = lr / where(rms > one, rms, one)  # (a NaN rms clips nothing, as max(1, nan))
    base = p * (one - where(f[1], lr_t / max_lr, lr_t) * wd)
    u = lr_t * (m / (sqrt(v) + eps))
    return base - u, m, v, s2, base, u, g


def reduction(g, s0, s1, s2, h, k, f):
    """g²/max(v_t, ε²) with the updated v_t (optimi's ``maximum`` propagates NaN)."""
    return g * g / nan_max(s1, h[3])


def intermediates(g, s0, s1, s2, h, k, f, lr):
    """The last step per element, for diagnostics: (m̂, √v̂, α/(√v̂+ε), update) before the
    per-tensor clip (the diagnostics see samples, not the whole tensor's RMS)."""
    sqrt_v_hat = sqrt(s1)
    effective_lr = lr / (sqrt_v_hat + h[2])
    return s0, sqrt_v_hat, effective_lr, effective_lr * s0


def advance(step, aux, b):
    return step + 1.0, aux


def _debiased(beta, step):
    power = beta**step
    return (power - beta) / (power - 1.0)


def tensor_scalars(step, aux, b):
    beta1_hat, beta2_hat = _debiased(b[1], step), _debiased(b[2], step)
    return 1.0 - beta1_hat, beta2_hat, 1.0 - beta2_hat, beta1_hat


def group_scalars(group, dtype):
    lr = float(group["lr"])
    beta1, beta2 = (float(b) for b in group["betas"])
    eps = float(group["eps"])
    max_lr = lr if group["max_lr"] is None else float(group["max_lr"])
    h = Hyper(lr, float(group["weight_decay"]), eps, eps**2, 1.0, max_lr)
    flags = (bool(group["maximize"]), bool(group["decouple_lr"]))
    return GroupScalars(rounded(dtype, *h), (lr, beta1, beta2), flags)


SPEC = AlgorithmSpec(
    name="stable_adamw",
    torch_name="StableAdamW",  # not in torch.optim: the class takes the hyperparameters below
    hyperparameters=(
        Hyperparameter("lr", REQUIRED, _checks.nonnegative),
        Hyperparameter("betas", (0.9, 0.99), _checks.betas_pair),
        Hyperparameter("weight_decay", 1e-2, _checks.nonnegative),
        Hyperparameter("eps", 1e-6, _checks.nonnegative),
        Hyperparameter("decouple_lr", False),
        Hyperparameter("max_lr", None, _checks.optional_positive),
    ),
    tensor_state=("exp_avg", "exp_avg_sq"),
    element=element,
    group_scalars=group_scalars,
    advance=advance,
    tensor_scalars=tensor_scalars,
    intermediates=intermediates,
    reduction=reduction,
)
