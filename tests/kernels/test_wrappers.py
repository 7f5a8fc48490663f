"""Which form of a kernel the optimizers call: the plain kernel for plain tensors, the adapted
one (DTensor shards, half precision in float32) for anything else."""

from __future__ import annotations

import torch

from adamkit.kernels import wrappers


class _Subclass(torch.Tensor):
    pass


def _kernel(*args, **kwargs):
    raise AssertionError("only picked, not called, here")


def test_plain_params_get_the_kernel_itself():
    adapted = wrappers.Adapted(_kernel, upcast_half=True)
    params = [torch.zeros(2), torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))]
    assert adapted.for_params(params) is _kernel
    assert adapted.for_params([]) is _kernel


def test_half_params_get_the_float32_form_only_when_upcasting():
    half = [torch.zeros(2), torch.nn.Parameter(torch.zeros(2, dtype=torch.bfloat16))]
    upcasting = wrappers.Adapted(_kernel, upcast_half=True)
    assert upcasting.for_params(half) is upcasting.full is not _kernel
    # A kernel that computes half precision in float32 itself (Triton) gets them as they are.
    assert wrappers.Adapted(_kernel, upcast_half=False).for_params(half) is _kernel


def test_tensor_subclasses_get_the_adapted_form():
    # DTensor is such a subclass; the adapted form checks for it properly.
    adapted = wrappers.Adapted(_kernel, upcast_half=False)
    params = [torch.zeros(2), torch.zeros(2).as_subclass(_Subclass)]
    assert adapted.for_params(params) is adapted.full


def test_the_adapted_form_runs_plain_tensors_unchanged():
    calls = []

    def kernel(params, grads, *, lr):
        calls.append((params, grads, lr))

    adapted = wrappers.Adapted(kernel, upcast_half=True)
    params, grads = [torch.zeros(2)], [torch.ones(2)]
    adapted.full(params, grads, lr=0.5)
    assert calls == [(params, grads, 0.5)]
