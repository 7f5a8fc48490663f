"""ADOPT beyond the shared table: the authors' class itself, the clip_lambda forms (the
default in the kernels, another callable on the host per distinct step, None), and its
checkpoints without the callable."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import adamkit
from adamkit.reference import adopt as ref


def _grads(shapes, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen) * 3 for s in shapes] for _ in range(steps)]


def _run(make, params0, plan):
    params = [torch.nn.Parameter(p.clone()) for p in params0]
    opt = make(params)
    for step in plan:
        for p, g in zip(params, step, strict=True):
            p.grad = None if g is None else g.clone()
        opt.step()
    return params, opt


@pytest.mark.parametrize(("weight_decay", "decouple"), [(0.0, False), (0.1, False), (0.1, True)])
def test_default_kernel_trains_as_the_authors(weight_decay, decouple):
    authors = pytest.importorskip("adopt")
    gen = torch.Generator().manual_seed(1)
    params0 = [torch.randn(n, generator=gen) for n in (1031, 7, 300)]
    plan = _grads([p.shape for p in params0], 8, seed=2)
    kw = {"lr": 0.01, "weight_decay": weight_decay, "decouple": decouple}
    ours, _ = _run(lambda ps: adamkit.ADOPT(ps, **kw), params0, plan)
    theirs, _ = _run(lambda ps: authors.ADOPT(ps, foreach=False, **kw), params0, plan)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", [{"fused": True}, {"foreach": False}])
def test_a_host_clip_follows_each_tensors_own_step(backend):
    """A param that misses gradients is behind the others: with a callable clip_lambda each
    tensor is clipped at its own step's value, as the reference does per array."""
    clip = lambda s: 0.5 + 0.1 * s  # noqa: E731
    gen = torch.Generator().manual_seed(3)
    params0 = [torch.randn(n, generator=gen, dtype=torch.float64) for n in (300, 40)]
    plan = [
        [torch.randn(p.shape, generator=gen, dtype=torch.float64) * 5 for p in params0]
        for _ in range(7)
    ]
    for t in (1, 2, 4):
        plan[t][1] = None
    ours, _ = _run(
        lambda ps: adamkit.ADOPT(ps, lr=0.01, clip_lambda=clip, **backend), params0, plan
    )
    hyper = ref.ADOPTHyper(lr=0.01, clip_lambda=clip)
    for i, p0 in enumerate(params0):
        phi, state = p0.numpy().copy(), ref.init(p0.numpy())
        for step in plan:
            if step[i] is not None:
                phi, state, _ = ref.step(phi, step[i].numpy(), state, hyper)
        np.testing.assert_allclose(ours[i].detach().numpy(), phi, rtol=1e-12, atol=1e-12)


def test_no_clip_and_the_default_differ_where_the_clip_binds():
    gen = torch.Generator().manual_seed(4)
    params0 = [torch.randn(64, generator=gen, dtype=torch.float64)]
    plan = [[torch.randn(64, generator=gen, dtype=torch.float64) * 10 ** (t % 3)] for t in range(5)]
    clipped, _ = _run(lambda ps: adamkit.ADOPT(ps, lr=0.1), params0, plan)
    free, _ = _run(lambda ps: adamkit.ADOPT(ps, lr=0.1, clip_lambda=None), params0, plan)
    assert (clipped[0] - free[0]).abs().max() > 1e-3
    hyper = ref.ADOPTHyper(lr=0.1, clip_lambda=None)
    phi, state = params0[0].numpy().copy(), ref.init(params0[0].numpy())
    for (g,) in plan:
        phi, state, _ = ref.step(phi, g.numpy(), state, hyper)
    np.testing.assert_allclose(free[0].detach().numpy(), phi, rtol=1e-12, atol=1e-12)


def test_checkpoints_are_plain_data_and_resume_bitwise():
    gen = torch.Generator().manual_seed(5)
    params0 = [torch.randn(200, generator=gen)]
    plan = _grads([(200,)], 6, seed=6)
    full, _ = _run(lambda ps: adamkit.ADOPT(ps, lr=0.01), params0, plan)
    half, opt = _run(lambda ps: adamkit.ADOPT(ps, lr=0.01), params0, plan[:3])
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert "clip_lambda" not in saved["param_groups"][0]
    resumed = adamkit.ADOPT(half, lr=0.01)
    resumed.load_state_dict(saved)
    for (g,) in plan[3:]:
        half[0].grad = g.clone()
        resumed.step()
    assert torch.equal(half[0], full[0])


def test_clip_lambda_must_be_callable_or_none():
    with pytest.raises(ValueError, match="clip_lambda"):
        adamkit.ADOPT([torch.nn.Parameter(torch.zeros(2))], clip_lambda=0.25)


