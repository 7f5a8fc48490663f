"""``advance_steps=True``: a kernel adds the step's +1 to every counter itself, exactly as
counting first and then calling it would (the fused CPU kernel does it inside its loop)."""

from __future__ import annotations

import pytest
import torch

from adamkit.algorithms import SPEC_BUILT, SPECS
from adamkit.kernels import foreach, forloop, fused_cpu, registry, spec_kernels, triton_kernels

KERNELS = {"forloop": forloop, "foreach": foreach, "fused_cpu": fused_cpu}
if registry.triton_available():
    from adamkit.kernels import triton_driver

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
    module.adam(params, grads, a, b, [], steps, **HYPER["adam"], **kw)


@pytest.mark.parametrize("step_dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("algorithm", ["adam"])
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


SPEC_BACKENDS = ["forloop", "foreach", "fused"] + (
    ["triton"] if registry.triton_available() else []
)


@pytest.mark.parametrize("step_dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(SPEC_BUILT))
@pytest.mark.parametrize("backend", SPEC_BACKENDS)
def test_spec_kernels_count_every_counter_once_in_place(backend, name, step_dtype):
    # Every path (loop, threads, empty, non-contiguous) adds exactly one, in the counter's
    # own dtype, from any count (a large one included), as torch's functional update does.
    spec = SPECS[name]
    params, grads, (a, b), steps, counts = _tensors(step_dtype)
    states = [a, b, []][: len(spec.tensor_state)]
    aux = [torch.tensor(1.0) for _ in params] if spec.scalar_state else []
    group = {**spec.defaults(), "maximize": False, "differentiable": False}
    if name == "rmsprop":
        group["centered"] = True  # its second slot, grad_avg, in use
    if backend == "triton":
        kernel = triton_driver.kernel(spec)
    else:
        kernel = spec_kernels.kernel(name, backend, "cpu")
    kernel(params, grads, *states, steps, aux, group=group)
    assert [s.item() for s in steps] == [c + 1 for c in counts]
    assert all(s.dtype == step_dtype for s in steps)
