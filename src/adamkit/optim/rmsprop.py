"""RMSprop: a drop-in replacement for torch.optim.RMSprop."""

from __future__ import annotations

import torch

from ..algorithms import rmsprop as rmsprop_spec
from ._spec_optimizer import SpecOptimizer


class RMSprop(SpecOptimizer, torch.optim.RMSprop):
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
        fused: True for the single-pass kernel (torch has none for RMSprop). With neither
            foreach nor fused set, adamkit picks the fastest kernel for the device.
        on_nonfinite: what a step does when a gradient holds NaN or Inf: "propagate"
            (default, as torch.optim), "skip" (nothing changes; ``skipped_steps`` counts it)
            or "raise" (:class:`~adamkit.optim.NonFiniteGradientError`, nothing changes).
        state_precision, min_8bit_size, param_rounding: low-memory state and rounding of
            half-precision params, as for :class:`adamkit.Adam` (docs/low-memory.md).

    Example:
        >>> import torch, adamkit
        >>> w = torch.nn.Parameter(torch.zeros(1))
        >>> opt = adamkit.RMSprop([w], lr=0.01, eps=0.0)
        >>> w.grad = torch.ones(1)
        >>> opt.step()
        >>> w.data  # -0.01 / sqrt(1 - 0.99)
        tensor([-0.1000])
    """

    spec = rmsprop_spec.SPEC
