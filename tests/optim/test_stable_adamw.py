"""StableAdamW's per-tensor RMS (the spec's reduction, a pass before the update in every
driver) beyond the shared table: the clip really acts, the threads' partial sums give the
serial result, and the default kernel trains as torch-optimi's ``StableAdamW``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import adamkit
from adamkit.kernels import _threads
from adamkit.reference import stable_adamw as ref


def _run(make, params0, grads):
    params = [torch.nn.Parameter(p.clone()) for p in params0]
    opt = make(params)
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone()
        opt.step()
    return params


def test_the_clip_acts_and_matches_the_reference():
    """A gradient far larger than its running v gives rms > 1: the step is the reference's
    clipped one, and differs from the unclipped AdamW-like step."""
    gen = torch.Generator().manual_seed(1)
    w0 = torch.randn(777, generator=gen, dtype=torch.float64)
    grads = [[torch.randn(777, generator=gen, dtype=torch.float64) * s] for s in (1, 1, 50)]
    got = _run(lambda ps: adamkit.StableAdamW(ps, lr=0.01, fused=True), [w0], grads)[0]
    hyper = ref.StableAdamWHyper(lr=0.01)
    phi, state, rms = w0.numpy().copy(), ref.init(w0.numpy()), []
    for (g,) in grads:
        phi, state, aux = ref.step(phi, g.numpy(), state, hyper)
        rms.append(aux.rms)
    assert rms[-1] > 1.5  # the last step was clipped (lr divided by rms)
    np.testing.assert_allclose(got.detach().numpy(), phi, rtol=1e-12, atol=1e-12)


def test_threads_partial_sums_give_the_serial_result(monkeypatch):
    monkeypatch.setattr(_threads.Threads, "SMALL_WORK", 0)  # every launch parallel
    monkeypatch.setattr(_threads.Threads, "contended_until", 0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gen = torch.Generator().manual_seed(2)
        params0 = [torch.randn(n, generator=gen, dtype=torch.float64) for n in (70001, 5, 50000)]
        grads = [
            [torch.randn(p.shape, generator=gen, dtype=torch.float64) * (1 + 20 * (t == 2))
             for p in params0]
            for t in range(4)
        ]  # fmt: skip
        fused = _run(lambda ps: adamkit.StableAdamW(ps, lr=0.01, fused=True), params0, grads)
        loop = _run(lambda ps: adamkit.StableAdamW(ps, lr=0.01, foreach=False), params0, grads)
    finally:
        torch.set_num_threads(threads)
    if not _threads.Threads.usable:
        pytest.skip("numba's threading layer runs one thread here")
    for a, b in zip(fused, loop, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("decouple_lr", [False, True])
def test_default_kernel_trains_as_optimi(decouple_lr):
    optimi = pytest.importorskip("optimi")
    gen = torch.Generator().manual_seed(3)
    params0 = [torch.randn(n, generator=gen) for n in (1031, 7, 300)]
    grads = [
        [torch.randn(p.shape, generator=gen) * (1 + 30 * (t == 3)) for p in params0]
        for t in range(6)
    ]
    kw = {"lr": 0.01, "weight_decay": 0.1, "decouple_lr": decouple_lr}
    ours = _run(lambda ps: adamkit.StableAdamW(ps, **kw), params0, grads)
    theirs = _run(lambda ps: optimi.StableAdamW(ps, foreach=False, **kw), params0, grads)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_lr_is_required_and_max_lr_is_checked():
    w = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(TypeError, match="lr"):
        adamkit.StableAdamW([w])
    with pytest.raises(ValueError, match="max_lr"):
        adamkit.StableAdamW([w], lr=0.1, max_lr=-1.0)
