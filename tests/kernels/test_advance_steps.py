"""Every kernel adds the step's +1 to every counter itself (the fused CPU kernel inside its
loop), on every path through it, in the counter's own dtype."""

from __future__ import annotations

import pytest
import torch

from adamkit.algorithms import SPEC_BUILT, SPECS, sgd
from adamkit.kernels import _threads, registry, spec_kernels

if registry.triton_available():  # on CPU tensors under TRITON_INTERPRET=1 (conftest)
    from adamkit.kernels import triton_driver

LARGE = {torch.float64: 2.0**40, torch.float32: 2.0**20}


def _tensors(step_dtype: torch.dtype):
    """Params of every path through the fused kernel: loop (a long one, split across
    threads), empty (no loop) and non-contiguous (the for-loop kernel); counters from 0 to
    a large count."""
    gen = torch.Generator().manual_seed(5)
    params = [
        torch.randn(_threads.SPLIT_MIN_ELEMENTS + 9, generator=gen),
        torch.randn(0),
        torch.randn(6, 4, generator=gen).t(),
        torch.randn(33, generator=gen),
    ]
    grads = [torch.randn(p.shape, generator=gen) for p in params]
    state = [[torch.rand(p.shape, generator=gen) for p in params] for _ in range(2)]
    counts = [0.0, 5.0, 7.0, LARGE[step_dtype]]
    steps = [torch.tensor(c, dtype=step_dtype) for c in counts]
    return params, grads, state, steps, counts


SPEC_BACKENDS = ["forloop", "foreach", "fused"] + (
    ["triton"] if registry.triton_available() else []
)


@pytest.mark.parametrize("step_dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("name", sorted(n for n in SPEC_BUILT if SPECS[n].counted))
@pytest.mark.parametrize("backend", SPEC_BACKENDS)
def test_spec_kernels_count_every_counter_once_in_place(backend, name, step_dtype):
    # Every path (loop, threads, empty, non-contiguous) adds exactly one, in the counter's
    # own dtype, from any count (a large one included), as torch's functional update does.
    spec = SPECS[name]
    params, grads, (a, b), steps, counts = _tensors(step_dtype)
    states = [a, b, []][: len(spec.tensor_state)]
    aux = [torch.tensor(1.0) for _ in params] if spec.scalar_state else []
    group = {"lr": 1e-3, **spec.defaults(), "maximize": False, "differentiable": False}
    if name == "rmsprop":
        group["centered"] = True  # its second slot, grad_avg, in use
    if backend == "triton":
        kernel = triton_driver.kernel(spec)
    else:
        kernel = spec_kernels.kernel(name, backend, "cpu")
    kernel(params, grads, *states, steps, aux, group=group)
    assert [s.item() for s in steps] == [c + 1 for c in counts]
    assert all(s.dtype == step_dtype for s in steps)


@pytest.mark.parametrize("backend", SPEC_BACKENDS)
def test_sgds_markers_are_read_and_never_advanced(backend):
    # SGD counts no steps: its kernels read FIRST/LATER (the buffer starts as g, or goes on)
    # and leave the shared markers as they are.
    spec = SPECS["sgd"]
    params, grads, (bufs, _), _, _ = _tensors(torch.float64)
    expected = [g.clone() for g in grads]  # first step: b = g (no dampening)
    markers = [sgd.FIRST] * len(params)
    group = {**spec.defaults(), "momentum": 0.9, "dampening": 0.5, "maximize": False,
             "differentiable": False}  # fmt: skip
    if backend == "triton":
        kernel = triton_driver.kernel(spec)
    else:
        kernel = spec_kernels.kernel("sgd", backend, "cpu")
    kernel(params, grads, bufs, markers, [], group=group)
    assert sgd.FIRST.item() == 1.0 and sgd.LATER.item() == 0.0
    for buf, want in zip(bufs, expected, strict=True):
        assert torch.equal(buf, want)
