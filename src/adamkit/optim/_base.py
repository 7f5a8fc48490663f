"""Bookkeeping shared by adamkit's optimizers: grad mode, closures, lazy state, step counts.

Subclasses say which state tensors a parameter has and how to call their kernel; no
arithmetic on parameters happens here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..kernels import registry


def step_dtype(*, fused: bool | None = False) -> torch.dtype:
    """dtype of ``state["step"]``, as torch.optim chooses it (so checkpoints move both ways)."""
    if fused:
        return torch.float32
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def new_step(param: Tensor, group: dict[str, Any]) -> Tensor:
    """A zero step counter: on the parameter's device for capturable/fused, else on the CPU."""
    fused = group.get("fused")
    on_device = bool(group.get("capturable") or fused)
    device = param.device if on_device else torch.device("cpu")
    return torch.zeros((), dtype=step_dtype(fused=fused), device=device)


class KernelOptimizer(torch.optim.Optimizer):
    """A torch.optim.Optimizer whose update math lives in :mod:`adamkit.kernels`."""

    algorithm: ClassVar[str]
    # Group keys a checkpoint from an older torch may lack, with their defaults.
    group_key_defaults: ClassVar[dict[str, Any]] = {}
    sparse_grads_supported: ClassVar[bool] = False

    @staticmethod
    def validate_group(group: dict[str, Any]) -> None:
        """Raise ValueError naming any out-of-range hyperparameter of ``group``."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group (as torch.optim does), validating its hyperparameters first.

        An invalid group raises ValueError and leaves the optimizer as it was.
        """
        super().add_param_group(param_group)
        try:
            self.validate_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.group_key_defaults.items():
                group.setdefault(key, value)
            for p in group["params"]:
                p_state = self.state.get(p, {})
                if "step" in p_state and not torch.is_tensor(p_state["step"]):
                    p_state["step"] = new_step(p, group).fill_(float(p_state["step"]))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform one optimization step.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.set_grad_enabled(bool(self.defaults.get("differentiable", False))):
            for group in self.param_groups:
                self._update_group(group)
        return loss

    def _update_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _params_with_grad(self, group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor]]:
        params, grads = [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse and not self.sparse_grads_supported:
                raise RuntimeError(
                    f"{type(self).__name__} does not support sparse gradients, "
                    "please consider SparseAdam instead"
                )
            params.append(p)
            grads.append(p.grad)
        return params, grads

    def _kernel(self, group: dict[str, Any], params: list[Tensor], *, sparse: bool = False):
        backend = registry.choose_backend(
            foreach=group.get("foreach"),
            fused=group.get("fused"),
            differentiable=group.get("differentiable", False),
            capturable=group.get("capturable", False),
        )
        if sparse:
            backend = "forloop"  # only plain torch ops accept sparse gradients
        return registry.kernel(self.algorithm, backend, params)


def increment(steps: list[Tensor]) -> None:
    """Advance each parameter's step counter by one."""
    for s in steps:
        s += 1
