r"""Lion (Chen et al., 2023, "Symbolic Discovery of Optimization Algorithms"), with lion-pytorch's
``Lion``'s signature, defaults, state and update::

    c_t = β1·m_{t-1} + (1-β1)·g_t          the interpolation with the current gradient
    φ_t = φ_{t-1}·(1 - α·λ) - α·sign(c_t)  every coordinate moves by α (0 where c_t = 0)
    m_t = β2·m_{t-1} + (1-β2)·g_t          the stored momentum uses the other beta

One slot, ``exp_avg`` (m), and no step count: the state is lion-pytorch's, so checkpoints move
both ways. Conventions, where implementations disagree (see :mod:`adamkit.reference.lion`):

* weight decay is decoupled and applied to the pre-step φ with the current lr (lion-pytorch,
  timm, optimi); lion-pytorch's ``decoupled_weight_decay`` (λ divided by the first lr) and
  ``use_triton`` are not taken;
* the EMAs are written ``m·β + g·(1-β)`` as lion-pytorch does, rounded after the multiply and
  after the add; lion-pytorch's ``add(g, alpha=1-β)`` is one fused multiply-add on the CPU, so
  its m can differ by an ulp (timm writes ``lerp``: equal up to rounding too); either can flip
  a sign only where c is within rounding of 0;
* complex params are pairs of reals (each part moves by ±α), as in every torch.optim
  optimizer; lion-pytorch's ``sgn`` of a complex c is c/|c|;
* ``sign`` is torch's: 0 for c = 0 and for NaN (a NaN gradient leaves φ where it is and makes
  m NaN, as in lion-pytorch; ``on_nonfinite="skip"`` or ``"raise"`` guard against it);
* ``maximize`` (timm's, torch's option) negates g first.

Lion's lr is usually 3-10× smaller than AdamW's and its λ larger, since every coordinate
moves by the full lr.
"""

from __future__ import annotations

from typing import NamedTuple

from . import _checks
from ._ops import sign, where
from ._spec import AlgorithmSpec, GroupScalars, Hyperparameter, rounded


class Hyper(NamedTuple):  # h: the group's scalars in the data's dtype
    lr: float
    decay: float  # 1 - α·λ
    beta1: float
    one_minus_beta1: float
    beta2: float
    one_minus_beta2: float


def element(p, g, s0, s1, s2, h, k, f):
    lr, decay, beta1, one_minus_beta1, beta2, one_minus_beta2 = h[0], h[1], h[2], h[3], h[4], h[5]
    g = where(f[0], -g, g)  # maximize
    c = s0 * beta1 + g * one_minus_beta1
    m = s0 * beta2 + g * one_minus_beta2
    base, u = p * decay, lr * sign(c)
    return base - u, m, s1, s2, base, u, g


def advance(step, aux, b):
    return step + 1.0, aux  # low-memory state's count; the fp32 state keeps none


def tensor_scalars(step, aux, b):
    return 0.0, 0.0, 0.0, 0.0


def intermediates(g, s0, s1, s2, h, k, f, lr):
    """The last step per element, for diagnostics: (m, None, α, α·sign(c)). Lion has no
    scale: every coordinate moves by α. c is recomputed from m_t and g_t (m_{t-1} = (m_t -
    (1-β2)·g_t)/β2; with β2 = 0, m_{t-1} is gone and shown as 0)."""
    beta1, one_minus_beta1, beta2, one_minus_beta2 = h[2], h[3], h[4], h[5]
    previous = where(beta2 > 0, (s0 - one_minus_beta2 * g) / beta2, 0 * g)
    update = lr * sign(previous * beta1 + g * one_minus_beta1)
    return s0, None, lr + 0 * g, update


def group_scalars(group, dtype):
    lr, wd = float(group["lr"]), float(group["weight_decay"])
    beta1, beta2 = (float(b) for b in group["betas"])
    h = Hyper(lr, 1 - lr * wd, beta1, 1 - beta1, beta2, 1 - beta2)
    return GroupScalars(rounded(dtype, *h), (), (bool(group["maximize"]),))


SPEC = AlgorithmSpec(
    name="lion",
    torch_name="Lion",  # not in torch.optim: the class takes the hyperparameters below
    hyperparameters=(
        Hyperparameter("lr", 1e-4, _checks.nonnegative),
        Hyperparameter("betas", (0.9, 0.99), _checks.betas_pair),
        Hyperparameter("weight_decay", 0.0, _checks.nonnegative),
    ),
    tensor_state=("exp_avg",),
    element=element,
    group_scalars=group_scalars,
    advance=advance,
    tensor_scalars=tensor_scalars,
    intermediates=intermediates,
    cautious=True,
    counted=False,
)
