"""The explorer's variants of Adam: AdEMAMix, ADOPT, Lion, Schedule-Free AdamW, StableAdamW,
Cautious Adam and Adafactor.

Each steps by its NumPy reference (:mod:`adamkit.reference`), and its inspected series are that
reference's intermediates, named as the optimizer defines them. The four panels every optimizer
has (first moment, second-moment scale, effective lr, update) hold what plays that part in the
variant (None where nothing does); what a variant has beyond them is an *extra* series: AdEMAMix's
slow EMA m2, ADOPT's normalised and clipped gradient and its clip bound, Lion's stored momentum,
Schedule-Free's z step and averaging weight c, StableAdamW's rms = √mean(g²/v̂) and the lr it
divides, Cautious Adam's mask, Adafactor's relative and absolute step sizes and update clipping.

The page's shared β1, β2 and ε mean the same in AdEMAMix, ADOPT, Schedule-Free, StableAdamW and
Cautious Adam as in Adam, so they take them (ADOPT's own defaults, β2 = 0.9999 and ε = 1e-6, are
not the page's; ε is a floor under √v there, not added). StableAdamW's m̂ and v̂ are Adam's
(optimi stores them with debiased betas, equal in real numbers) and its ε is added to √v̂ as
Adam's (ε² also floors v̂ in its RMS), so it takes them too, not optimi's defaults β = (0.9,
0.99), ε = 1e-6: with λ = 0 its path differs from Adam's by the lr clipping alone. Cautious Adam
is Adam with timm's mask and keeps its bias correction whatever the page's switch (that is Adam's
and AdamW's). Adafactor has no β1 and no β2 of that kind (its β̂2ₜ = 1 - t^-0.8, torch's τ); its
ε1 floors √V as ADOPT's ε floors √v, so it takes the page's ε (torch's default is the machine
epsilon), and its ε2 = 1e-3 and d = 1 are torch's. Lion's β2 is another thing, the decay of the
momentum it stores, and stays at lion-pytorch's 0.99. No variant takes the page's λ: it is
AdamW's, and each variant's path then differs from Adam's by its rule alone (AdEMAMix's own
default is λ = 0.01, optimi's StableAdamW's 1e-2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..reference import (
    adafactor,
    adam,
    ademamix,
    adopt,
    cautious,
    lion,
    schedule_free,
    stable_adamw,
)

VARIANTS = (
    "AdEMAMix",
    "ADOPT",
    "Lion",
    "Schedule-Free",
    "StableAdamW",
    "Cautious Adam",
    "Adafactor",
)

# α per function, tuned as the classic rules' are: 500 steps from the function's start should
# come about as close to the minimum as Adam's do with its α, on the plot. On a 1-2-5 grid:
# Adam's α where the variant gets there with it, else the smallest that does. ADOPT's v starts
# at g₁², not bias-corrected, so on Rosenbrock and Beale it divides by the start's steep
# gradients for hundreds of steps and needs 10x Adam's α. Lion moves every coordinate by exactly
# α a step and cannot settle closer than that: 1-10x less than Adam's (its authors say 3-10x;
# on Beale a smaller α stalls in its valley). StableAdamW and Cautious Adam get there with Adam's
# α everywhere. Adafactor's step is relative, max(ε2, RMS(x, y))·min(ρ, 1/√t), and shrinks near
# the origin: with any ρ on the grid it stalls where Rosenbrock's valley passes (0, 0) and creeps
# to the quadratic's minimum there (3e-3 away, Adam 1e-11), so those take Adam's α; on
# Himmelblau Adam's α keeps it hopping about the minimum (|U| ~ 1 there), 10x less settles.
LRS = {
    "AdEMAMix": {"rosenbrock": 5e-2, "beale": 5e-2, "himmelblau": 1e-1, "saddle": 5e-2,
                 "quadratic": 1e-1},
    "ADOPT": {"rosenbrock": 5e-1, "beale": 5e-1, "himmelblau": 1e-1, "saddle": 5e-2,
              "quadratic": 1e-1},
    "Lion": {"rosenbrock": 5e-3, "beale": 5e-2, "himmelblau": 2e-2, "saddle": 1e-2,
             "quadratic": 2e-2},
    "Schedule-Free": {"rosenbrock": 1e-1, "beale": 2e-1, "himmelblau": 1e-1, "saddle": 5e-2,
                      "quadratic": 1e-1},
    # a function not listed: Adam's α (compute.default_lrs)
    "StableAdamW": {},
    "Cautious Adam": {},
    "Adafactor": {"himmelblau": 1e-2},
}  # fmt: skip
LION_BETA2 = 0.99  # lion-pytorch's: the decay of the momentum Lion stores

# What a variant's path is, where it is not simply its parameter: Schedule-Free's plotted point
# is y, where the gradient is taken (the parameter in train mode, what its reference steps), not
# the average x one would evaluate.
POINTS = {"Schedule-Free": "y"}

# The symbol of each variant's learning rate where it is not the page's α: AdEMAMix's α is the
# weight of its slow EMA, so its learning rate is η (as the authors write it). Adafactor's lr caps
# its relative step size ρₜ = min(lr, 1/√t), and αₜ is its absolute one (the paper's names).
LR_SYMBOLS = {"AdEMAMix": "η", "Adafactor": "ρ"}


@dataclass(frozen=True)
class Extra:
    """A series a variant has beyond the four panels: per coordinate, or one number a step
    (``scalar``: the same for both coordinates)."""

    key: str
    label: str  # the optimizer's symbol
    role: str  # what it is, for the panel's title
    scalar: bool = False


EXTRAS: dict[str, tuple[Extra, ...]] = {
    "AdEMAMix": (Extra("m2", "m2", "slow EMA m2 ← β3·m2 + (1-β3)·g, not bias-corrected"),),
    "ADOPT": (
        Extra("n", "n", "normalised gradient n = clip(g/max(√vₜ₋₁, ε), ±(t-1)^¼)"),
        Extra("clip", "(t-1)^¼", "clip bound on |n| (none at step 1)", scalar=True),
    ),
    "Lion": (Extra("m", "m", f"stored momentum m ← β2·m + (1-β2)·g, β2 = {LION_BETA2:g}"),),
    "Schedule-Free": (
        Extra("z_step", "α·u", "z's step: z ← z - α·u, u = g/(√v̂+ε)"),
        Extra("c", "c", "averaging weight c: x ← (1-c)·x + c·z", scalar=True),
    ),
    "StableAdamW": (
        Extra("rms", "rms", "rms = √mean(g²/max(v̂, ε²)) over (x, y): above 1 it divides α",
              scalar=True),
        Extra("lr_used", "αₜ", "the lr used, αₜ = α/max(1, rms)", scalar=True),
    ),
    # on two coordinates the scale is 0 (both masked), 1 (neither) or 2 (one)
    "Cautious Adam": (
        Extra("mask", "s", "cautious scale s = mask/max(mean(mask), 1e-3), mask = [m̂·g > 0]"),
    ),
    "Adafactor": (
        Extra("rho", "ρₜ", "relative step size ρₜ = min(ρ, 1/√t)", scalar=True),
        Extra("alpha_t", "αₜ", "step size αₜ = max(ε2, RMS(x, y))·ρₜ, ε2 = 1e-3", scalar=True),
        Extra("clip", "max(1, RMS(U))", "update clipping: U = g/max(√V, ε) is scaled by "
              "1/max(1, RMS(U)/d), d = 1", scalar=True),
    ),
}  # fmt: skip

LABELS: dict[str, dict[str, str | None]] = {
    "AdEMAMix": {"m_hat": "m̂1", "sqrt_v_hat": "√v̂", "effective_lr": "η/(√v̂+ε)",
                 "update": "η·(m̂1+α·m2)/(√v̂+ε)"},
    # step 1 only fills v: m, the scale, the update and n are 0 there (the clip bound has none)
    "ADOPT": {"m_hat": "m", "sqrt_v_hat": "max(√vₜ₋₁, ε)", "effective_lr": "α",
              "update": "α·m"},
    "Lion": {"m_hat": "c", "sqrt_v_hat": None, "effective_lr": "α", "update": "α·sign(c)"},
    # y: the plotted point (see POINTS)
    "Schedule-Free": {"m_hat": None, "sqrt_v_hat": "√v̂", "effective_lr": "α/(√v̂+ε)",
                      "update": "yₜ - yₜ₊₁"},
    "StableAdamW": {"m_hat": "m̂", "sqrt_v_hat": "√v̂", "effective_lr": "αₜ/(√v̂+ε)",
                    "update": "αₜ·m̂/(√v̂+ε)"},
    "Cautious Adam": {"m_hat": "m̂", "sqrt_v_hat": "√v̂", "effective_lr": "α/(√v̂+ε)",
                      "update": "α·s·m̂/(√v̂+ε)"},
    "Adafactor": {"m_hat": None, "sqrt_v_hat": "max(√V, ε)",
                  "effective_lr": "αₜ/(max(1, RMS(U))·max(√V, ε))",
                  "update": "αₜ·U/max(1, RMS(U))"},
}  # fmt: skip

# A panel's title where the variant's quantity is not the common one of that panel.
ROLES: dict[str, dict[str, str]] = {
    "ADOPT": {
        "m_hat": "momentum of the normalised gradient n (no bias correction)",
        "sqrt_v_hat": "scale of the previous second moment",
    },
    "Lion": {"m_hat": "interpolation c = β1·m + (1-β1)·g, whose sign is the step"},
    "Schedule-Free": {"update": "what moved y: c·(y - z) + α·(1 - β1·(1-c))·u"},
    "Cautious Adam": {"update": "update, 0 where m̂·g ≤ 0 and renormalised by s"},
    "Adafactor": {
        "sqrt_v_hat": "scale of V ← (1-t^-0.8)·V + t^-0.8·g² (a 2-vector's is not factored)",
        "effective_lr": "effective learning rate (what multiplies g)",
    },
}


def hyper(name: str, lr: float, s: Any) -> tuple[Any, Any]:
    """(reference module, hyperparameters) of variant ``name`` for settings ``s``: only what it
    depends on, so that the hyperparameters are its cache key."""
    if name == "AdEMAMix":
        return ademamix, ademamix.AdEMAMixHyper(
            lr=lr, beta1=s.beta1, beta2=s.beta2, beta3=s.beta3, alpha=s.alpha, eps=s.eps,
            weight_decay=0.0,
        )  # fmt: skip
    if name == "ADOPT":
        return adopt, adopt.ADOPTHyper(lr=lr, beta1=s.beta1, beta2=s.beta2, eps=s.eps)
    if name == "Lion":
        return lion, lion.LionHyper(lr=lr, beta1=s.beta1, beta2=LION_BETA2)
    if name == "StableAdamW":
        return stable_adamw, stable_adamw.StableAdamWHyper(
            lr=lr, beta1=s.beta1, beta2=s.beta2, eps=s.eps, weight_decay=0.0
        )
    if name == "Cautious Adam":
        return adam, adam.AdamHyper(lr=lr, beta1=s.beta1, beta2=s.beta2, eps=s.eps, cautious=True)
    if name == "Adafactor":
        return adafactor, adafactor.AdafactorHyper(lr=lr, eps1=s.eps)
    return schedule_free, schedule_free.ScheduleFreeHyper(
        lr=lr, beta1=s.beta1, beta2=s.beta2, eps=s.eps
    )


def inspected(
    name: str, hyper: Any, param: np.ndarray, g: np.ndarray, before: Any, state: Any, aux: Any
) -> tuple[list[np.ndarray | None], list[np.ndarray]]:
    """(the four panels' quantities, the extras') of one step of variant ``name``, from
    ``param``, ``g`` and ``before`` (the point, its gradient and the state the step started
    from) and what the reference returned (``state``, ``aux``). A scalar extra is given for both
    coordinates."""
    if name == "AdEMAMix":
        effective = hyper.lr / (aux.sqrt_v_hat + hyper.eps)
        return [aux.m1_hat, aux.sqrt_v_hat, effective, aux.update], [aux.m2]
    if name == "ADOPT":
        clip = np.full(2, np.nan if aux.clip is None else aux.clip)
        lr = np.full(2, hyper.lr)
        return [state.m, aux.denom, lr, aux.update], [aux.normalized_grad, clip]
    if name == "Lion":
        return [aux.interpolation, None, np.full(2, hyper.lr), aux.update], [state.m]
    if name == "StableAdamW":  # its state holds m̂ and v̂
        panels = [state.m, np.sqrt(state.v), aux.lr / aux.denom, aux.update]
        return panels, [np.full(2, aux.rms), np.full(2, aux.lr)]
    if name == "Cautious Adam":  # the scale of the unmasked update, as the reference made it
        scale = cautious.scale(hyper.lr * aux.m_hat / aux.denom, g)
        return [aux.m_hat, np.sqrt(aux.v_hat), aux.effective_lr, aux.update], [scale]
    if name == "Adafactor":  # what U divides g by, and the step size after clipping
        denom = np.sqrt(np.maximum(aux.var_estimate, hyper.eps1**2))
        step = aux.alpha / aux.clip_divisor
        scalars = [np.full(2, v) for v in (aux.rho, aux.alpha, aux.clip_divisor)]
        return [None, denom, step / denom, step * aux.update], scalars
    # Schedule-Free: y ← y + c·(z - y) + α·(β1·(1-c) - 1)·u, with the z the step started from
    moved = aux.c * (param - before.z) + aux.lr * (1.0 - hyper.beta1 * (1.0 - aux.c)) * (
        aux.normalized_grad
    )
    z_step = aux.lr * aux.normalized_grad
    sqrt_v_hat = aux.denom - hyper.eps
    return [None, sqrt_v_hat, aux.lr / aux.denom, moved], [z_step, np.full(2, aux.c)]
