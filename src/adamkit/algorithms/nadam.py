r"""NAdam (Dozat, 2016): Adam with Nesterov momentum, as torch.optim.NAdam computes it.

With μ_t = β1·(1 - ½·0.96^(t·ψ)) (ψ = ``momentum_decay``) and Π_t = μ_1···μ_t::

    m_t = β1·m_{t-1} + (1-β1)·g_t,   v_t = β2·v_{t-1} + (1-β2)·g_t²
    φ_t = φ_{t-1} - α·(1-μ_t)/(1-Π_t) · g_t/(√v̂_t + ε) - α·μ_{t+1}/(1-Π_t·μ_{t+1}) · m_t/(√v̂_t + ε)

v̂_t = v_t/(1-β2^t); ε after the square root, as in Adam. Π_t is the state ``mu_product``, a
float32 scalar as torch keeps it. ``weight_decay`` is L2, or decoupled (φ·(1-αλ)) with
``decoupled_weight_decay``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch.optim.nadam import nadam as torch_nadam

from . import _checks
from ._ops import lerp, sqrt, to_float32, where
from ._spec import AlgorithmSpec, GroupScalars, Hyperparameter, complement, rounded
from ._spec import weight_decay_scalars as _weight_decay


class Hyper(NamedTuple):  # h: the group's scalars in the data's dtype
    decay: float
    weight_decay: float
    one_minus_beta1: float
    beta1_complement: float  # 1 - (1-β1) in the data's dtype: torch's lerp
    beta2: float
    one_minus_beta2: float
    eps: float


class PerTensor(NamedTuple):  # k: from the tensor's step and mu_product
    grad_coef: float  # -α·(1-μ_t)/(1-Π_t)
    exp_avg_coef: float  # -α·μ_{t+1}/(1-Π_t·μ_{t+1})
    inv_sqrt_bc2: float  # 1/√(1-β2^t)


def element(p, g, s0, s1, s2, h, k, f):
    decay, wd, one_minus_beta1, beta1_complement, beta2, one_minus_beta2, eps = (
        h[0], h[1], h[2], h[3], h[4], h[5], h[6],
    )  # fmt: skip
    maximize, l2 = f[0], f[1]
    g = where(maximize, -g, g)
    p = p * decay
    g = where(l2, g + wd * p, g)
    m = lerp(s0, g, one_minus_beta1, beta1_complement)
    v = s1 * beta2 + one_minus_beta2 * g * g
    # Each term over the denominator, as torch's two addcdiv_: 0/0 stays NaN where one
    # division of the sum would give ±inf.
    denom = sqrt(v) * k[2] + eps
    new_p = p + k[0] * (g / denom) + k[1] * (m / denom)  # (k[0], k[1] < 0)
    return new_p, m, v, s2, p, -(k[0] * (g / denom) + k[1] * (m / denom)), g


def _mu(beta1, momentum_decay, step):
    return beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))


def advance(step, mu_product, b):
    step = step + 1.0
    # Π_t = Π_{t-1}·μ_t in float32, as torch multiplies its float32 tensor.
    return step, to_float32(to_float32(mu_product) * to_float32(_mu(b[1], b[3], step)))


def tensor_scalars(step, mu_product, b):
    lr, beta1, beta2, momentum_decay = b[0], b[1], b[2], b[3]
    mu = _mu(beta1, momentum_decay, step)
    mu_next = _mu(beta1, momentum_decay, step + 1.0)
    product = 1.0 * mu_product  # float64 from here on, as torch's Python floats
    return (
        -lr * (1.0 - mu) / (1.0 - product),
        -lr * mu_next / (1.0 - product * mu_next),
        1.0 / sqrt(1.0 - beta2**step),
        0.0,
    )


def intermediates(g, s0, s1, s2, h, k, f, lr):
    """The last step per element, for diagnostics: (m̂, √v̂, α/(√v̂+ε), update). NAdam's m̂ is
    its look-ahead moment, (1-μ_t)/(1-Π_t)·g + μ_{t+1}/(1-Π_t·μ_{t+1})·m, so that update =
    effective lr · m̂ as in Adam (weight decay aside)."""
    sqrt_v_hat = sqrt(s1) * k[2]
    denom = sqrt_v_hat + h[6]
    update = -(k[0] * (g / denom) + k[1] * (s0 / denom))
    return update * denom / lr, sqrt_v_hat, lr / denom, update


def group_scalars(group, dtype):
    beta1, beta2 = (float(b) for b in group["betas"])
    lr = float(group["lr"])
    decay, wd, l2 = _weight_decay(group, lr)
    h = Hyper(decay, wd, 1 - beta1, complement(dtype, 1 - beta1), beta2, 1 - beta2, group["eps"])
    return GroupScalars(
        rounded(dtype, *h),
        (lr, beta1, beta2, float(group["momentum_decay"])),
        (bool(group["maximize"]), l2),
    )


def torch_step(params, grads, states, steps, mu_products, group: dict[str, Any], **flags):
    beta1, beta2 = group["betas"]
    torch_nadam(
        params, grads, states[0], states[1], mu_products, steps,
        decoupled_weight_decay=group["decoupled_weight_decay"], maximize=group["maximize"],
        beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
        momentum_decay=group["momentum_decay"], eps=group["eps"], **flags,
    )  # fmt: skip


SPEC = AlgorithmSpec(
    name="nadam",
    torch_name="NAdam",
    hyperparameters=(
        Hyperparameter("lr", 2e-3, _checks.nonnegative),
        Hyperparameter("eps", 1e-8, _checks.nonnegative),  # checked in torch's order
        Hyperparameter("betas", (0.9, 0.999), _checks.betas_pair),
        Hyperparameter("weight_decay", 0, _checks.nonnegative),
        Hyperparameter("momentum_decay", 4e-3, _checks.nonnegative),
        Hyperparameter("decoupled_weight_decay", False),
    ),
    tensor_state=("exp_avg", "exp_avg_sq"),
    element=element,
    group_scalars=group_scalars,
    advance=advance,
    tensor_scalars=tensor_scalars,
    torch_functional=torch_step,
    intermediates=intermediates,
    cautious=True,
    scalar_state="mu_product",
    scalar_state_init=1.0,
)
