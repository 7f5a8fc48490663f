"""ADOPT: the authors' ``ADOPT`` (iShohei220/adopt), on its spec (the math is in
:mod:`adamkit.algorithms.adopt`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from torch import Tensor

from ..algorithms import adopt
from ..kernels import lowbit
from ._spec_optimizer import SpecOptimizer
from .adam_family import _doc

_ARGS = """
    Arguments and defaults are the authors' ``ADOPT(params, lr=1e-3, betas=(0.9, 0.9999),
    eps=1e-6, clip_lambda=lambda step: step**0.25, weight_decay=0.0, decouple=False)``; as
    theirs, ``clip_lambda`` is kept on the optimizer (``opt.clip_lambda``), not in the param
    groups, so checkpoints hold plain data.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: α, default 1e-3.  betas: (β1, β2), default (0.9, 0.9999).
        eps: ε, a floor under √v, default 1e-6.
        clip_lambda: the clip of the normalised gradient as a function of the calls before
            this one; default ``step**0.25`` (:func:`adamkit.algorithms.adopt.
            default_clip_lambda`, computed inside the kernels); None: no clipping; any other
            callable is evaluated on the host once per step value.
        weight_decay: λ, an L2 term (``decouple=False``) or decoupled (``decouple=True``).
        maximize: ascend the objective instead of descending it.
        foreach: True or False for the torch-ops kernel (the spec's element on whole tensors,
            one tensor at a time).
        fused: True for the single-pass kernel. With neither foreach nor fused set, adamkit
            picks the fastest kernel for the device.
        cautious: mask the update where it disagrees with the gradient (timm's ``caution``).
        on_nonfinite: "propagate" (default), "skip" or "raise" for a step whose gradient
            holds NaN or Inf (see :class:`adamkit.Adam`).
        state_precision, min_8bit_size, param_rounding: low-memory state and rounding of
            half-precision params, as for :class:`adamkit.Adam` (docs/low-memory.md).

    Example:
        >>> import torch, adamkit
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = adamkit.ADOPT([w], lr=0.1)
        >>> w.grad = torch.tensor([3.0, -0.5])
        >>> opt.step()  # the first call only sets v = g²
        >>> w.grad = torch.tensor([3.0, -0.5])
        >>> opt.step()  # n = g/|g| = ±1 (clip 1), m = 0.1·n
        >>> w.data
        tensor([-0.0100,  0.0100])
"""


class ADOPT(SpecOptimizer):
    __doc__ = _doc(adopt.__doc__, _ARGS)
    spec = adopt.SPEC

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        eps: float = 1e-6,
        clip_lambda: Callable[[float], float] | None = adopt.default_clip_lambda,
        weight_decay: float = 0.0,
        decouple: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        cautious: bool = False,
        on_nonfinite: str = "propagate",
        state_precision: str = "fp32",
        min_8bit_size: int = 4096,
        param_rounding: str = "nearest",
    ) -> None:
        if clip_lambda is not None and not callable(clip_lambda):
            raise ValueError(
                f"clip_lambda must be a callable of the step or None, got {clip_lambda!r}"
            )
        self.clip_lambda = clip_lambda
        defaults: dict[str, Any] = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, decouple=decouple,
            maximize=maximize, foreach=foreach,
        )  # fmt: skip
        if fused is not None:
            defaults["fused"] = fused
        if cautious:
            defaults["cautious"] = cautious
        super().__init__(
            params, defaults, on_nonfinite=on_nonfinite,
            low_memory=(state_precision, min_8bit_size, param_rounding),
        )  # fmt: skip

    def _update_group(self, group: dict[str, Any], amp: dict[str, Tensor]) -> None:
        """The default clip is computed inside the kernels from each tensor's step. Another
        ``clip_lambda`` is evaluated here for each tensor about to be updated (not on its
        first call, which only sets v), and the tensors are stepped in sets of equal clip
        (a tensor listed twice: its second step after its first, with its own clip). Such
        steps are not replayed by a step plan (the clip moves), and an error in a later set
        puts back what the earlier ones changed."""
        clip_lambda = self.__dict__.get("clip_lambda", adopt.default_clip_lambda)
        if clip_lambda is adopt.default_clip_lambda:
            super()._update_group(group, amp)
            return
        plans = self.__dict__.setdefault("_step_plans", {})
        rounds = _rounds(group["params"])
        first = self._by_clip(clip_lambda, rounds[0]) if rounds else {}
        several = len(rounds) > 1 or len(first) > 1
        saved = self._saved(group["params"]) if several else []
        try:
            for r, params in enumerate(rounds):
                sets = first if r == 0 else self._by_clip(clip_lambda, params)
                for clip, together in sets.items():
                    call = {**group, "params": together, "host_clip": clip}
                    try:
                        super()._update_group(call, amp)
                    finally:  # (keyed by the id of a dict that dies here: another may reuse it)
                        plans.pop(id(call), None)
                        self.__dict__.get("_conformed", {}).pop(id(call), None)
        except BaseException:
            self._restore(saved)
            raise

    def _by_clip(
        self, clip_lambda: Callable[[float], float] | None, params: list[Tensor]
    ) -> dict[float, list[Tensor]]:
        by_clip: dict[float, list[Tensor]] = {}
        for p in params:
            state = self.state.get(p)
            calls_before = float(state["step"]) if state and "step" in state else 0.0
            clip = math.inf
            if clip_lambda is not None and p.grad is not None and calls_before >= 1:
                clip = _checked_clip(clip_lambda, calls_before)
            by_clip.setdefault(clip, []).append(p)
        return by_clip

    def _saved(self, params: list[Tensor]) -> list[tuple[Tensor, Tensor, dict[str, Any]]]:
        """Copies of ``params`` and their state (taken only when a group steps in sets)."""
        unique = {id(p): p for p in params}.values()
        return [
            (p, p.detach().clone(), {
                k: v.clone() if isinstance(v, Tensor) else v
                for k, v in self.state.get(p, {}).items()
            })
            for p in unique
        ]  # fmt: skip

    def _restore(self, saved: list[tuple[Tensor, Tensor, dict[str, Any]]]) -> None:
        for p, data, state in saved:
            p.detach().copy_(data)
            current = self.state[p]
            current.clear()
            current.update(state)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["clip_lambda"] = self.clip_lambda
        return state


def _rounds(params: list[Tensor]) -> list[list[Tensor]]:
    """``params`` in rounds without a repeated tensor: first occurrences, then second ones."""
    return [[params[i] for i in idx] for idx in lowbit._rounds(params)]


def _checked_clip(clip_lambda: Callable[[float], float], calls_before: float) -> float:
    value = clip_lambda(calls_before)
    try:
        clip = float(value)
    except (TypeError, ValueError, RuntimeError):
        clip = math.nan
    if not clip >= 0:
        raise ValueError(
            f"clip_lambda({calls_before:g}) returned {value!r}; it must return a number >= 0 "
            "(math.inf: no clipping)"
        )
    return clip
