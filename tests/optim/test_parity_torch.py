"""adamkit's optimizers against their torch.optim namesakes: parameters and every state tensor."""

from __future__ import annotations

import inspect

import pytest
import torch

import adamkit
from harness import (
    assert_all_close_to_scale,
    assert_params_close,
    assert_state_equal,
    grad_plan,
    run_optimizer,
)
from specs import ALL_CONFIGS, ALL_IDS, make_params

N_STEPS = 40


def _skip_without_fused_flag(spec, cls=None):
    cls = cls or spec.ours
    if "fused" not in inspect.signature(cls).parameters:
        pytest.skip(f"{cls.__module__}.{spec.name} has no fused argument")


def _torch_accepts(config, foreach):
    # torch.optim refuses a tensor lr on its non-capturable foreach path; adamkit accepts it.
    return not (foreach and isinstance(config.get("lr"), torch.Tensor))


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("foreach", [False, True], ids=["forloop", "foreach"])
def test_matches_torch_bitwise_on_same_backend(spec, config, dtype, foreach):
    if not _torch_accepts(config, foreach):
        pytest.skip("torch.optim has no foreach path for a tensor lr without capturable")
    gen = torch.Generator().manual_seed(21)
    params0 = make_params(dtype, gen)
    plan = grad_plan(params0, N_STEPS, seed=8)
    ours, o_ours = run_optimizer(spec.ours, params0, config, plan, foreach=foreach)
    theirs, o_theirs = run_optimizer(spec.theirs, params0, config, plan, foreach=foreach)
    # The kernels mirror torch's operation order, so the results are identical.
    assert_params_close(ours, theirs, rtol=0, atol=0)
    tolerance = 0 if spec.state_bitwise else 4 * torch.finfo(dtype).eps
    # (an ulp of the terms, which reach the gradients' 1e2, where a sum cancels)
    assert_state_equal(o_ours, o_theirs, rtol=tolerance, atol=100 * tolerance)
    assert o_ours.state_dict()["param_groups"] == o_theirs.state_dict()["param_groups"]


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
def test_default_backend_matches_torch_default(spec, config):
    gen = torch.Generator().manual_seed(5)
    params0 = make_params(torch.float32, gen)
    plan = grad_plan(params0, N_STEPS, seed=9)
    ours, o_ours = run_optimizer(spec.ours, params0, config, plan)
    theirs, o_theirs = run_optimizer(spec.theirs, params0, config, plan)
    # adamkit's default (fused) kernel rounds once per stored value, torch's for-loop once per op.
    assert_all_close_to_scale(ours, theirs, o_ours, o_theirs, rtol=1e-5)


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
def test_fused_flag_accepted_on_cpu(spec, config):
    _skip_without_fused_flag(spec)
    gen = torch.Generator().manual_seed(6)
    params0 = make_params(torch.float64, gen)
    plan = grad_plan(params0, 10, seed=2)
    ours, o_ours = run_optimizer(spec.ours, params0, config, plan, fused=True)
    loop, o_loop = run_optimizer(spec.ours, params0, config, plan, foreach=False)
    assert_params_close(ours, loop, rtol=1e-12, atol=1e-12)
    assert_state_equal(o_ours, o_loop, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
def test_fused_false_is_torchs_for_loop(spec, config):
    # An explicit fused=False skips the default choice in torch.optim (the for-loop runs), so
    # it must not select adamkit's fused default either: results equal torch's bit for bit.
    _skip_without_fused_flag(spec, spec.theirs)
    gen = torch.Generator().manual_seed(7)
    params0 = make_params(torch.float32, gen)
    plan = grad_plan(params0, 10, seed=3)
    ours, o_ours = run_optimizer(spec.ours, params0, config, plan, fused=False)
    theirs, o_theirs = run_optimizer(spec.theirs, params0, config, plan, fused=False)
    assert_params_close(ours, theirs, rtol=0, atol=0)
    tolerance = 0 if spec.state_bitwise else 4 * torch.finfo(torch.float32).eps
    # (an ulp of the terms, which reach the gradients' 1e2, where a sum cancels)
    assert_state_equal(o_ours, o_theirs, rtol=tolerance, atol=100 * tolerance)


def test_foreach_radam_with_zero_eps_is_torchs():
    # torch's foreach RAdam gives NaN on an unrectified step with ε = 0 and a zero gradient
    # (0/0 times 0), its for-loop 0; adamkit's kernels follow the torch kernel they mirror.
    results = {}
    for cls in (torch.optim.RAdam, adamkit.RAdam):
        for foreach in (False, True):
            w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
            opt = cls([w], lr=1.0, betas=(0.0, 0.0), eps=0.0, foreach=foreach)
            w.grad = torch.zeros(3, dtype=torch.float64)
            opt.step()
            results[cls, foreach] = w.detach()
    assert results[torch.optim.RAdam, True].isnan().all()
    assert torch.equal(results[torch.optim.RAdam, False], torch.zeros(3, dtype=torch.float64))
    for foreach in (False, True):
        torch.testing.assert_close(
            results[adamkit.RAdam, foreach], results[torch.optim.RAdam, foreach], equal_nan=True,
            rtol=0, atol=0,
        )  # fmt: skip
