"""Lazy Adam for sparse gradients: only the rows present in the gradient are touched.

Operation order follows torch.optim.SparseAdam, so results agree with it bit for bit. The
parameter and the moments stay dense; the gradient's rows are gathered from them and the
updates are scattered back, so no dense temporary the size of the parameter is made.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor


def lazy_adam(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    steps: Sequence[Tensor],
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    maximize: bool,
) -> None:
    """For the rows r in the gradient: m_r, v_r as Adam, then, as torch.optim.SparseAdam,
    ``φ_r -= α·√(1-β2^t)/(1-β1^t) · m_r/(√v_r + ε)``.

    That is the TF/Keras "ε-hat" placement: ε is added to √v_r *before* bias correction, which
    equals Adam's ``m̂/(√v̂ + ε')`` with ``ε' = ε/√(1-β2^t)``, not ``m̂/(√v̂ + ε)`` as the dense
    kernels compute. Kept for bit-for-bit agreement with SparseAdam; the two agree when ε is
    small against √v̂.
    """
    for param, grad, exp_avg, exp_avg_sq, step_t in zip(
        params, grads, exp_avgs, exp_avg_sqs, steps, strict=True
    ):
        grad = (-grad if maximize else grad).coalesce()  # the update is not linear in g
        indices, values = grad._indices(), grad._values()
        if values.numel() == 0:
            continue

        def as_sparse(rows: Tensor, grad: Tensor = grad, indices: Tensor = indices) -> Tensor:
            return grad.new(indices, rows, grad.size())

        # m ← m + (1-β1)(g - m) on the present rows (= β1·m + (1-β1)·g).
        old_m = exp_avg.sparse_mask(grad)._values()
        m_update = values.sub(old_m).mul_(1 - beta1)
        exp_avg.add_(as_sparse(m_update))
        old_v = exp_avg_sq.sparse_mask(grad)._values()
        v_update = values.pow(2).sub_(old_v).mul_(1 - beta2)
        exp_avg_sq.add_(as_sparse(v_update))

        numer = m_update.add_(old_m)
        denom = v_update.add_(old_v).sqrt_().add_(eps)
        step = step_t.item()
        step_size = lr * math.sqrt(1 - beta2**step) / (1 - beta1**step)
        param.add_(as_sparse(-step_size * numer.div_(denom)))
