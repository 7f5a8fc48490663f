r"""AdEMAMix (Pagliardini, Ablin & Grangier, 2024, "The AdEMAMix Optimizer: Better, Faster,
Older"): Adam with a second, slow first moment mixed into the numerator. bitsandbytes'
``AdEMAMix`` signature and defaults (what ``optim="ademamix"`` in HF Trainer gives), the
authors' update (apple/ml-ademamix)::

    α_t  = min(t·α/T_α, α)                    α warmup, linear from 0 (none if T_α is None)
    β3_t = min(β3^(1/(r + s·(1-r))), β3)      β3 warmup, s = min(t/T_β3, 1), r = ln β3/ln β1
    m1_t = β1·m1 + (1-β1)·g                   fast EMA, bias-corrected
    m2_t = β3_t·m2 + (1-β3_t)·g               slow EMA, not bias-corrected
    v_t  = β2·v + (1-β2)·g²
    φ_t  = φ·(1 - α_lr·λ) - α_lr·(m1_t/(1-β1^t) + α_t·m2_t)/(√v_t/√(1-β2^t) + ε)

Three slots: ``exp_avg`` (m1), ``exp_avg_sq`` (v) and ``exp_avg_slow`` (m2), each in its own
low-memory format; a per-param ``step``. Conventions where implementations disagree (the
NumPy reference :mod:`adamkit.reference.ademamix` lists them all):

* defaults are bitsandbytes' (the authors' class has alpha=2 and no weight decay);
* weight decay is decoupled and scales the pre-step φ (bitsandbytes' kernels; the authors add
  λ·φ to the update, the same number up to rounding);
* the β3 warmup is bitsandbytes' closed form ``exp(ln β1·ln β3/((1-s)·ln β3 + s·ln β1))``,
  written here as the power above so that every backend computes it from the step alone
  (equal within float64 rounding; with β1 = 0 its limit β3^(T/t)); s stops at 1, so β3_t = β3
  after the warmup, as in the authors' scheduler (bitsandbytes' form agrees for β3 ≥ β1 and
  overflows past T_β3 for β3 < β1);
* T_α or T_β3 of None or 0 means no warmup; the step t is per parameter (the authors',
  bitsandbytes' class);
* the EMAs are torch's ``lerp`` (exact at both ends), v as Adam's ``β2·v + (1-β2)·g²``;
* with bf16/fp16 params, ``state_precision="fp32"`` keeps the state in the param's dtype, as
  torch.optim does: there the slow EMA's increments (1-β3)·g ≈ 1e-4·m2 are below bfloat16's
  resolution and m2 stops moving. Use ``state_precision="bf16"`` (stochastic rounding, which
  keeps them in expectation) or float32 params; bitsandbytes keeps float32 state;
* state keys are pytorch_optimizer's (``exp_avg``, ``exp_avg_sq``, ``exp_avg_slow``);
  bitsandbytes stacks m1 and m2 in ``state1``, the authors name m1 ``exp_avg_fast``;
* ``maximize`` (torch's option, not in bitsandbytes) negates g first; complex params are pairs
  of reals, as in torch.optim.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from . import _checks
from ._ops import lerp, sqrt, where
from ._spec import AlgorithmSpec, GroupScalars, Hyperparameter, complement, rounded


class Hyper(NamedTuple):  # h: the group's scalars in the data's dtype
    lr: float
    decay: float  # 1 - α·λ
    one_minus_beta1: float
    beta1_complement: float
    beta2: float
    one_minus_beta2: float
    eps: float
    one: float  # 1 in the data's dtype (a literal 1 would promote float32 math to float64)


class Bias(NamedTuple):  # b: float64, what each tensor's scalars are computed from
    lr: float
    beta1: float
    beta2: float
    alpha: float
    t_alpha: float  # 0: no α warmup
    beta3: float
    log_ratio: float  # r = ln β3/ln β1 (0 where β1 or β3 is 0: the limit)
    t_beta3: float  # 0: no β3 warmup


class PerTensor(NamedTuple):  # k: from the tensor's step
    inv_bc1: float  # 1/(1-β1^t)
    inv_sqrt_bc2: float  # 1/√(1-β2^t)
    alpha_t: float
    one_minus_beta3_t: float  # from float64: 1 - round(β3_t) would lose (1-β3_t)'s digits


def element(p, g, s0, s1, s2, h, k, f):
    lr, decay, one_minus_beta1, beta1_complement, beta2, one_minus_beta2, eps, one = (
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7],
    )  # fmt: skip
    g = where(f[0], -g, g)  # maximize
    p = p * decay
    m1 = lerp(s0, g, one_minus_beta1, beta1_complement)
    v = s1 * beta2 + one_minus_beta2 * g * g
    m2 = lerp(s2, g, k[3], one - k[3])  # (1 - w: torch's lerp rounds w first too)
    denom = sqrt(v) * k[1] + eps
    u = lr * ((m1 * k[0] + k[2] * m2) / denom)
    return p - u, m1, v, m2, p, u, g


def intermediates(g, s0, s1, s2, h, k, f, lr):
    """The last step per element, for diagnostics: (m̂1 + α_t·m2, √v̂, α/(√v̂+ε), update). The
    mixed numerator is what stands where Adam's m̂ does; ``slow_ema`` shows m2 alone."""
    mixed = s0 * k[0] + k[2] * s2
    sqrt_v_hat = sqrt(s1) * k[1]
    effective_lr = lr / (sqrt_v_hat + h[6])
    return mixed, sqrt_v_hat, effective_lr, effective_lr * mixed


