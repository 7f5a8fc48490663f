"""AdEMAMix: bitsandbytes' ``AdEMAMix`` signature, the authors' update, on its spec (the math
is in :mod:`adamkit.algorithms.ademamix`; the signature is the spec's hyperparameters, see
:mod:`adamkit.optim._made_init`)."""

from __future__ import annotations

from ..algorithms import ademamix
from ._spec_optimizer import SpecOptimizer
from .adam_family import _doc

_ARGS = """
    Arguments and defaults are bitsandbytes' ``AdEMAMix(params, lr=1e-3, betas=(0.9, 0.999,
    0.9999), alpha=5.0, t_alpha=None, t_beta3=None, eps=1e-8, weight_decay=1e-2)``;
    bitsandbytes' ``optim_bits=8`` is adamkit's ``state_precision="8bit"`` (keyword-only);
    ``is_paged`` (CUDA paged memory) has no equivalent.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: α, default 1e-3.  betas: (β1, β2, β3), default (0.9, 0.999, 0.9999).
        alpha: the slow EMA's weight in the numerator, default 5.
        t_alpha, t_beta3: warmup lengths (steps) of α and of β3; None: no warmup. The
            authors advise both equal to the run's length with a large β3.
        eps: ε, default 1e-8.  weight_decay: λ (decoupled: φ·(1 - αλ)), default 1e-2.
        maximize: ascend the objective instead of descending it.
        foreach: True or False for the torch-ops kernel (the spec's element on whole tensors,
            one tensor at a time; there is no torch.optim AdEMAMix to follow).
        fused: True for the single-pass kernel. With neither foreach nor fused set, adamkit
            picks the fastest kernel for the device.
        cautious: mask the update where it disagrees in sign with the gradient and
            renormalise by 1/max(mean(mask), 1e-3) (timm's ``caution``; decoupled decay not
            masked; docs/conventions.md). Default False.
        on_nonfinite: "propagate" (default), "skip" or "raise" for a step whose gradient
            holds NaN or Inf (see :class:`adamkit.Adam`).
        state_precision, min_8bit_size, param_rounding: low-memory state and rounding of
            half-precision params, as for :class:`adamkit.Adam` (docs/low-memory.md); each of
            the three slots is stored in the format chosen.

    Example:
        >>> import torch, adamkit
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = adamkit.AdEMAMix([w], lr=0.1, weight_decay=0.0)
        >>> w.grad = torch.tensor([3.0, -0.5])
        >>> opt.step()
        >>> w.data / 0.1  # m̂1 = g, m2 = 1e-4·g, √v̂ = |g|: -lr·(1 + 5e-4)·sign(g)
        tensor([-1.0005,  1.0005])
"""


class AdEMAMix(SpecOptimizer):
    __doc__ = _doc(ademamix.__doc__, _ARGS)
    spec = ademamix.SPEC
