"""SGD with momentum: a drop-in replacement for torch.optim.SGD."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..algorithms import _checks as check
from ._base import KernelOptimizer
from ._checkpoint import Slot


class SGD(KernelOptimizer, torch.optim.SGD):
    r"""Stochastic gradient descent with heavy-ball or Nesterov momentum (torch.optim.SGD's API).

    The first-moment half of Adam alone, without bias correction::

        b_1 = g_1,   b_t = μ·b_{t-1} + (1-τ)·g_t
        φ_t = φ_{t-1} - α·d_t,   d_t = g_t + μ·b_t (Nesterov) | b_t (μ > 0) | g_t (μ = 0)

    torch.optim's convention, which differs from some papers: the buffer starts as the first
    gradient (dampening τ is not applied on step 1) and α multiplies the buffer rather than
    being accumulated into it. ``weight_decay`` adds λ·φ to the gradient.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: learning rate α (float or 1-element tensor), default 1e-3.
        momentum: μ, default 0.
        dampening: τ, default 0.
        weight_decay: λ (L2 penalty), default 0.
        nesterov: Nesterov momentum (needs momentum > 0 and dampening = 0).
        maximize: ascend the objective instead of descending it.
        foreach, fused, differentiable: kernel choice, as in :class:`adamkit.Adam`.
        on_nonfinite: what a step does when a gradient holds NaN or Inf: "propagate"
            (default, as torch.optim), "skip" (nothing changes; ``skipped_steps`` counts it)
            or "raise" (:class:`~adamkit.optim.NonFiniteGradientError`, nothing changes).

    Example:
        >>> import torch, adamkit
        >>> w = torch.nn.Parameter(torch.zeros(1))
        >>> opt = adamkit.SGD([w], lr=0.1, momentum=0.9)
        >>> for _ in range(2):
        ...     w.grad = torch.ones(1)
        ...     opt.step()
        >>> w.data  # -0.1·1 - 0.1·1.9
        tensor([-0.2900])
    """

    algorithm = "sgd"
    sparse_grads_supported = True
    group_key_defaults: ClassVar[dict[str, Any]] = {
        "nesterov": False,
        "maximize": False,
        "foreach": None,
        "differentiable": False,
        "fused": False,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float | Tensor = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
        on_nonfinite: str = "propagate",
    ) -> None:
        check.backend_flags(foreach=foreach, fused=fused, differentiable=differentiable)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
            "foreach": foreach,
            "differentiable": differentiable,
            "fused": fused,
        }
        super().__init__(params, defaults, on_nonfinite=on_nonfinite)

    @staticmethod
    def validate_group(group: dict[str, Any]) -> None:
        check.nonnegative("lr", group["lr"])
        check.nonnegative("momentum", group["momentum"])
        check.unit_interval("dampening", group["dampening"], upper_inclusive=True)
        check.nonnegative("weight_decay", group["weight_decay"])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "Nesterov momentum requires a momentum and zero dampening; got "
                f"momentum={group['momentum']!r}, dampening={group['dampening']!r}"
            )

    def state_layout(self, group: dict[str, Any]) -> dict[str, Slot]:
        # torch stores a buffer (None until the first step) only when momentum is on.
        return {"momentum_buffer": Slot.LIKE_PARAM_OR_NONE} if group["momentum"] != 0 else {}

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        # As torch: no state entry without momentum (a throwaway dict stands in).
        return self.state[p] if group["momentum"] != 0 else {}

    def _update_group(self, group: dict[str, Any], amp: dict[str, Tensor]) -> None:
        params, grads, states, sparse = self._collect(group)
        if not params:
            return
        momentum = group["momentum"]
        buffers = [s.get("momentum_buffer") for s in states] if momentum else []
        self._step_kernel(group, params, amp, sparse=sparse)(
            params,
            grads,
            buffers,
            lr=group["lr"],
            momentum=momentum,
            dampening=group["dampening"],
            weight_decay=group["weight_decay"],
            nesterov=group["nesterov"],
            maximize=group["maximize"],
        )
        for p_state, buf in zip(states, buffers, strict=False):
            p_state["momentum_buffer"] = buf
