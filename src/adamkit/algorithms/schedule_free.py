r"""Schedule-Free AdamW (Defazio et al., 2024, "The Road Less Scheduled"), as schedulefree's
``AdamWScheduleFree`` computes it: no learning-rate schedule, an average instead.

Three sequences: z (the base iterate, stored), x (the weighted average of the z's, what to
evaluate) and y = (1-β1)·z + β1·x (where the gradient is taken). The parameter holds y in
train mode and x in eval mode. With the group's step count k = 0, 1, …::

    lr_k    = lr·min(1, (k+1)/warmup_steps)                    linear warmup (none if 0)
    lr_max  = max(lr_max, lr_k),  w_k = (k+1)^r·lr_max^weight_lr_power,  W = W + w_k
    c       = w_k/W  (0 if W = 0)                              the averaging weight
    v       = β2·v + (1-β2)·g²,  u = g/(√(v/(1-β2^(k+1))) + ε) + λ·y
    y      ← y + c·(z - y) + lr_k·(β1·(1-c) - 1)·u
    z      ← z - lr_k·u

Slots ``z`` (starts as the parameter) and ``exp_avg_sq``, no per-param count: k, lr_max,
weight_sum, scheduled_lr and train_mode live in each param group, as schedulefree keeps them
(its checkpoints load both ways), and advance once per ``step()``, for every group, whether or
not its params have gradients. Conventions (the NumPy reference
:mod:`adamkit.reference.schedule_free` lists them):

* ``weight_decay`` is added to the normalised gradient at y (schedulefree's; it enters y and z
  scaled by lr_k), not AdamW's decoupled ``φ·(1-lr·λ)``;
* adamkit never writes ``p.grad`` (schedulefree divides it in place);
* ``maximize`` (torch's option, not in schedulefree) negates g first; complex params are pairs
  of reals, as in torch.optim;
* rounding: every product rounded on its own (schedulefree's ``add(alpha=)`` is a fused
  multiply-add on the CPU), so results agree with schedulefree's to rounding, not bit for bit.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import _checks
from ._ops import lerp, sqrt, where
from ._spec import AlgorithmSpec, GroupScalars, Hyperparameter, complement, rounded


class Hyper(NamedTuple):  # h: the group's scalars in the data's dtype, after its advance
    beta2: float
    one_minus_beta2: float
    eps: float
    weight_decay: float
    c: float  # the averaging weight w_k/W
    c_complement: float  # 1 - c, as torch's lerp computes it
    y_step: float  # lr_k·(β1·(1-c) - 1)
    lr: float  # lr_k


# The group state schedulefree keeps in each param group: (key, value before the first step).
GROUP_STATE = (
    ("k", 0),
    ("train_mode", False),
    ("weight_sum", 0.0),
    ("lr_max", -1.0),
    ("scheduled_lr", 0.0),
)


def element(p, g, s0, s1, s2, h, k, f):
    beta2, one_minus_beta2, eps, wd, c, c_complement, y_step, lr = (
        h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7],
    )  # fmt: skip
    g = where(f[0], -g, g)  # maximize
    z = where(k[0] == 1, p, s0)  # k[0]: the start marker; z starts as the parameter
    v = s1 * beta2 + one_minus_beta2 * g * g
    u = g / (sqrt(v / k[1]) + eps)  # k[1]: 1 - β2^(k+1)
    u = where(f[1], u + wd * p, u)
    y = lerp(p, z, c, c_complement) + y_step * u
    return y, z - lr * u, v, s2, y, u - u, g  # (no option splits its step)


def intermediates(g, s0, s1, s2, h, k, f, lr):
    """The last step per element, for diagnostics: (None, √v̂, lr_k/(√v̂+ε), lr_k·g/(√v̂+ε)):
    the scale and the step z took (weight decay excluded); Schedule-Free has no momentum
    buffer (its momentum is the average x)."""
    sqrt_v_hat = sqrt(s1 / k[1])
    effective_lr = h[7] / (sqrt_v_hat + h[2])
    return None, sqrt_v_hat, effective_lr, effective_lr * where(f[0], -g, g)


def advance(step, aux, b):
    return step + 1.0, aux  # low-memory state's count; the fp32 markers are not advanced


def tensor_scalars(step, aux, b):
    return step, b[0], 0.0, 0.0  # the start marker (or count), 1 - β2^(k+1)


def group_advance(group: dict[str, Any]) -> None:
    """The group's state one step on, before its params are stepped (schedulefree's code)."""
    k, warmup_steps = group["k"], group["warmup_steps"]
    sched = (k + 1) / warmup_steps if k < warmup_steps else 1.0
    lr = _checks.as_number("lr", group["lr"]) * sched
    group["scheduled_lr"] = lr
    lr_max = group["lr_max"] = max(lr, group["lr_max"])
    weight = ((k + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
    group["weight_sum"] = group["weight_sum"] + weight
    group["k"] = k + 1


def averaging_weight(group: dict[str, Any]) -> float:
    """c = w_k/W of the group's last step (from its advanced state, as schedulefree's ckp1)."""
    k, weight_sum = group["k"], group["weight_sum"]
    weight = (k ** group["r"]) * (group["lr_max"] ** group["weight_lr_power"])
    return weight / weight_sum if weight_sum != 0 else 0.0


def group_diagnostics(group: dict[str, Any]) -> dict[str, float]:
    return {"averaging_weight": averaging_weight(group), "scheduled_lr": group["scheduled_lr"]}


def group_scalars(group, dtype):
    beta1, beta2 = (float(b) for b in group["betas"])
    k, lr, c = group["k"], float(group["scheduled_lr"]), averaging_weight(group)
    wd = float(group["weight_decay"])
    h = Hyper(
        beta2, 1 - beta2, group["eps"], wd, c, complement(dtype, c), lr * (beta1 * (1 - c) - 1),
        lr,
    )  # fmt: skip
    return GroupScalars(rounded(dtype, *h), (1 - beta2**k,), (bool(group["maximize"]), wd != 0))


SPEC = AlgorithmSpec(
    name="schedule_free_adamw",
    torch_name="ScheduleFreeAdamW",  # not in torch.optim: the class takes the hyperparameters
    hyperparameters=(
        Hyperparameter("lr", 0.0025, _checks.nonnegative),
        Hyperparameter("betas", (0.9, 0.999), _checks.betas_pair),
        Hyperparameter("eps", 1e-8, _checks.nonnegative),
        Hyperparameter("weight_decay", 0.0, _checks.nonnegative),
        Hyperparameter("warmup_steps", 0, _checks.steps),
        Hyperparameter("r", 0.0, _checks.nonnegative),
        Hyperparameter("weight_lr_power", 2.0, _checks.nonnegative),
    ),
    tensor_state=("z", "exp_avg_sq"),
    element=element,
    group_scalars=group_scalars,
    advance=advance,
    tensor_scalars=tensor_scalars,
    intermediates=intermediates,
    counted=False,
    group_state=GROUP_STATE,
    group_advance=group_advance,
    group_diagnostics=group_diagnostics,
)
