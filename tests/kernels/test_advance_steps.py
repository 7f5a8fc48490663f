"""``advance_steps=True``: a kernel adds the step's +1 to every counter itself, exactly as
counting first and then calling it would (the fused CPU kernel does it inside its loop)."""

from __future__ import annotations

import pytest
import torch

from adamkit.kernels import foreach, forloop, fused_cpu, registry, triton_kernels

KERNELS = {"forloop": forloop, "foreach": foreach, "fused_cpu": fused_cpu}
if registry.triton_available():
    KERNELS["triton"] = triton_kernels  # on CPU tensors under TRITON_INTERPRET=1 (conftest)

HYPER = {
    "adam": dict(
        lr=1e-2,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        decoupled_weight_decay=False,
        amsgrad=False,
        maximize=False,
    ),
    "rmsprop": dict(
        lr=1e-2,
        alpha=0.99,
        eps=1e-8,
        weight_decay=0.0,
        momentum=0.0,
        centered=False,
        maximize=False,
    ),
}
LARGE = {torch.float64: 2.0**40, torch.float32: 2.0**20}


def _tensors(step_dtype: torch.dtype):
    """Params of every path through the fused kernel: loop (a long one, split across
    threads), empty (no loop) and non-contiguous (the for-loop kernel); counters from 0 to
    a large count."""
    gen = torch.Generator().manual_seed(5)
    params = [
        torch.randn(fused_cpu.SPLIT_MIN_ELEMENTS + 9, generator=gen),
        torch.randn(0),
        torch.randn(6, 4, generator=gen).t(),
        torch.randn(33, generator=gen),
    ]
    grads = [torch.randn(p.shape, generator=gen) for p in params]
    state = [[torch.rand(p.shape, generator=gen) for p in params] for _ in range(2)]
    counts = [0.0, 5.0, 7.0, LARGE[step_dtype]]
    steps = [torch.tensor(c, dtype=step_dtype) for c in counts]
    return params, grads, state, steps, counts


def _call(module, algorithm, tensors, **kw):
    params, grads, (a, b), steps, _ = tensors
    if algorithm == "adam":
        module.adam(params, grads, a, b, [], steps, **HYPER["adam"], **kw)
    else:
        module.rmsprop(params, grads, a, [], b, steps, **HYPER["rmsprop"], **kw)


@pytest.mark.parametrize("step_dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("algorithm", ["adam", "rmsprop"])
@pytest.mark.parametrize("name", list(KERNELS))
def test_advance_steps_equals_counting_first(name, algorithm, step_dtype):
    module = KERNELS[name]
    advanced = _tensors(step_dtype)
    _call(module, algorithm, advanced, advance_steps=True)
    counted = _tensors(step_dtype)
    torch._foreach_add_(counted[3], 1)
    _call(module, algorithm, counted)
    assert [s.item() for s in advanced[3]] == [c + 1 for c in advanced[4]]
    assert all(s.dtype == step_dtype for s in advanced[3])  # counted in place, not replaced
    params, _, (a, b), _, _ = advanced
    expected, _, (ea, eb), _, _ = counted
    for got, want in zip(params + a + b, expected + ea + eb, strict=True):
        assert torch.equal(got, want)


def test_without_advance_steps_the_counters_are_only_read():
    tensors = _tensors(torch.float64)
    _call(fused_cpu, "adam", tensors)
    assert [s.item() for s in tensors[3]] == tensors[4]
