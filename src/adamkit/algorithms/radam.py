r"""RAdam (Liu et al., 2020): Adam whose adaptive step is switched on once the variance of
√v̂ is tractable, as torch.optim.RAdam computes it.

With ρ_∞ = 2/(1-β2) - 1 and ρ_t = ρ_∞ - 2t·β2^t/(1-β2^t)::

    m_t = β1·m_{t-1} + (1-β1)·g_t,   v_t = β2·v_{t-1} + (1-β2)·g_t²,   m̂_t = m_t/(1-β1^t)
    ρ_t > 5:  φ_t = φ_{t-1} - α·m̂_t·r_t·√(1-β2^t)/(√v_t + ε),
              r_t = √((ρ_t-4)(ρ_t-2)ρ_∞ / ((ρ_∞-4)(ρ_∞-2)ρ_t))
    else:     φ_t = φ_{t-1} - α·m̂_t                       (SGD with momentum, no adaptive step)

Note ε is added to √v_t *before* bias correction here (torch's and the paper's RAdam),
unlike Adam. ``weight_decay`` is L2, or decoupled with ``decoupled_weight_decay``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch.optim.radam import radam as torch_radam

from . import _checks
from ._ops import lerp, sqrt, where
from ._spec import AlgorithmSpec, GroupScalars, Hyperparameter, complement, rounded
from ._spec import weight_decay_scalars as _weight_decay


class Hyper(NamedTuple):  # h: the group's scalars in the data's dtype
    decay: float
    weight_decay: float
    one_minus_beta1: float
    beta1_complement: float
    beta2: float
    one_minus_beta2: float
    eps: float


class PerTensor(NamedTuple):  # k: from the tensor's step
    step_size: float  # α/(1-β1^t)
    adaptive_coef: float  # r_t·√(1-β2^t) when rectified
    rectified: float  # 1.0 when ρ_t > 5, else 0.0
    one: float  # 1.0 in the data's dtype (a literal 1.0 would promote float32 math to float64)


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
    adaptive = where(k[2] != 0, k[1] / (sqrt(v) + eps), k[3])
    u = k[0] * m * adaptive
    return p - u, m, v, s2, p, u, g


def advance(step, aux, b):
    return step + 1.0, aux


def tensor_scalars(step, aux, b):
    lr, beta1, beta2 = b[0], b[1], b[2]
    bias_correction2 = 1.0 - beta2**step
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2**step / bias_correction2
    rectified = rho_t > 5.0
    # Selected before the root: (ρ_t-4)(ρ_t-2) is negative for small ρ_t.
    ratio = where(
        rectified,
        (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t),
        0.0,
    )
    return (
        lr / (1.0 - beta1**step),
        sqrt(ratio) * sqrt(bias_correction2),
        where(rectified, 1.0, 0.0),
        1.0,
    )


def intermediates(g, s0, s1, s2, h, k, f, lr):
    """The last step per element, for diagnostics: (m̂, √v, effective lr, update). RAdam's ε
    is added to √v before bias correction, so its scale is √v (not √v̂); while ρ_t ≤ 5 the
    effective lr is α itself (momentum SGD steps)."""
    m_hat = s0 * k[0] / lr
    sqrt_v = sqrt(s1)
    effective_lr = where(k[2] != 0, lr * k[1] / (sqrt_v + h[6]), lr * k[3])
    return m_hat, sqrt_v, effective_lr, m_hat * effective_lr


def group_scalars(group, dtype):
    beta1, beta2 = (float(b) for b in group["betas"])
    lr = float(group["lr"])
    decay, wd, l2 = _weight_decay(group, lr)
    h = Hyper(decay, wd, 1 - beta1, complement(dtype, 1 - beta1), beta2, 1 - beta2, group["eps"])
    return GroupScalars(rounded(dtype, *h), (lr, beta1, beta2), (bool(group["maximize"]), l2))


def torch_step(params, grads, states, steps, aux, group: dict[str, Any], **flags):
    beta1, beta2 = group["betas"]
    torch_radam(
        params, grads, states[0], states[1], steps,
        decoupled_weight_decay=group["decoupled_weight_decay"], maximize=group["maximize"],
        beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], **flags,
    )  # fmt: skip


SPEC = AlgorithmSpec(
    name="radam",
    torch_name="RAdam",
    hyperparameters=(
        Hyperparameter("lr", 1e-3, _checks.nonnegative),
        Hyperparameter("eps", 1e-8, _checks.nonnegative),
        Hyperparameter("betas", (0.9, 0.999), _checks.betas_pair),
        Hyperparameter("weight_decay", 0, _checks.nonnegative),
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
)
