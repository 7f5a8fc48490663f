"""RMSprop: a drop-in replacement for torch.optim.RMSprop."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..algorithms import _checks as check
from ..algorithms import rmsprop as rmsprop_spec
from ._base import KernelOptimizer, new_step
from ._checkpoint import Slot


class RMSprop(KernelOptimizer, torch.optim.RMSprop):
    r"""RMSprop (Tieleman & Hinton, 2012) with torch.optim.RMSprop's arguments and state.

    The second-moment half of Adam alone, with no bias correction::

        v_t = a·v_{t-1} + (1-a)·g_t²                      a = alpha
        s_t = √v_t + ε      (centered: √(v_t - ḡ_t²) + ε, ḡ_t = a·ḡ_{t-1} + (1-a)·g_t)
        φ_t = φ_{t-1} - α·g_t/s_t      (momentum μ > 0: b_t = μ·b_{t-1} + g_t/s_t, φ_t -= α·b_t)

    ε is added outside the square root, as in torch.optim; TensorFlow/Keras add it inside,
    ``√(v_t + ε)``, so the same ε value means a different thing there.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: learning rate α (float or 1-element tensor), default 1e-2.
        alpha: smoothing constant a, default 0.99.
        eps: ε, default 1e-8.
        weight_decay: λ (L2 penalty), default 0.
        momentum: μ, default 0.
        centered: divide by an estimate of the gradient's standard deviation instead.
        capturable, foreach, maximize, differentiable: as in :class:`adamkit.Adam`.
        on_nonfinite: what a step does when a gradient holds NaN or Inf: "propagate"
            (default, as torch.optim), "skip" (nothing changes; ``skipped_steps`` counts it)
            or "raise" (:class:`~adamkit.optim.NonFiniteGradientError`, nothing changes).

    Example:
        >>> import torch, adamkit
        >>> w = torch.nn.Parameter(torch.zeros(1))
        >>> opt = adamkit.RMSprop([w], lr=0.01, eps=0.0)
        >>> w.grad = torch.ones(1)
        >>> opt.step()
        >>> w.data  # -0.01 / sqrt(1 - 0.99)
        tensor([-0.1000])
    """

    algorithm = "rmsprop"
    group_key_defaults: ClassVar[dict[str, Any]] = {
        "momentum": 0,
        "centered": False,
        "foreach": None,
        "maximize": False,
        "differentiable": False,
        "capturable": False,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
        *,
        on_nonfinite: str = "propagate",
    ) -> None:
        check.backend_flags(foreach=foreach, fused=None, differentiable=differentiable)
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "alpha": alpha,
            "eps": eps,
            "centered": centered,
            "weight_decay": weight_decay,
            "capturable": capturable,
            "foreach": foreach,
            "maximize": maximize,
            "differentiable": differentiable,
        }
        super().__init__(params, defaults, on_nonfinite=on_nonfinite)

    @staticmethod
    def validate_group(group: dict[str, Any]) -> None:
        rmsprop_spec.SPEC.check(group)

    def state_layout(self, group: dict[str, Any]) -> dict[str, Slot]:
        layout = {"step": Slot.STEP, "square_avg": Slot.LIKE_PARAM}
        if group["momentum"] > 0:
            layout["momentum_buffer"] = Slot.LIKE_PARAM
        if group["centered"]:
            layout["grad_avg"] = Slot.LIKE_PARAM
        return layout

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = new_step(p, group)
            state["square_avg"] = self.zeros_state(p, group)
            if group["momentum"] > 0:
                state["momentum_buffer"] = self.zeros_state(p, group)
            if group["centered"]:
                state["grad_avg"] = self.zeros_state(p, group)
        return state

    def _update_group(self, group: dict[str, Any], amp: dict[str, Tensor]) -> None:
        params, grads, states, _ = self._collect(group)  # sparse gradients raised there
        if not params:
            return
        steps = [s["step"] for s in states]
        self._step_kernel(group, params, amp)(
            params,
            grads,
            [s["square_avg"] for s in states],
            [s["grad_avg"] for s in states] if group["centered"] else [],
            [s["momentum_buffer"] for s in states] if group["momentum"] > 0 else [],
            steps,
            lr=group["lr"],
            alpha=group["alpha"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            centered=group["centered"],
            maximize=group["maximize"],
            capturable=group["capturable"],
            differentiable=group["differentiable"],
            advance_steps=self._kernel_counts_steps(steps, amp),
        )
