"""Checkpoints move both ways between adamkit and torch.optim, through weights_only loading."""

from __future__ import annotations

import io

import pytest
import torch

from harness import assert_params_close, grad_plan
from specs import ALL_CONFIGS, ALL_IDS, make_params


def _steps(opt, params, plan):
    for grads in plan:
        for p, g in zip(params, grads, strict=True):
            p.grad = None if g is None else g.clone()
        opt.step()


def _roundtrip(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
@pytest.mark.parametrize("direction", ["torch->adamkit", "adamkit->torch"])
def test_checkpoint_resumes_identically_across_libraries(spec, config, direction):
    gen = torch.Generator().manual_seed(3)
    params0 = make_params(torch.float64, gen)
    plan = grad_plan(params0, 12, seed=4)
    first, second = (
        (spec.theirs, spec.ours)
        if direction == "torch->adamkit"
        else (
            spec.ours,
            spec.theirs,
        )
    )

    # Uninterrupted run with the second library (or, where torch does not resume exactly,
    # torch resumed from its own checkpoint).
    if second is spec.theirs and not spec.torch_resumes_exactly:
        expected = _resumed(spec.theirs, spec.theirs, params0, config, plan)
    else:
        expected = [p.clone().requires_grad_() for p in params0]
        _steps(second(expected, **config, foreach=False), expected, plan)

    # Six steps with the first library, checkpoint, six more with the second.
    params = _resumed(first, second, params0, config, plan)
    assert_params_close(params, expected, rtol=0, atol=0)


def _resumed(first, second, params0, config, plan):
    """Six steps with ``first``, a checkpoint, the rest with ``second``."""
    params = [p.clone().requires_grad_() for p in params0]
    opt1 = first(params, **config, foreach=False)
    _steps(opt1, params, plan[:6])
    saved = _roundtrip(opt1.state_dict())
    opt2 = second(params, **config, foreach=False)
    opt2.load_state_dict(saved)
    _steps(opt2, params, plan[6:])
    return params


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
def test_state_dict_format_matches_torch(spec, config):
    gen = torch.Generator().manual_seed(3)
    params0 = make_params(torch.float32, gen)
    plan = grad_plan(params0, 3, seed=4)
    dicts = []
    for cls in (spec.ours, spec.theirs):
        params = [p.clone().requires_grad_() for p in params0]
        opt = cls(params, **config)
        _steps(opt, params, plan)
        dicts.append(opt.state_dict())
    ours, theirs = dicts
    assert ours["param_groups"] == theirs["param_groups"]
    assert ours["state"].keys() == theirs["state"].keys()  # e.g. none for SGD without momentum
    for i in ours["state"]:
        assert ours["state"][i].keys() == theirs["state"][i].keys()
        for key, value in theirs["state"][i].items():
            # The one deliberate difference: adamkit counts steps in float64 (exact past 2^24).
            expected_dtype = torch.float64 if key == "step" else value.dtype
            assert ours["state"][i][key].dtype == expected_dtype
            assert ours["state"][i][key].device == value.device