def advance(step, aux, b):
    return step + 1.0, aux


def tensor_scalars(step, aux, b):
    beta1, beta2, alpha, t_alpha = b[1], b[2], b[3], b[4]
    beta3, log_ratio, t_beta3 = b[5], b[6], b[7]
    # Written with selects, not branches or min(): numba, torch tensors of steps (the Triton
    # driver) and Python floats all run this code.
    ramp = step * alpha / where(t_alpha > 0.0, t_alpha, 1.0)
    alpha_t = where(t_alpha > 0.0, where(ramp < alpha, ramp, alpha), alpha)
    s = step / where(t_beta3 > 0.0, t_beta3, 1.0)
    s = where((t_beta3 > 0.0) & (s < 1.0), s, 1.0)  # s = 1: β3 (no warmup, or past it)
    warm = beta3 ** (1.0 / (log_ratio + s * (1.0 - log_ratio)))
    beta3_t = where(warm < beta3, warm, beta3)
    return 1.0 / (1.0 - beta1**step), 1.0 / (1.0 - beta2**step) ** 0.5, alpha_t, 1.0 - beta3_t


def group_scalars(group, dtype):
    beta1, beta2, beta3 = (float(b) for b in group["betas"])
    lr = float(group["lr"])
    decay = 1 - lr * float(group["weight_decay"])
    h = Hyper(
        lr, decay, 1 - beta1, complement(dtype, 1 - beta1), beta2, 1 - beta2, group["eps"], 1.0
    )
    log_ratio = math.log(beta3) / math.log(beta1) if beta1 > 0 and beta3 > 0 else 0.0
    b = Bias(
        lr, beta1, beta2, float(group["alpha"]), float(group["t_alpha"] or 0), beta3, log_ratio,
        float(group["t_beta3"] or 0),
    )  # fmt: skip
    return GroupScalars(rounded(dtype, *h), b, (bool(group["maximize"]),))


SPEC = AlgorithmSpec(
    name="ademamix",
    torch_name="AdEMAMix",  # not in torch.optim: the class takes the hyperparameters below
    hyperparameters=(
        Hyperparameter("lr", 1e-3, _checks.nonnegative),
        Hyperparameter("betas", (0.9, 0.999, 0.9999), _checks.betas_triple),
        Hyperparameter("alpha", 5.0, _checks.nonnegative),
        Hyperparameter("t_alpha", None, _checks.optional_steps),
        Hyperparameter("t_beta3", None, _checks.optional_steps),
        Hyperparameter("eps", 1e-8, _checks.nonnegative),
        Hyperparameter("weight_decay", 1e-2, _checks.nonnegative),
    ),
    tensor_state=("exp_avg", "exp_avg_sq", "exp_avg_slow"),
    element=element,
    group_scalars=group_scalars,
    advance=advance,
    tensor_scalars=tensor_scalars,
    intermediates=intermediates,
    cautious=True,
)
