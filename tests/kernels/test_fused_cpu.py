"""The fused CPU (numba) kernels against the reference and the for-loop kernel."""

from __future__ import annotations

import pytest
import torch

from harness import (
    assert_all_close_to_scale,
    grad_plan,
    reference_close,
    run_optimizer,
    run_reference,
)
from specs import ALL_CONFIGS, ALL_IDS, SPECS, make_params


def _params_with_a_large_one(dtype):
    gen = torch.Generator().manual_seed(17)
    params = make_params(dtype, gen)
    params.append(torch.randn(70_003, generator=gen).to(dtype))  # odd, and past any tail loop
    return params


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
def test_fused_matches_reference_float64(spec, config):
    params0 = _params_with_a_large_one(torch.float64)
    plan = grad_plan(params0, 15, seed=12)
    params, opt = run_optimizer(spec.ours, params0, config, plan, **_fused_flag(spec))
    ref_params, ref_states = run_reference(spec, params0, config, plan)
    for i, (p, rp) in enumerate(zip(params, ref_params, strict=True)):
        reference_close(p, rp, rtol=1e-12, atol=1e-12, what=f"param {i}")
        for key, field in spec.state_fields.items():
            if key in opt.state[p]:
                expected = getattr(ref_states[i], field)
                reference_close(opt.state[p][key], expected, rtol=1e-12, atol=1e-12, what=key)


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
def test_fused_matches_forloop_float32(spec, config):
    params0 = _params_with_a_large_one(torch.float32)
    plan = grad_plan(params0, 15, seed=13)
    fused, o_fused = run_optimizer(spec.ours, params0, config, plan, **_fused_flag(spec))
    loop, o_loop = run_optimizer(spec.ours, params0, config, plan, foreach=False)
    assert_all_close_to_scale(fused, loop, o_fused, o_loop, rtol=1e-5)


def _strided_leaf(values: torch.Tensor) -> torch.Tensor:
    """A leaf tensor with the values of ``values`` laid out with gaps (not contiguous)."""
    rows, cols = values.shape
    leaf = torch.empty_strided((rows, cols), (cols * 2 + 1, 2), dtype=values.dtype)
    leaf.copy_(values)
    return leaf.requires_grad_()


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
def test_fused_handles_non_contiguous_tensors(spec, config):
    base = torch.randn(33, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    dense = [base.t().contiguous(), base[::2, 1::3].contiguous()]
    plan = grad_plan(dense, 6, seed=4)
    ref_params, _ = run_reference(spec, dense, config, plan)

    params = [base.t().clone().requires_grad_(), _strided_leaf(dense[1])]
    assert not any(p.is_contiguous() for p in params)
    opt = spec.ours(params, **config, **_fused_flag(spec))
    for grads in plan:
        for p, g in zip(params, grads, strict=True):
            p.grad = None if g is None else g.t().contiguous().t()  # non-contiguous grads too
        opt.step()
    for p, rp in zip(params, ref_params, strict=True):
        reference_close(p.contiguous(), rp, rtol=1e-12, atol=1e-12, what="non-contiguous")


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_nan_and_inf_propagate_like_forloop(spec):
    params0 = [torch.randn(70000, dtype=torch.float32), torch.randn(10, dtype=torch.float32)]
    plan = grad_plan(params0, 3, seed=1)
    plan[1][0][5] = float("nan")
    plan[1][0][6] = float("inf")
    plan[1][1][0] = float("-inf")
    config = {"momentum": 0.9} if spec.name in ("SGD", "RMSprop") else {"amsgrad": True}
    if spec.name == "AdamW":
        config = {"amsgrad": True}
    fused, _ = run_optimizer(spec.ours, params0, config, plan, **_fused_flag(spec))
    loop, _ = run_optimizer(spec.ours, params0, config, plan, foreach=False)
    for a, b in zip(fused, loop, strict=True):
        assert torch.equal(a.isnan(), b.isnan())
        assert torch.equal(a.isinf(), b.isinf())
        assert a.isnan().any() or a.isinf().any()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_params_stay_finite_with_zero_gradients(dtype):
    # In float16, ε = 1e-8 underflows to 0, so the for-loop kernel computes 0/0 = NaN.
    w_loop = torch.nn.Parameter(torch.ones(8, dtype=dtype))
    w_fused = torch.nn.Parameter(torch.ones(8, dtype=dtype))
    opt_loop = torch.optim.Adam([w_loop], foreach=False)
    opt_fused = fused_opt = __import__("adamkit").Adam([w_fused], fused=True)
    for _ in range(3):
        w_loop.grad = torch.zeros(8, dtype=dtype)
        w_fused.grad = torch.zeros(8, dtype=dtype)
        opt_loop.step()
        opt_fused.step()
    if dtype == torch.float16:
        assert w_loop.isnan().all()  # the problem the fused path avoids
    assert torch.equal(w_fused.detach(), torch.ones(8, dtype=dtype))
    assert fused_opt.state[w_fused]["exp_avg"].dtype == dtype  # state keeps torch's dtype


def test_half_precision_matches_float32_arithmetic():
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(100, generator=gen).half()
    grads = [torch.randn(100, generator=gen).half() for _ in range(5)]
    w = torch.nn.Parameter(w0.clone())
    opt = __import__("adamkit").Adam([w], lr=1e-2, fused=True)
    w32 = torch.nn.Parameter(w0.float())
    opt32 = torch.optim.Adam([w32], lr=1e-2)
    for g in grads:
        w.grad, w32.grad = g.clone(), g.float()
        opt.step()
        opt32.step()
    torch.testing.assert_close(w.detach().float(), w32.detach(), rtol=2e-3, atol=2e-3)


def _fused_flag(spec):
    # RMSprop has no `fused` argument in torch.optim; its default backend is the fused one.
    return {} if spec.name == "RMSprop" else {"fused": True}
