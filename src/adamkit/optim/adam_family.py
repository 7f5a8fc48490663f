"""NAdam, RAdam and Adamax: drop-in replacements for their torch.optim namesakes, each a
docstring and its spec (the math is in :mod:`adamkit.algorithms`; the signature is torch's,
see :mod:`adamkit.optim._made_init`)."""

from __future__ import annotations

import textwrap

import torch

from ..algorithms import adamax, nadam, radam
from ._spec_optimizer import SpecOptimizer


def _doc(math: str | None, *parts: str) -> str:
    """A class docstring: the spec module's math, then the class's own parts, all at one
    indentation (the parts are written indented, as in a class body)."""
    return (math or "") + textwrap.dedent("".join(parts))


_KERNEL_ARGS = """
        foreach: True for the multi-tensor kernel, False for the for-loop kernel (both are
            torch's own functional update, so results equal torch.optim's bit for bit).
        maximize: ascend the objective instead of descending it.
        capturable: keep the step count on the device (no host synchronisation).
        differentiable: keep autograd history through the step (for-loop kernel).
        fused: True for the single-pass kernel (torch has none for this optimizer). With
            neither foreach nor fused set, adamkit picks the fastest kernel for the device.
        cautious: mask the update where it disagrees in sign with the gradient and
            renormalise by 1/max(mean(mask), 1e-3) (timm's ``caution``; decoupled decay not
            masked; docs/conventions.md). Default False.
        on_nonfinite: "propagate" (default, as torch.optim), "skip" or "raise" for a step
            whose gradient holds NaN or Inf (see :class:`adamkit.Adam`).
        state_precision, min_8bit_size, param_rounding: low-memory state and rounding of
            half-precision params, as for :class:`adamkit.Adam` (docs/low-memory.md)."""


class NAdam(SpecOptimizer, torch.optim.NAdam):
    __doc__ = _doc(
        nadam.__doc__,
        """
    Arguments and defaults are torch.optim.NAdam's, state ``step``, ``mu_product``,
    ``exp_avg``, ``exp_avg_sq``.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: α, default 2e-3.  betas: (β1, β2), default (0.9, 0.999).  eps: ε, default 1e-8.
        weight_decay: λ, default 0.  momentum_decay: ψ, default 4e-3.
        decoupled_weight_decay: multiply φ by (1 - αλ) instead of adding λφ to g (NAdamW).""",
        _KERNEL_ARGS,
        """

    Example:
        >>> import torch, adamkit
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = adamkit.NAdam([w], lr=0.1)
        >>> w.grad = torch.tensor([3.0, -0.5])
        >>> opt.step()
        >>> w.data
        tensor([-0.1056,  0.1056])
    """,
    )
    spec = nadam.SPEC


class RAdam(SpecOptimizer, torch.optim.RAdam):
    __doc__ = _doc(
        radam.__doc__,
        """
    Arguments and defaults are torch.optim.RAdam's, state ``step``, ``exp_avg``,
    ``exp_avg_sq``.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: α, default 1e-3.  betas: (β1, β2), default (0.9, 0.999).  eps: ε, default 1e-8.
        weight_decay: λ, default 0.
        decoupled_weight_decay: multiply φ by (1 - αλ) instead of adding λφ to g.""",
        _KERNEL_ARGS,
        """

    Example:
        >>> import torch, adamkit
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = adamkit.RAdam([w], lr=0.1)
        >>> w.grad = torch.tensor([3.0, -0.5])
        >>> opt.step()
        >>> w.data  # ρ_1 <= 5: the first steps are momentum SGD, α·m̂ = α·g
        tensor([-0.3000,  0.0500])
    """,
    )
    spec = radam.SPEC


class Adamax(SpecOptimizer, torch.optim.Adamax):
    __doc__ = _doc(
        adamax.__doc__,
        """
    Arguments and defaults are torch.optim.Adamax's, state ``step``, ``exp_avg``, ``exp_inf``.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: α, default 2e-3.  betas: (β1, β2), default (0.9, 0.999).  eps: ε, default 1e-8.
        weight_decay: λ (L2), default 0.""",
        _KERNEL_ARGS,
        """

    Example:
        >>> import torch, adamkit
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = adamkit.Adamax([w], lr=0.1)
        >>> w.grad = torch.tensor([3.0, -0.5])
        >>> opt.step()
        >>> w.data  # the first step is α·g/(|g|+ε)
        tensor([-0.1000,  0.1000])
    """,
    )
    spec = adamax.SPEC
