r"""Adamax (Kingma & Ba, 2015, §7.1): Adam with the infinity norm in place of v, as
torch.optim.Adamax computes it::

    m_t = β1·m_{t-1} + (1-β1)·g_t
    u_t = max(β2·u_{t-1}, |g_t| + ε)
    φ_t = φ_{t-1} - α/(1-β1^t) · m_t/u_t

u is the state ``exp_inf``; ε inside the max (torch's placement; the paper has none) keeps
u_t > 0. ``weight_decay`` is L2 only (torch's Adamax has no decoupled form). The max
propagates NaN, as torch.maximum does.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch.optim.adamax import adamax as torch_adamax

from . import _checks
from ._ops import absolute, lerp, nan_max, where
from ._spec import AlgorithmSpec, GroupScalars, Hyperparameter, complement, rounded


class Hyper(NamedTuple):  # h: the group's scalars in the data's dtype
    weight_decay: float
    one_minus_beta1: float
    beta1_complement: float
    beta2: float
    eps: float


class PerTensor(NamedTuple):  # k: from the tensor's step
    step_size: float  # α/(1-β1^t)


def element(p, g, s0, s1, s2, h, k, f):
    wd, one_minus_beta1, beta1_complement, beta2, eps = h[0], h[1], h[2], h[3], h[4]
    maximize, l2 = f[0], f[1]
    g = where(maximize, -g, g)
    g = where(l2, g + wd * p, g)
    m = lerp(s0, g, one_minus_beta1, beta1_complement)
    u = nan_max(s1 * beta2, absolute(g) + eps)
    step = k[0] * (m / u)
    return p - step, m, u, s2, p, step, g


def advance(step, aux, b):
    return step + 1.0, aux


def tensor_scalars(step, aux, b):
    return b[0] / (1.0 - b[1] ** step), 0.0, 0.0, 0.0


def intermediates(g, s0, s1, s2, h, k, f, lr):
    """The last step per element, for diagnostics: (m̂, u, α/u, update), u = exp_inf the
    infinity-norm scale (ε is inside it)."""
    m_hat = s0 * k[0] / lr
    effective_lr = lr / s1
    return m_hat, s1, effective_lr, m_hat * effective_lr


def group_scalars(group, dtype):
    beta1, beta2 = (float(b) for b in group["betas"])
    wd = float(group["weight_decay"])
    h = Hyper(wd, 1 - beta1, complement(dtype, 1 - beta1), beta2, group["eps"])
    return GroupScalars(
        rounded(dtype, *h), (float(group["lr"]), beta1), (bool(group["maximize"]), wd != 0)
    )


def torch_step(params, grads, states, steps, aux, group: dict[str, Any], **flags):
    beta1, beta2 = group["betas"]
    torch_adamax(
        params, grads, states[0], states[1], steps, maximize=group["maximize"],
        eps=group["eps"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], **flags,
    )  # fmt: skip


SPEC = AlgorithmSpec(
    name="adamax",
    torch_name="Adamax",
    hyperparameters=(
        Hyperparameter("lr", 2e-3, _checks.nonnegative),
        Hyperparameter("eps", 1e-8, _checks.nonnegative),
        Hyperparameter("betas", (0.9, 0.999), _checks.betas_pair),
        Hyperparameter("weight_decay", 0, _checks.nonnegative),
    ),
    tensor_state=("exp_avg", "exp_inf"),
    element=element,
    group_scalars=group_scalars,
    advance=advance,
    tensor_scalars=tensor_scalars,
    torch_functional=torch_step,
    intermediates=intermediates,
    cautious=True,
)
