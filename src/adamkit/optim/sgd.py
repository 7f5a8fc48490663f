"""SGD with momentum: a drop-in replacement for torch.optim.SGD."""

from __future__ import annotations

from typing import Any

import torch

from ..algorithms import sgd as sgd_spec
from ._spec_optimizer import SpecOptimizer


class SGD(SpecOptimizer, torch.optim.SGD):
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
        state_precision, min_8bit_size, param_rounding: low-memory momentum buffer and
            rounding of half-precision params, as for :class:`adamkit.Adam`
            (docs/low-memory.md); a low-memory buffer keeps a step count beside it.

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

    spec = sgd_spec.SPEC
    sparse_grads_supported = True
    checked_alone = frozenset({"lr"})  # (momentum is checked with nesterov, below)

    def validate_group(self, group: dict[str, Any]) -> None:
        super().validate_group(group)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                "Nesterov momentum requires a momentum and zero dampening; got "
                f"momentum={group['momentum']!r}, dampening={group['dampening']!r}"
            )
