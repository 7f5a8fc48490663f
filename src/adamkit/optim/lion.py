"""Lion: lion-pytorch's ``Lion``, on its spec (the math is in :mod:`adamkit.algorithms.lion`;
the signature is the spec's hyperparameters, see :mod:`adamkit.optim._made_init`)."""

from __future__ import annotations

from ..algorithms import lion
from ._spec_optimizer import SpecOptimizer
from .adam_family import _doc

_ARGS = """
    Arguments and defaults are lion-pytorch's ``Lion(params, lr=1e-4, betas=(0.9, 0.99),
    weight_decay=0.0)``, state ``exp_avg`` (lion-pytorch's: its checkpoints load both ways).

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: α, default 1e-4.  betas: (β1, β2), default (0.9, 0.99).
        weight_decay: λ (decoupled: φ·(1 - αλ) before the update), default 0.
        maximize: ascend the objective instead of descending it.
        foreach: True or False for the torch-ops kernel (the spec's element on whole tensors,
            one tensor at a time; there is no torch.optim Lion to follow).
        fused: True for the single-pass kernel. With neither foreach nor fused set, adamkit
            picks the fastest kernel for the device.
        cautious: mask the update where it disagrees in sign with the gradient and
            renormalise by 1/max(mean(mask), 1e-3) (timm's ``caution``; decoupled decay not
            masked; docs/conventions.md). Default False.
        on_nonfinite: "propagate" (default), "skip" or "raise" for a step whose gradient
            holds NaN or Inf (see :class:`adamkit.Adam`).
        state_precision, min_8bit_size, param_rounding: low-memory state and rounding of
            half-precision params, as for :class:`adamkit.Adam` (docs/low-memory.md).

    Example:
        >>> import torch, adamkit
        >>> w = torch.nn.Parameter(torch.zeros(3))
        >>> opt = adamkit.Lion([w], lr=0.1)
        >>> w.grad = torch.tensor([3.0, -0.5, 0.0])
        >>> opt.step()
        >>> w.data  # every coordinate moves by lr, none where c = 0
        tensor([-0.1000,  0.1000,  0.0000])
"""


class Lion(SpecOptimizer):
    __doc__ = _doc(lion.__doc__, _ARGS)
    spec = lion.SPEC
