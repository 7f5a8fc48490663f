"""Schedule-Free AdamW: schedulefree's ``AdamWScheduleFree``, on its spec (the math is in
:mod:`adamkit.algorithms.schedule_free`), with its ``train()``/``eval()`` mode switch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..algorithms import schedule_free
from ._spec_optimizer import SpecOptimizer
from .adam_family import _doc

_ARGS = """
    Arguments and defaults are schedulefree's ``AdamWScheduleFree(params, lr=0.0025,
    betas=(0.9, 0.999), eps=1e-8, weight_decay=0, warmup_steps=0, r=0.0,
    weight_lr_power=2.0)``; its param groups hold the same keys (``k``, ``train_mode``,
    ``weight_sum``, ``lr_max``, ``scheduled_lr``) and its state ``z`` and ``exp_avg_sq``, so
    checkpoints load both ways.

    Modes, as in schedulefree: the optimizer starts in eval mode and ``step()`` raises until
    ``train()`` is called; ``eval()`` moves every parameter from y to x (what to evaluate and
    to save), ``train()`` back. Call ``opt.train()`` where you call ``model.train()`` and
    ``opt.eval()`` where you call ``model.eval()`` (and before saving the model). The mode is
    saved in the optimizer's state_dict (``train_mode``), so a checkpoint taken in either mode
    resumes exactly: load the model and the optimizer, then call the mode you want.
    BatchNorm's running statistics are those of y, not x: before evaluating, recompute them in
    eval mode of the optimizer with the model in train mode over a few batches (schedulefree's
    advice). Hugging Face's Trainer calls ``train()``/``eval()`` itself; with Lightning, call
    them from its hooks (docs/integrations.md).

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: lr, default 0.0025.  betas: (β1, β2), default (0.9, 0.999).  eps: ε, default 1e-8.
        weight_decay: λ, added to the normalised gradient at y (schedulefree's), default 0.
        warmup_steps: steps of linear lr warmup, default 0.
        r: the average's polynomial weighting power, default 0.
        weight_lr_power: the average weights lr_max^weight_lr_power, default 2.
        maximize: ascend the objective instead of descending it.
        foreach: True or False for the torch-ops kernel (the spec's element on whole tensors,
            one tensor at a time).
        fused: True for the single-pass kernel. With neither foreach nor fused set, adamkit
            picks the fastest kernel for the device.
        on_nonfinite: "propagate" (default), "skip" or "raise" for a step whose gradient
            holds NaN or Inf (see :class:`adamkit.Adam`); a skipped step leaves the group's
            count and average where they were.
        state_precision: "fp32" (default) or "bf16" (z and v in bfloat16 with stochastic
            rounding); "8bit" is refused: z is the iterate itself, which 8-bit codes would
            round away.  min_8bit_size, param_rounding: as for :class:`adamkit.Adam`.
            With bfloat16 params, "fp32" keeps z and v in the param's dtype rounded to
            nearest (as schedulefree and torch.optim do), where steps below bfloat16's
            resolution are lost and training stalls; use ``state_precision="bf16"`` with
            ``param_rounding="stochastic"`` or ``"kahan"`` (z alone stochastic and y to
            nearest is worse: y stays put while z moves, and x moves away from both).

    ``torch.compile(opt.step)`` runs this step eagerly: its group state changes every step.

    Example:
        >>> import torch, adamkit
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = adamkit.ScheduleFreeAdamW([w], lr=0.1)
        >>> opt.train()
        >>> w.grad = torch.tensor([3.0, -0.5])
        >>> opt.step()
        >>> w.data  # first step: the average x is z, and y = z = -lr·g/|g|
        tensor([-0.1000,  0.1000])
"""


class ScheduleFreeAdamW(SpecOptimizer):
    __doc__ = _doc(schedule_free.__doc__, _ARGS)
    spec = schedule_free.SPEC

    checked_alone = SpecOptimizer.checked_alone  # (validate_group reads state_precision)

    def validate_group(self, group: dict[str, Any]) -> None:
        super().validate_group(group)  # (the constructor's options, a group's, a new value)
        if self.group_options(group)[0] == "8bit":
            raise ValueError(
                "ScheduleFreeAdamW: state_precision='8bit' is not supported: its state z is the "
                "iterate itself (the average x is built from it), which 8-bit codes would round "
                "away; use 'fp32' or 'bf16'"
            )

    @torch.no_grad()
    def train(self) -> None:
        """Train mode: every parameter from x to y = x + (1-β1)·(z - x) (a no-op if already)."""
        self._switch(train=True)

    @torch.no_grad()
    def eval(self) -> None:
        """Eval mode: every parameter from y to x = y + (1 - 1/β1)·(z - y) (a no-op if already)."""
        self._switch(train=False)

    def _switch(self, *, train: bool) -> None:
        groups = [g for g in self.param_groups if bool(g["train_mode"]) != train]
        for group in groups:  # checked before any parameter moves
            started = [
                (p, self.state[p]["z"]) for p in group["params"] if "z" in self.state.get(p, {})
            ]
            if not train and started and float(group["betas"][0]) == 0:
                raise ValueError(
                    "ScheduleFreeAdamW.eval(): with betas[0] = 0 the parameter y equals z and "
                    "the average x cannot be recovered from them; use betas[0] > 0"
                )
            for p, z in started:
                if z.shape != p.shape or z.device != p.device:
                    raise ValueError(
                        f"ScheduleFreeAdamW.{'train' if train else 'eval'}(): a parameter of "
                        f"shape {tuple(p.shape)} on {p.device} has state z of shape "
                        f"{tuple(z.shape)} on {z.device}; z must match its parameter (del "
                        "optimizer.state[p] to start it afresh); nothing was moved"
                    )
        for group in groups:
            beta1 = float(group["betas"][0])
            for p in group["params"]:
                z = self.state.get(p, {}).get("z")
                if z is not None:
                    p.lerp_(z.to(p.dtype), 1 - beta1 if train else 1 - 1 / beta1)
            group["train_mode"] = train

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (as torch.optim does) in the optimizer's current mode: one added in
        train mode starts in train mode (schedulefree's starts in eval mode, and ``eval()``
        then skips it)."""
        if self.param_groups and "train_mode" not in param_group:
            param_group = {**param_group, "train_mode": bool(self.param_groups[0]["train_mode"])}
        super().add_param_group(param_group)

    def _patch_step_function(self) -> None:
        """torch.optim wraps ``step`` with its hooks here, at the first construction; before
        that, the step's body is given a twin that runs eagerly under torch.compile(opt.step):
        its group state (a count and a float sum that change every step) would recompile the
        graph at every step. (Made here, not by a decorator: ``torch.compiler.disable``
        imports torch._dynamo, about 1 s, which ``import adamkit`` then paid; torch.optim's
        constructor imports it too. And only called while compiling: its wrapper costs ~2 µs
        a step, a tenth of a small model's.)"""
        if "_eager_step" not in ScheduleFreeAdamW.__dict__:
            ScheduleFreeAdamW._eager_step = torch.compiler.disable(ScheduleFreeAdamW._step)  # type: ignore[attr-defined]
        super()._patch_step_function()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One step (in train mode: ``train()`` first; see the class's docstring)."""
        if torch.compiler.is_compiling():
            return self._eager_step(closure)  # type: ignore[attr-defined]
        return self._step(closure)

    def _step(self, closure: Callable[[], Any] | None) -> Any:
        if not all(g["train_mode"] for g in self.param_groups):
            raise RuntimeError(
                "ScheduleFreeAdamW.step() needs train mode: call optimizer.train() before "
                "training steps and optimizer.eval() before evaluating or saving (the "
                "parameters hold y in train mode and the average x in eval mode)"
            )
        return super().step(closure)
