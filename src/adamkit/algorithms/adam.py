r"""Adam and AdamW (Kingma & Ba, 2015; Loshchilov & Hutter, 2019), as torch.optim computes them.

The equations are :mod:`adamkit.reference.adam`'s. This spec holds the hyperparameter checks,
the state keys and the per-element update every fused kernel runs (numba on the CPU, Triton);
the for-loop and foreach kernels are torch's own functional update, and on CUDA the default is
torch's fused kernel until the Triton one has passed the parity suite on a GPU.

Per element, with ``k`` = (α/(1-β1^t), 1/√(1-β2^t)): √v̂ is computed as √v·(1/√(1-β2^t)), one
division per element instead of torch's two (within an ulp); AMSGrad's max propagates NaN.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch.optim.adam import adam as torch_adam

from . import _checks
from ._ops import lerp, nan_max, sqrt, where
from ._spec import AlgorithmSpec, GroupScalars, Hyperparameter, complement, rounded
from ._spec import weight_decay_scalars as _weight_decay


class Hyper(NamedTuple):  # h: the group's scalars in the data's dtype
    decay: float  # 1 - α·λ with decoupled weight decay, else exactly 1
    weight_decay: float
    one_minus_beta1: float
    beta1_complement: float
    beta2: float
    one_minus_beta2: float
    eps: float


class PerTensor(NamedTuple):  # k: from the tensor's step
    step_size: float  # α/(1-β1^t)
    inv_sqrt_bc2: float  # 1/√(1-β2^t)


def element(p, g, s0, s1, s2, h, k, f):
    decay, wd, one_minus_beta1, beta1_complement, beta2, one_minus_beta2, eps = (
        h[0], h[1], h[2], h[3], h[4], h[5], h[6],
    )  # fmt: skip
    maximize, l2, amsgrad = f[0], f[1], f[2]
    g = where(maximize, -g, g)
    p = p * decay
    g = where(l2, g + wd * p, g)
    m = lerp(s0, g, one_minus_beta1, beta1_complement)
    v = s1 * beta2 + one_minus_beta2 * g * g
    v_max = nan_max(s2, v)  # s2: max_exp_avg_sq with amsgrad, else a stand-in never stored
    denom = sqrt(where(amsgrad, v_max, v)) * k[1] + eps
    u = k[0] * (m / denom)
    return p - u, m, v, v_max, p, u, g


def intermediates(g, s0, s1, s2, h, k, f, lr):
    """The last step per element, for diagnostics: (m̂, √v̂, α/(√v̂+ε), update); with
    AMSGrad √v̂ is of the running max of v (what the step divided by)."""
    m_hat = s0 * k[0] / lr
    sqrt_v_hat = sqrt(where(f[2], s2, s1)) * k[1]
    effective_lr = lr / (sqrt_v_hat + h[6])
    return m_hat, sqrt_v_hat, effective_lr, effective_lr * m_hat


def advance(step, aux, b):
    return step + 1.0, aux


def tensor_scalars(step, aux, b):
    lr, beta1, beta2 = b[0], b[1], b[2]
    # In float64 from the step, as torch's for-loop computes them in Python floats.
    return lr / (1.0 - beta1**step), 1.0 / (1.0 - beta2**step) ** 0.5, 0.0, 0.0


def group_scalars(group, dtype):
    beta1, beta2 = (float(b) for b in group["betas"])
    lr = float(group["lr"])
    decay, wd, l2 = _weight_decay(group, lr)
    h = Hyper(decay, wd, 1 - beta1, complement(dtype, 1 - beta1), beta2, 1 - beta2, group["eps"])
    flags = (bool(group["maximize"]), l2, bool(group["amsgrad"]))
    return GroupScalars(rounded(dtype, *h), (lr, beta1, beta2), flags)


def torch_step(params, grads, states, steps, aux, group: dict[str, Any], **flags):
    beta1, beta2 = group["betas"]
    torch_adam(
        params, grads, states[0], states[1], states[2], steps, amsgrad=group["amsgrad"],
        beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
        maximize=group["maximize"], decoupled_weight_decay=group["decoupled_weight_decay"],
        **flags,
    )  # fmt: skip


SPEC = AlgorithmSpec(
    name="adam",
    torch_name="Adam",
    hyperparameters=(
        Hyperparameter("lr", 1e-3, _checks.nonnegative),
        Hyperparameter("eps", 1e-8, _checks.nonnegative),
        Hyperparameter("betas", (0.9, 0.999), _checks.betas_pair),
        Hyperparameter("weight_decay", 0, _checks.nonnegative),
        Hyperparameter("amsgrad", False),
        Hyperparameter("decoupled_weight_decay", False),
    ),
    tensor_state=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
    slot_flags=(None, None, 2),  # max_exp_avg_sq with amsgrad
    slot_options=(None, None, "amsgrad"),
    element=element,
    group_scalars=group_scalars,
    advance=advance,
    tensor_scalars=tensor_scalars,
    torch_functional=torch_step,
    intermediates=intermediates,
    cautious=True,
)
