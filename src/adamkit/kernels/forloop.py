"""The for-loop kernels: one tensor at a time, plain torch ops. The ground truth for torch.

Operation order follows torch.optim's single-tensor path so that results agree with it to
the last bit where possible. With ``advance_steps=True`` a kernel first adds one to each step
counter (the optimizer's +1, left to the kernel so that a fused one can do it in its own
pass); otherwise ``steps`` already hold the new step count t and are only read.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from ._tensors import scalar


def sgd(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float | Tensor,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
) -> None:
    """SGD: b ← μ·b + (1-τ)·g (b = g on the first step); φ ← φ - α·(g + μ·b if Nesterov else b).

    ``momentum_buffers[i]`` is None before the first step; the kernel fills it in.
    """
    lr_in_graph = isinstance(lr, Tensor) and lr.requires_grad  # differentiable w.r.t. lr
    for i, param in enumerate(params):
        grad = -grads[i] if maximize else grads[i]
        if weight_decay != 0:
            grad = grad.add(param, alpha=weight_decay)
        if momentum != 0:
            buf = momentum_buffers[i]
            if buf is None:
                buf = grad.detach().clone()
                momentum_buffers[i] = buf
            else:
                buf.mul_(momentum).add_(grad, alpha=1 - dampening)
            grad = grad.add(buf, alpha=momentum) if nesterov else buf
        if lr_in_graph:
            param.addcmul_(grad, lr, value=-1)
        else:
            param.add_(grad, alpha=-scalar(lr))
