"""StableAdamW: torch-optimi's ``StableAdamW``, on its spec (the math is in
:mod:`adamkit.algorithms.stable_adamw`; the signature is the spec's hyperparameters, see
:mod:`adamkit.optim._made_init`)."""

from __future__ import annotations

from ..algorithms import stable_adamw
from ._spec_optimizer import SpecOptimizer
from .adam_family import _doc

_ARGS = """
    Arguments and defaults are torch-optimi's ``StableAdamW(params, lr, betas=(0.9, 0.99),
    weight_decay=1e-2, eps=1e-6, decouple_lr=False, max_lr=None)``; optimi's ``kahan_sum``
    is adamkit's ``param_rounding="kahan"``, its ``foreach`` the torch-ops kernel, and
    ``triton``/``gradient_release`` have no equivalent.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: α (no default, as in optimi).  betas: (β1, β2), default (0.9, 0.99).
        weight_decay: λ, decoupled and scaled by the clipped lr: φ·(1 - α_t·λ); default 1e-2.
        eps: ε, default 1e-6 (added to √v̂; ε² floors v̂ in the RMS).
        decouple_lr: "fully decoupled" decay φ·(1 - (α_t/max_lr)·λ).
        max_lr: the lr that ``decouple_lr`` divides by; None: the group's current lr.
        maximize: ascend the objective instead of descending it.
        foreach: True or False for the torch-ops kernel (the spec's element on whole tensors,
            one tensor at a time; there is no torch.optim StableAdamW to follow).
        fused: True for the single-pass kernel (with the RMS's read-only pass before it).
            With neither foreach nor fused set, adamkit picks the fastest kernel for the
            device.
        on_nonfinite: "propagate" (default), "skip" or "raise" for a step whose gradient
            holds NaN or Inf (see :class:`adamkit.Adam`).
        state_precision, min_8bit_size, param_rounding: low-memory state and rounding of
            half-precision params, as for :class:`adamkit.Adam` (docs/low-memory.md).

    Example:
        >>> import torch, adamkit
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = adamkit.StableAdamW([w], lr=0.1, weight_decay=0.0)
        >>> w.grad = torch.tensor([3.0, -0.5])
        >>> opt.step()
        >>> w.data  # first step: m̂ = g, v̂ = g², rms = 1, so -lr·g/(|g|+ε)
        tensor([-0.1000,  0.1000])
"""


class StableAdamW(SpecOptimizer):
    __doc__ = _doc(stable_adamw.__doc__, _ARGS)
    spec = stable_adamw.SPEC
