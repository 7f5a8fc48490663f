"""The torch kernels against the NumPy reference, and the kernels against each other."""

from __future__ import annotations

import pytest
import torch

from harness import (
    assert_params_close,
    assert_state_equal,
    grad_plan,
    reference_close,
    run_optimizer,
    run_reference,
)
from specs import ALL_CONFIGS, ALL_IDS, make_params

N_STEPS = 25


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_forloop_matches_reference_float64(spec, config, seed):
    gen = torch.Generator().manual_seed(100 + seed)
    params0 = make_params(torch.float64, gen)
    plan = grad_plan(params0, N_STEPS, seed)
    params, opt = run_optimizer(spec.ours, params0, config, plan, foreach=False)
    ref_params, ref_states = run_reference(spec, params0, config, plan)

    for i, (p, rp) in enumerate(zip(params, ref_params, strict=True)):
        reference_close(p, rp, rtol=1e-12, atol=1e-12, what=f"param {i}")
        state = opt.state[p]
        for key, field in spec.state_fields.items():
            if key in state:
                expected = getattr(ref_states[i], field)
                reference_close(state[key], expected, rtol=1e-12, atol=1e-12, what=key)
        if "step" in state:
            assert state["step"].item() == ref_states[i].step


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_foreach_matches_forloop(spec, config, dtype):
    gen = torch.Generator().manual_seed(7)
    params0 = make_params(dtype, gen)
    plan = grad_plan(params0, N_STEPS, seed=3)
    p_loop, o_loop = run_optimizer(spec.ours, params0, config, plan, foreach=False)
    p_each, o_each = run_optimizer(spec.ours, params0, config, plan, foreach=True)
    # Same operations in the same order; only complex weight decay rounds differently
    # (complex add-with-alpha vs real add on the real view), by an ulp.
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    assert_params_close(p_each, p_loop, **tol)
    assert_state_equal(o_each, o_loop, **tol)


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
def test_non_contiguous_params(spec, config):
    gen = torch.Generator().manual_seed(11)
    base = torch.randn(9, 14, generator=gen, dtype=torch.float64)
    params0 = [base.t(), base[:, ::3]]  # transposed and strided views
    assert not any(p.is_contiguous() for p in params0)
    plan = grad_plan([p.contiguous() for p in params0], 8, seed=5)
    ref_params, _ = run_reference(spec, [p.contiguous() for p in params0], config, plan)
    for foreach in (False, True):
        params, _ = run_optimizer(spec.ours, params0, config, plan, foreach=foreach)
        for p, rp in zip(params, ref_params, strict=True):
            reference_close(p, rp, rtol=1e-12, atol=1e-12, what=f"foreach={foreach}")