def test_a_host_clip_is_not_asked_for_a_first_call_nor_a_param_without_gradient():
    """The authors call clip_lambda only for an update (s >= 1): a lambda undefined at 0
    works, and a frozen param (no gradient, step 0) does not make it raise."""
    clip = lambda s: 1 + 1 / s  # noqa: E731
    a, frozen = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3))
    opt = adamkit.ADOPT([a, frozen], lr=0.1, clip_lambda=clip)
    for _ in range(3):
        a.grad = torch.randn(5)
        opt.step()
    assert opt.state[a]["step"] == 3 and not opt.state[frozen]


@pytest.mark.parametrize("clip_lambda", [adamkit.algorithms.adopt.default_clip_lambda, "lambda"])
def test_a_param_listed_twice_is_stepped_twice_with_its_own_clips(clip_lambda):
    if clip_lambda == "lambda":
        clip_lambda = lambda s: s**0.25  # noqa: E731  (the default's value, on the host)
    gen = torch.Generator().manual_seed(7)
    w0 = torch.randn(50, generator=gen, dtype=torch.float64)
    grads = [torch.randn(50, generator=gen, dtype=torch.float64) * 5 for _ in range(4)]
    w = torch.nn.Parameter(w0.clone())
    opt = adamkit.ADOPT([w, w], lr=0.01, clip_lambda=clip_lambda)
    for g in grads:
        w.grad = g.clone()
        opt.step()
    phi, state = w0.numpy().copy(), ref.init(w0.numpy())
    hyper = ref.ADOPTHyper(lr=0.01)
    for g in grads:
        for _ in range(2):  # the same gradient, twice
            phi, state, _ = ref.step(phi, g.numpy(), state, hyper)
    np.testing.assert_allclose(w.detach().numpy(), phi, rtol=1e-12, atol=1e-12)


def test_an_error_in_a_later_set_changes_nothing():
    """With a host clip the tensors step in sets of equal clip; one that fails after another
    set has stepped leaves every param and state as it was."""
    clip = lambda s: 0.5 + s  # noqa: E731
    a, b = torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(3))
    opt = adamkit.ADOPT([a, b], lr=0.1, clip_lambda=clip)
    for t in range(3):
        a.grad = torch.randn(4)
        b.grad = torch.randn(3) if t == 0 else None  # b falls behind: another clip
        opt.step()
    before = (a.detach().clone(), {k: v.clone() for k, v in opt.state[a].items()})
    a.grad, b.grad = torch.randn(4), torch.randn(3).to_sparse()  # refused, after a's set
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert torch.equal(a, before[0])
    for key, value in before[1].items():
        assert torch.equal(opt.state[a][key], value), key


def test_compiled_step_trains_as_the_eager_step():
    gen = torch.Generator().manual_seed(8)
    params0 = [torch.randn(40, generator=gen)]
    plan = _grads([(40,)], 4, seed=9)
    eager, _ = _run(lambda ps: adamkit.ADOPT(ps, lr=0.01), params0, plan)
    torch._dynamo.reset()
    params = [torch.nn.Parameter(p.clone()) for p in params0]
    opt = adamkit.ADOPT(params, lr=0.01)
    step = torch.compile(opt.step, backend="eager")
    for (g,) in plan:
        params[0].grad = g.clone()
        step()
    torch.testing.assert_close(params[0], eager[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("value", [None, float("nan"), -1.0])
def test_a_bad_clip_value_is_refused_by_name(value):
    w = torch.nn.Parameter(torch.randn(3))
    opt = adamkit.ADOPT([w], clip_lambda=lambda s: value)
    w.grad = torch.randn(3)
    opt.step()  # the first call asks for no clip
    w.grad = torch.randn(3)
    with pytest.raises(ValueError, match="clip_lambda"):
        opt.step()


def test_a_group_cannot_hold_the_host_clip():
    w = torch.nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match="host_clip"):
        adamkit.ADOPT([{"params": [w], "host_clip": 1.0}])


def test_a_custom_clip_lambda_keeps_no_conform_record_of_its_throwaway_groups():
    # Each step with another clip_lambda steps sets of tensors through dicts that die with
    # the step; the conform cache, keyed by their ids, grew by two a step and could take a
    # new dict at a reused id for one already conformed (found by a review).
    params = [torch.nn.Parameter(torch.randn(64)) for _ in range(3)]
    opt = adamkit.ADOPT([{"params": params[:2]}, {"params": params[2:]}],
                        state_precision="bf16", clip_lambda=lambda s: s**0.25)  # fmt: skip
    for _ in range(30):
        for p in params:
            p.grad = torch.randn(64)
        opt.step()
    assert len(opt.__dict__["_conformed"]) <= len(opt.param_groups)
