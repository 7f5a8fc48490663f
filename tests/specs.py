"""The table of optimizer specs that drives the shared tests (PyTorch's OptimizerInfo idea).

Each spec pairs an adamkit optimizer with its torch.optim namesake and its NumPy reference,
and lists the configurations that torch's own tests exercise.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import adamkit
from adamkit.reference import adam as ref_adam
from adamkit.reference import adamax as ref_adamax
from adamkit.reference import ademamix as ref_ademamix
from adamkit.reference import adopt as ref_adopt
from adamkit.reference import lion as ref_lion
from adamkit.reference import nadam as ref_nadam
from adamkit.reference import radam as ref_radam
from adamkit.reference import rmsprop as ref_rmsprop
from adamkit.reference import schedule_free as ref_schedule_free
from adamkit.reference import sgd as ref_sgd
from adamkit.reference import stable_adamw as ref_stable_adamw


@dataclass
class Spec:
    name: str
    ours: type[torch.optim.Optimizer]
    theirs: type[torch.optim.Optimizer]
    configs: list[dict[str, Any]]
    reference: Any  # the reference module: init, step
    make_hyper: Callable[[dict[str, Any]], Any]
    # torch state key -> reference state field
    state_fields: dict[str, str] = field(default_factory=dict)
    # False where torch.optim itself does not resume exactly (NAdam: it loads mu_product in
    # the param's dtype); a torch run resumed from adamkit's checkpoint is then compared with
    # torch resumed from its own.
    torch_resumes_exactly: bool = True
    # Whether ``theirs`` runs adamkit's for-loop's operations in the same order, so params and
    # state match bit for bit. lion-pytorch's ``add(g, alpha=1-β)`` is a fused multiply-add in
    # torch's CPU kernel, so its momentum differs from adamkit's by an ulp (its params, moved
    # by exactly ±lr, still match bit for bit).
    state_bitwise: bool = True
    # The low-memory precisions it takes (Schedule-Free refuses 8-bit: z is the iterate).
    low_memory: tuple[str, ...] = ("bf16", "8bit")
    # Calls that only fill the state and leave the params (ADOPT's first call sets v alone).
    filling_calls: int = 0

    def config_ids(self) -> list[str]:
        return [f"{self.name}-{describe(c)}" for c in self.configs]


def describe(config: dict[str, Any]) -> str:
    if not config:
        return "defaults"
    parts = []
    for k, v in config.items():
        if isinstance(v, torch.Tensor):
            v = f"tensor({v.item():g})"
        elif callable(v):
            v = v.__name__
        parts.append(f"{k}={v}")
    return ",".join(parts)


def _f(x: Any) -> float:
    return float(x.item()) if isinstance(x, torch.Tensor) else float(x)


def _adam_hyper(decoupled_default: bool) -> Callable[[dict[str, Any]], Any]:
    def make(c: dict[str, Any]) -> ref_adam.AdamHyper:
        betas = c.get("betas", (0.9, 0.999))
        return ref_adam.AdamHyper(
            lr=_f(c.get("lr", 1e-3)),
            beta1=_f(betas[0]),
            beta2=_f(betas[1]),
            eps=c.get("eps", 1e-8),
            weight_decay=c.get("weight_decay", 1e-2 if decoupled_default else 0.0),
            decoupled=c.get("decoupled_weight_decay", decoupled_default),
            amsgrad=c.get("amsgrad", False),
            maximize=c.get("maximize", False),
        )

    return make


def _sgd_hyper(c: dict[str, Any]) -> ref_sgd.SGDHyper:
    return ref_sgd.SGDHyper(
        lr=_f(c.get("lr", 1e-3)),
        momentum=c.get("momentum", 0.0),
        dampening=c.get("dampening", 0.0),
        weight_decay=c.get("weight_decay", 0.0),
        nesterov=c.get("nesterov", False),
        maximize=c.get("maximize", False),
    )


def _rmsprop_hyper(c: dict[str, Any]) -> ref_rmsprop.RMSpropHyper:
    return ref_rmsprop.RMSpropHyper(
        lr=_f(c.get("lr", 1e-2)),
        alpha=c.get("alpha", 0.99),
        eps=c.get("eps", 1e-8),
        weight_decay=c.get("weight_decay", 0.0),
        momentum=c.get("momentum", 0.0),
        centered=c.get("centered", False),
        maximize=c.get("maximize", False),
    )


def _betas(c: dict[str, Any]) -> tuple[float, float]:
    betas = c.get("betas", (0.9, 0.999))
    return _f(betas[0]), _f(betas[1])


def _nadam_hyper(c: dict[str, Any]) -> ref_nadam.NAdamHyper:
    beta1, beta2 = _betas(c)
    return ref_nadam.NAdamHyper(
        lr=_f(c.get("lr", 2e-3)),
        beta1=beta1,
        beta2=beta2,
        eps=c.get("eps", 1e-8),
        weight_decay=c.get("weight_decay", 0.0),
        momentum_decay=c.get("momentum_decay", 4e-3),
        decoupled=c.get("decoupled_weight_decay", False),
        maximize=c.get("maximize", False),
    )


def _radam_hyper(c: dict[str, Any]) -> ref_radam.RAdamHyper:
    beta1, beta2 = _betas(c)
    return ref_radam.RAdamHyper(
        lr=_f(c.get("lr", 1e-3)),
        beta1=beta1,
        beta2=beta2,
        eps=c.get("eps", 1e-8),
        weight_decay=c.get("weight_decay", 0.0),
        decoupled=c.get("decoupled_weight_decay", False),
        maximize=c.get("maximize", False),
    )


def _adamax_hyper(c: dict[str, Any]) -> ref_adamax.AdamaxHyper:
    beta1, beta2 = _betas(c)
    return ref_adamax.AdamaxHyper(
        lr=_f(c.get("lr", 2e-3)),
        beta1=beta1,
        beta2=beta2,
        eps=c.get("eps", 1e-8),
        weight_decay=c.get("weight_decay", 0.0),
        maximize=c.get("maximize", False),
    )


def _lion_hyper(c: dict[str, Any]) -> ref_lion.LionHyper:
    beta1, beta2 = _betas({"betas": (0.9, 0.99), **c})
    return ref_lion.LionHyper(
        lr=_f(c.get("lr", 1e-4)),
        beta1=beta1,
        beta2=beta2,
        weight_decay=c.get("weight_decay", 0.0),
        maximize=c.get("maximize", False),
    )


def _peer_lion() -> type[torch.optim.Optimizer]:
    """lion-pytorch's Lion (requirements-peers.txt), the implementation adamkit's follows, with
    torch.optim's conventions that lion-pytorch lacks (as a torch.optim peer has them): the
    kernel flags (it has one kernel; its groups then hold torch's ``maximize`` and ``foreach``
    keys) and complex params stepped as pairs of reals (lion-pytorch's ``sgn`` of a complex c
    is c/|c|; torch.optim and adamkit treat real and imaginary parts independently)."""
    from lion_pytorch import Lion

    def real(t: torch.Tensor) -> torch.Tensor:
        return torch.view_as_real(t) if t.is_complex() else t

    class PeerLion(Lion):
        def __init__(self, params: Any, *, foreach: Any = None, fused: Any = None, **kw: Any):
            super().__init__(params, **kw)
            for options in (self.defaults, *self.param_groups):
                options.update(maximize=False, foreach=foreach)
            update = self.update_fn
            self.update_fn = lambda p, g, m, *scalars: update(real(p), real(g), real(m), *scalars)

    return PeerLion


def _ademamix_hyper(c: dict[str, Any]) -> ref_ademamix.AdEMAMixHyper:
    beta1, beta2, beta3 = (_f(b) for b in c.get("betas", (0.9, 0.999, 0.9999)))
    return ref_ademamix.AdEMAMixHyper(
        lr=_f(c.get("lr", 1e-3)),
        beta1=beta1,
        beta2=beta2,
        beta3=beta3,
        alpha=c.get("alpha", 5.0),
        t_alpha=c.get("t_alpha"),
        t_beta3=c.get("t_beta3"),
        eps=c.get("eps", 1e-8),
        weight_decay=c.get("weight_decay", 1e-2),
        maximize=c.get("maximize", False),
    )


def _counted_steps(
    optimizer: torch.optim.Optimizer, group: dict[str, Any], keys: tuple[str, ...]
) -> Any:
    """For each param of ``group`` with a gradient, its step counted on (a float32 tensor from
    0 and the slots ``keys`` as zeros on first use, as torch.optim's state): the step t, then
    the param, the gradient (negated with ``maximize``) and the slots as real views (complex
    params as pairs of reals, as torch.optim steps them). The peers' shared loop."""
    for p in group["params"]:
        if p.grad is None:
            continue
        state = optimizer.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            for key in keys:
                state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        real = (lambda x: torch.view_as_real(x)) if p.is_complex() else (lambda x: x)
        g = real(p.grad)
        yield (
            float(state["step"]),
            real(p),
            -g if group["maximize"] else g,
            [real(state[k]) for k in keys],
        )


class PeerAdEMAMix(torch.optim.Optimizer):
    """The authors' ``AdEMAMix`` (apple/ml-ademamix ``pytorch/ademamix.py``: a per-param step,
    then the three EMAs and the update, one torch op at a time) with bitsandbytes' signature and
    defaults, spelled in the order adamkit's for-loop rounds: the decay as φ·(1 - lr·λ) first
    (the authors add λ·φ to the update), the bias corrections as reciprocals (they divide),
    the β3 warmup as bitsandbytes' closed form in adamkit's power form (the authors use a
    half-life form with ln(β + 1e-8)), m1 and m2 with torch's ``lerp`` and every other product
    rounded on its own (``add(alpha=)`` is a fused multiply-add on the CPU), adamkit's key
    names, torch's ``maximize`` and complex params as pairs of reals. The NumPy reference,
    bitsandbytes and pytorch_optimizer are compared with it in
    tests/reference/test_variants_vs_peers.py."""

    def __init__(
        self, params: Any, lr: Any = 1e-3, betas: Any = (0.9, 0.999, 0.9999),
        alpha: float = 5.0, t_alpha: int | None = None, t_beta3: int | None = None,
        eps: float = 1e-8, weight_decay: float = 1e-2, *, maximize: bool = False,
        foreach: bool | None = None, fused: bool | None = None,
    ) -> None:  # fmt: skip
        defaults = dict(
            lr=lr, betas=betas, alpha=alpha, t_alpha=t_alpha, t_beta3=t_beta3, eps=eps,
            weight_decay=weight_decay, maximize=maximize, foreach=foreach,
        )  # fmt: skip
        super().__init__(params, defaults)

    @staticmethod
    def _beta3(beta1: float, beta3: float, t: float, t_beta3: int | None) -> float:
        if not t_beta3:
            return beta3
        ratio = math.log(beta3) / math.log(beta1) if beta1 > 0 and beta3 > 0 else 0.0
        s = min(t / t_beta3, 1.0)
        return min(beta3 ** (1.0 / (ratio + s * (1.0 - ratio))), beta3)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            lr, wd, eps = _f(group["lr"]), group["weight_decay"], group["eps"]
            beta1, beta2, beta3 = (_f(b) for b in group["betas"])
            keys = ("exp_avg", "exp_avg_sq", "exp_avg_slow")
            for t, phi, g, (m1, v, m2) in _counted_steps(self, group, keys):
                alpha = group["alpha"]
                if group["t_alpha"]:
                    alpha = min(t * alpha / group["t_alpha"], alpha)
                one_minus_beta3 = 1.0 - self._beta3(beta1, beta3, t, group["t_beta3"])
                phi.mul_(1 - lr * wd)
                m1.lerp_(g, 1 - beta1)
                v.mul_(beta2).add_((1 - beta2) * g * g)
                m2.lerp_(g, one_minus_beta3)
                denom = v.sqrt() * (1.0 / (1.0 - beta2**t) ** 0.5) + eps
                update = (m1 * (1.0 / (1.0 - beta1**t)) + alpha * m2) / denom
                phi.sub_(lr * update)


def _schedule_free_hyper(c: dict[str, Any]) -> ref_schedule_free.ScheduleFreeHyper:
    beta1, beta2 = _betas(c)
    return ref_schedule_free.ScheduleFreeHyper(
        lr=_f(c.get("lr", 0.0025)),
        beta1=beta1,
        beta2=beta2,
        eps=c.get("eps", 1e-8),
        weight_decay=c.get("weight_decay", 0.0),
        warmup_steps=c.get("warmup_steps", 0),
        r=c.get("r", 0.0),
        weight_lr_power=c.get("weight_lr_power", 2.0),
        maximize=c.get("maximize", False),
    )


class TrainingScheduleFreeAdamW(adamkit.ScheduleFreeAdamW):
    """adamkit's ScheduleFreeAdamW in train mode from the start: the shared tests step right
    after construction (its mode rules are tested in tests/optim/test_schedule_free.py)."""

    @functools.wraps(adamkit.ScheduleFreeAdamW.__init__)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train()


class PeerScheduleFreeAdamW(torch.optim.Optimizer):
    """schedulefree's ``AdamWScheduleFree`` for-loop (its group scalars, z made at a param's
    first step, the y and z updates), spelled in the order adamkit's for-loop rounds (every
    product rounded on its own: schedulefree's ``add(alpha=)`` is a fused multiply-add on the
    CPU), with torch's ``maximize``, complex params as pairs of reals, ``p.grad`` left alone,
    and in train mode from the start. schedulefree itself is compared with adamkit in
    tests/optim/test_schedule_free.py, and with the NumPy reference in
    tests/reference/test_variants_vs_peers.py."""

    def __init__(
        self, params: Any, lr: Any = 0.0025, betas: Any = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0,
        weight_lr_power: float = 2.0, *, maximize: bool = False, foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:  # fmt: skip
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps,
            r=r, weight_lr_power=weight_lr_power, maximize=maximize, foreach=foreach, k=0,
            train_mode=True, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0,
        )  # fmt: skip
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            beta1, beta2 = (_f(b) for b in group["betas"])
            k, wd, eps = group["k"], group["weight_decay"], group["eps"]
            sched = (k + 1) / group["warmup_steps"] if k < group["warmup_steps"] else 1.0
            lr = group["scheduled_lr"] = _f(group["lr"]) * sched
            lr_max = group["lr_max"] = max(lr, group["lr_max"])
            weight = ((k + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
            weight_sum = group["weight_sum"] = group["weight_sum"] + weight
            c = weight / weight_sum if weight_sum != 0 else 0.0
            bias_correction2 = 1 - beta2 ** (k + 1)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["z"] = torch.clone(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                real = (lambda x: torch.view_as_real(x)) if p.is_complex() else (lambda x: x)
                y, g, z, v = real(p), real(p.grad), real(state["z"]), real(state["exp_avg_sq"])
                if group["maximize"]:
                    g = -g
                v.mul_(beta2).add_((1 - beta2) * g * g)
                u = g / ((v / bias_correction2).sqrt() + eps)
                if wd != 0:
                    u = u + wd * y
                y.lerp_(z, c).add_(lr * (beta1 * (1 - c) - 1) * u)
                z.sub_(lr * u)
            group["k"] = k + 1


def _stable_adamw_hyper(c: dict[str, Any]) -> ref_stable_adamw.StableAdamWHyper:
    beta1, beta2 = _betas({"betas": (0.9, 0.99), **c})
    return ref_stable_adamw.StableAdamWHyper(
        lr=_f(c["lr"]),
        beta1=beta1,
        beta2=beta2,
        weight_decay=c.get("weight_decay", 1e-2),
        eps=c.get("eps", 1e-6),
        decouple_lr=c.get("decouple_lr", False),
        max_lr=c.get("max_lr"),
        maximize=c.get("maximize", False),
    )


class PeerStableAdamW(torch.optim.Optimizer):
    """torch-optimi's ``StableAdamW`` update (debiased betas, the per-tensor RMS of g²/max(v̂,
    ε²) with the updated v̂, the lr divided by max(1, rms), decay with the clipped lr) with
    adamkit's keys (``betas``, a per-param step, torch's ``maximize``), spelled in the order
    adamkit's torch-ops kernel rounds: the RMS's sum in float64 rounded to the data's dtype,
    the debiased betas rounded to it, and complex params as pairs of reals. optimi itself is
    compared with the NumPy reference in tests/reference/test_variants_vs_peers.py."""

    def __init__(
        self, params: Any, lr: Any, betas: Any = (0.9, 0.99), weight_decay: float = 1e-2,
        eps: float = 1e-6, decouple_lr: bool = False, max_lr: float | None = None, *,
        maximize: bool = False, foreach: bool | None = None, fused: bool | None = None,
    ) -> None:  # fmt: skip
        defaults = dict(
            lr=lr, betas=betas, weight_decay=weight_decay, eps=eps, decouple_lr=decouple_lr,
            max_lr=max_lr, maximize=maximize, foreach=foreach,
        )  # fmt: skip
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            lr, wd, eps = _f(group["lr"]), group["weight_decay"], group["eps"]
            beta1, beta2 = (_f(b) for b in group["betas"])
            max_lr = lr if group["max_lr"] is None else group["max_lr"]
            for t, phi, g, (m, v) in _counted_steps(self, group, ("exp_avg", "exp_avg_sq")):
                dtype = phi.dtype

                def rounded(x: float, dtype: torch.dtype = dtype) -> float:
                    return float(torch.tensor(x, dtype=dtype))

                b1 = (beta1**t - beta1) / (beta1**t - 1.0)
                b2 = (beta2**t - beta2) / (beta2**t - 1.0)
                m.lerp_(g, rounded(1.0 - b1))
                v.mul_(rounded(b2)).add_(rounded(1.0 - b2) * g * g)
                eps_sq = torch.tensor(rounded(eps**2), dtype=dtype)
                ratio = g * g / torch.maximum(v, eps_sq)
                total = ratio.sum(dtype=torch.float64).to(dtype)
                n = torch.tensor(float(max(g.numel(), 1)), dtype=dtype)
                rms = torch.sqrt(total / n)
                one = torch.ones((), dtype=dtype)
                # a Python float over a tensor, as the torch-ops element divides (torch's
                # __rtruediv__ multiplies by the reciprocal: an ulp from a true division)
                lr_t = rounded(lr) / torch.where(rms > one, rms, one)
                scale = lr_t / torch.tensor(max_lr, dtype=dtype) if group["decouple_lr"] else lr_t
                phi.mul_(one - scale * torch.tensor(wd, dtype=dtype))
                phi.sub_(lr_t * (m / (v.sqrt() + torch.tensor(eps, dtype=dtype))))


def _adopt_hyper(c: dict[str, Any]) -> ref_adopt.ADOPTHyper:
    beta1, beta2 = _betas({"betas": (0.9, 0.9999), **c})
    return ref_adopt.ADOPTHyper(
        lr=_f(c.get("lr", 1e-3)),
        beta1=beta1,
        beta2=beta2,
        eps=c.get("eps", 1e-6),
        clip_lambda=c.get("clip_lambda", ref_adopt.default_clip),
        weight_decay=c.get("weight_decay", 0.0),
        decouple=c.get("decouple", False),
        maximize=c.get("maximize", False),
    )


def _cube_root_clip(step: float) -> float:
    """timm's default clip exponent, as a clip_lambda the host evaluates."""
    return step ** (1 / 3)


class PeerADOPT(torch.optim.Optimizer):
    """The authors' ``ADOPT`` (iShohei220/adopt, its for-loop: the first call sets v = g²
    only; then g/max(√v, ε) clipped at clip_lambda(s), m by ``lerp``, φ - α·m, v last) with
    adamkit's group keys (``clip_lambda`` on the optimizer, as the authors keep it) and torch's
    ``maximize``, spelled in the order adamkit's torch-ops kernel rounds (the decoupled decay
    as φ - φ·(αλ) and the step as φ - α·m: the authors' ``add_(alpha=)`` is a fused
    multiply-add on the CPU), complex params as pairs of reals. The authors' class itself is
    compared with the NumPy reference in tests/reference/test_variants_vs_peers.py."""

    def __init__(
        self, params: Any, lr: Any = 1e-3, betas: Any = (0.9, 0.9999), eps: float = 1e-6,
        clip_lambda: Any = ref_adopt.default_clip, weight_decay: float = 0.0,
        decouple: bool = False, *, maximize: bool = False, foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:  # fmt: skip
        self.clip_lambda = clip_lambda
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, decouple=decouple,
            maximize=maximize, foreach=foreach,
        )  # fmt: skip
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            lr, wd, eps = _f(group["lr"]), group["weight_decay"], group["eps"]
            beta1, beta2 = (_f(b) for b in group["betas"])
            for t, phi, g, (m, v) in _counted_steps(self, group, ("exp_avg", "exp_avg_sq")):
                calls_before = t - 1
                if wd != 0 and not group["decouple"]:
                    g = g + wd * phi
                if calls_before == 0:
                    v.copy_(g * g)
                    continue
                eps_t = torch.tensor(eps, dtype=phi.dtype)
                n = g / torch.maximum(v.sqrt(), eps_t)
                if self.clip_lambda is not None:
                    clip = float(torch.tensor(self.clip_lambda(calls_before), dtype=phi.dtype))
                    n = n.clamp(-clip, clip)
                m.lerp_(n, 1 - beta1)
                if group["decouple"]:
                    phi.sub_(phi * (lr * wd))
                phi.sub_(lr * m)
                v.mul_(beta2).add_((1 - beta2) * g * g)


ADAM_STATE = {"exp_avg": "m", "exp_avg_sq": "v", "max_exp_avg_sq": "v_max"}

SPECS = [
    Spec(
        "Adam",
        adamkit.Adam,
        torch.optim.Adam,
        [
            {},
            {"lr": 0.01, "betas": (0.5, 0.8), "eps": 1e-6},
            {"weight_decay": 0.1},
            {"weight_decay": 0.1, "amsgrad": True},
            {"amsgrad": True, "maximize": True},
            {"maximize": True, "weight_decay": 0.1},
            {"decoupled_weight_decay": True, "weight_decay": 0.1},
            # A float64 tensor lr: torch computes lr/(1-β1^t) in the tensor's dtype.
            {"lr": torch.tensor(0.01, dtype=torch.float64)},
            {"eps": 0.0, "lr": 0.1},
        ],
        ref_adam,
        _adam_hyper(False),
        ADAM_STATE,
    ),
    Spec(
        "AdamW",
        adamkit.AdamW,
        torch.optim.AdamW,
        [{}, {"weight_decay": 0.5, "amsgrad": True}, {"maximize": True, "lr": 0.05}],
        ref_adam,
        _adam_hyper(True),
        ADAM_STATE,
    ),
    Spec(
        "SGD",
        adamkit.SGD,
        torch.optim.SGD,
        [
            {},
            {"momentum": 0.9},
            {"momentum": 0.9, "dampening": 0.5},
            {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
            {"momentum": 0.5, "maximize": True},
            {"weight_decay": 0.2, "maximize": True},
            {"lr": torch.tensor(0.01, dtype=torch.float64), "momentum": 0.9},
        ],
        ref_sgd,
        _sgd_hyper,
        {"momentum_buffer": "buf"},
    ),
    Spec(
        "RMSprop",
        adamkit.RMSprop,
        torch.optim.RMSprop,
        [
            {},
            {"centered": True},
            {"momentum": 0.9},
            {"centered": True, "momentum": 0.9, "weight_decay": 0.1},
            {"maximize": True, "weight_decay": 0.1},
            {"alpha": 0.5, "eps": 1e-4},
            {"lr": torch.tensor(0.001, dtype=torch.float64)},
        ],
        ref_rmsprop,
        _rmsprop_hyper,
        {"square_avg": "v", "grad_avg": "g_avg", "momentum_buffer": "buf"},
    ),
    # The Adam family on the algorithm specs; configs after torch's own optim_inputs.
    Spec(
        "NAdam",
        adamkit.NAdam,
        torch.optim.NAdam,
        [
            {},
            {"weight_decay": 0.1, "momentum_decay": 6e-3},
            {"weight_decay": 0.1, "momentum_decay": 6e-3, "decoupled_weight_decay": True},
            {"lr": torch.tensor(0.001, dtype=torch.float64)},
            {"maximize": True, "weight_decay": 0.1, "betas": (0.5, 0.8), "eps": 1e-6},
        ],
        ref_nadam,
        _nadam_hyper,
        {"exp_avg": "m", "exp_avg_sq": "v", "mu_product": "mu_product"},
        torch_resumes_exactly=False,
    ),
    Spec(
        "RAdam",
        adamkit.RAdam,
        torch.optim.RAdam,
        [
            {},
            {"weight_decay": 0.1},
            {"weight_decay": 0.1, "decoupled_weight_decay": True},
            {"lr": torch.tensor(0.001, dtype=torch.float64)},
            {"maximize": True, "betas": (0.5, 0.8), "eps": 0.0},  # rectified from step 6
        ],
        ref_radam,
        _radam_hyper,
        {"exp_avg": "m", "exp_avg_sq": "v"},
    ),
    Spec(
        "Adamax",
        adamkit.Adamax,
        torch.optim.Adamax,
        [
            {},
            {"weight_decay": 0.1},
            {"maximize": True},
            {"weight_decay": 0.1, "maximize": True, "betas": (0.5, 0.8)},
            {"lr": torch.tensor(0.001, dtype=torch.float64)},
        ],
        ref_adamax,
        _adamax_hyper,
        {"exp_avg": "m", "exp_inf": "u"},
    ),
    # Not in torch.optim: its peer is lion-pytorch's Lion (no maximize there).
    Spec(
        "Lion",
        adamkit.Lion,
        _peer_lion(),
        [
            {},
            {"lr": 0.01, "weight_decay": 0.1},
            {"betas": (0.5, 0.8), "weight_decay": 1.0, "lr": 1e-3},
        ],
        ref_lion,
        _lion_hyper,
        {"exp_avg": "m"},
        state_bitwise=False,
    ),
    # Not in torch.optim: its peer is the authors' update with bitsandbytes' signature.
    Spec(
        "AdEMAMix",
        adamkit.AdEMAMix,
        PeerAdEMAMix,
        [
            {},
            {"lr": 0.01, "t_alpha": 20, "t_beta3": 30, "alpha": 8.0},
            {"betas": (0.5, 0.8, 0.99), "weight_decay": 0.0, "eps": 1e-6, "t_beta3": 10},
            {"maximize": True, "betas": (0.0, 0.9, 0.999), "t_beta3": 15},
        ],
        ref_ademamix,
        _ademamix_hyper,
        {"exp_avg": "m1", "exp_avg_sq": "v", "exp_avg_slow": "m2"},
    ),
    # Not in torch.optim: its peer is schedulefree's update (group state, z, y).
    Spec(
        "ScheduleFreeAdamW",
        TrainingScheduleFreeAdamW,
        PeerScheduleFreeAdamW,
        [
            {},
            {"lr": 0.01, "weight_decay": 0.1, "warmup_steps": 5},
            {"betas": (0.5, 0.8), "r": 1.0, "weight_lr_power": 0.5, "eps": 1e-6},
            {"maximize": True, "lr": 0.05},
        ],
        ref_schedule_free,
        _schedule_free_hyper,
        {"z": "z", "exp_avg_sq": "v"},
        low_memory=("bf16",),
    ),
    # Not in torch.optim: its peer is torch-optimi's update (a per-tensor RMS before the step).
    Spec(
        "StableAdamW",
        adamkit.StableAdamW,
        PeerStableAdamW,
        [
            {"lr": 1e-3},
            {"lr": 0.01, "weight_decay": 0.1, "betas": (0.5, 0.8)},
            {"lr": 0.01, "weight_decay": 0.1, "decouple_lr": True, "max_lr": 0.02},
            {"lr": 0.05, "maximize": True, "eps": 1e-3, "weight_decay": 0.0},
        ],
        ref_stable_adamw,
        _stable_adamw_hyper,
        {"exp_avg": "m", "exp_avg_sq": "v"},
    ),
    # Not in torch.optim: its peer is the authors' update (the first call only sets v).
    Spec(
        "ADOPT",
        adamkit.ADOPT,
        PeerADOPT,
        [
            {},
            {"lr": 0.01, "weight_decay": 0.1},
            {"lr": 0.01, "weight_decay": 0.1, "decouple": True, "betas": (0.5, 0.8)},
            {"maximize": True, "eps": 1e-3, "clip_lambda": None},
            {"lr": 0.01, "clip_lambda": _cube_root_clip},
        ],
        ref_adopt,
        _adopt_hyper,
        {"exp_avg": "m", "exp_avg_sq": "v"},
        filling_calls=1,
    ),
]

ALL_CONFIGS = [(spec, c) for spec in SPECS for c in spec.configs]
ALL_IDS = [i for spec in SPECS for i in spec.config_ids()]


def random_grad(like: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Gradients with magnitudes spread log-uniformly over 1e-3..1e2 and random signs."""
    real = torch.view_as_real(like) if like.is_complex() else like
    dtype = real.dtype
    mag = 10.0 ** (torch.rand(real.shape, generator=gen, dtype=torch.float64) * 5 - 3)
    sign = torch.randint(0, 2, real.shape, generator=gen, dtype=torch.int64) * 2 - 1
    g = (mag * sign).to(dtype)
    return torch.view_as_complex(g.contiguous()) if like.is_complex() else g


def make_params(dtype: torch.dtype, gen: torch.Generator) -> list[torch.Tensor]:
    """Odd sizes, a matrix, an empty tensor, a scalar and (for float types) a complex tensor."""
    shapes = [(7, 13), (1,), (0,), (), (3, 0), (1031,)]
    params = [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]
    complex_dtype = {torch.float32: torch.complex64, torch.float64: torch.complex128}[dtype]
    params.append(torch.randn(5, 3, generator=gen, dtype=complex_dtype))
    return params


def to_numpy_real(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t)
    return t.double().reshape(-1).numpy()


def _cautious(spec: Spec) -> Spec:
    """``spec`` with ``cautious=True`` in every configuration, its reference masking too."""

    def make_hyper(c: dict[str, Any]) -> Any:
        return dataclasses.replace(spec.make_hyper(c), cautious=bool(c.get("cautious", False)))

    return dataclasses.replace(
        spec,
        name=f"{spec.name}-cautious",
        configs=[{**c, "cautious": True} for c in spec.configs],
        make_hyper=make_hyper,
    )


# The optimizers that take ``cautious`` (timm's masking), each configuration with it on: what
# tests/optim/test_cautious.py and the low-memory table run (their peers do not mask).
CAUTIOUS_SPECS = [_cautious(spec) for spec in SPECS if spec.ours.spec.cautious]

# Every optimizer of the table with low-memory state (cautious rows too), in each configuration
# that holds no tensor and each low-memory precision it takes: what the fused low-memory
# kernels are run on (tests/kernels/test_lowbit_every_spec.py, test_triton_lowbit.py).
LOW_MEMORY_ROWS = [
    (spec, config, precision)
    for spec in [*SPECS, *CAUTIOUS_SPECS]
    if "state_precision" in inspect.signature(spec.ours).parameters
    for config in spec.configs
    if not any(isinstance(v, torch.Tensor) for v in config.values())
    for precision in spec.low_memory
]
LOW_MEMORY_IDS = [
    f"{s.name}-{i}-{precision}" for i, (s, _, precision) in enumerate(LOW_MEMORY_ROWS)
]
