"""The for-loop kernels: one tensor at a time, plain torch ops. The ground truth for torch.

Operation order follows torch.optim's single-tensor path so that results agree with it to
the last bit where possible. With ``advance_steps=True`` a kernel first adds one to each step
counter (the optimizer's +1, left to the kernel so that a fused one can do it in its own
pass); otherwise ``steps`` already hold the new step count t and are only read.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._tensors import add_one, real_view, scalar, step_arithmetic_dtype


def adam(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    exp_avgs: Sequence[Tensor],
    exp_avg_sqs: Sequence[Tensor],
    max_exp_avg_sqs: Sequence[Tensor],
    steps: Sequence[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled_weight_decay: bool,
    amsgrad: bool,
    maximize: bool,
    capturable: bool = False,
    differentiable: bool = False,
    advance_steps: bool = False,
) -> None:
    """Adam/AdamW: m ← β1·m + (1-β1)·g; v ← β2·v + (1-β2)·g²; φ ← φ - α·m̂/(√v̂ + ε).

    A tensor ``lr`` stays a tensor, so ``lr/(1-β1^t)`` is computed in its dtype, as torch does.
    With ``differentiable`` (autograd records the step) the operations are torch's
    differentiable ones: bias corrections as tensors, no in-place write to a tensor autograd
    saved (the max of AMSGrad out of place, ``exp_avg`` copied before it is read by
    ``addcdiv_``), so that backward through several steps works as in torch.
    """
    if advance_steps:
        add_one(steps)
    tensor_path = capturable or differentiable or (isinstance(lr, Tensor) and lr.requires_grad)
    for i, param in enumerate(params):
        grad = -grads[i] if maximize else grads[i]
        if weight_decay != 0:
            if decoupled_weight_decay:
                param.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(param, alpha=weight_decay)
        param, grad = real_view(param), real_view(grad)
        exp_avg, exp_avg_sq = real_view(exp_avgs[i]), real_view(exp_avg_sqs[i])

        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        second_moment = exp_avg_sq
        if amsgrad:
            max_exp_avg_sq = real_view(max_exp_avg_sqs[i])
            if differentiable:  # out= does not record autograd history
                max_exp_avg_sq.copy_(torch.maximum(max_exp_avg_sq.clone(), exp_avg_sq))
            else:
                torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            second_moment = max_exp_avg_sq

        if tensor_path:
            # Step, bias corrections and lr stay tensors: no host synchronisation, and
            # autograd sees them (differentiable=True), as in torch's capturable and
            # differentiable paths.
            step = steps[i].to(step_arithmetic_dtype())
            neg_step_size = -(lr / (1 - beta1**step))
            bias_correction2_sqrt = (1 - beta2**step).sqrt()
            denom = (second_moment.sqrt() / (bias_correction2_sqrt * neg_step_size)).add_(
                eps / neg_step_size
            )
            # exp_avg changes in place next step: autograd keeps a copy (torch's clone).
            param.addcdiv_(exp_avg.clone() if differentiable else exp_avg, denom)
        else:
            step = steps[i].item()
            step_size = lr / (1 - beta1**step)
            bias_correction2_sqrt = (1 - beta2**step) ** 0.5
            denom = (second_moment.sqrt() / bias_correction2_sqrt).add_(eps)
            param.addcdiv_(exp_avg, denom, value=-step_size)


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
