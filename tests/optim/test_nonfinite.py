"""on_nonfinite: NaN/Inf gradients propagate (torch's behaviour), skip the step, or raise."""

from __future__ import annotations

import copy

import pytest
import torch

import adamkit
from harness import grad_plan, run_optimizer
from specs import SPECS, make_params

# Kernel choice by flags: the default on CPU is the fused kernel.
KERNELS = {"forloop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {}}


def _snapshot(params, opt):
    return [p.detach().clone() for p in params], copy.deepcopy(opt.state_dict())


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes (NaN payloads and signed zeros included)."""
    real = torch.view_as_real(t) if t.is_complex() else t
    return real.contiguous().reshape(-1).view(torch.uint8)


def _assert_bitwise_unchanged(before, params, opt):
    params_before, state_before = before
    for a, b in zip(params_before, params, strict=True):
        assert a.dtype == b.dtype and torch.equal(_bits(a), _bits(b.detach()))
    after = opt.state_dict()
    assert after["param_groups"] == state_before["param_groups"]
    assert after["state"].keys() == state_before["state"].keys()
    for idx, entry in state_before["state"].items():
        assert entry.keys() == after["state"][idx].keys()
        for key, value in entry.items():
            got = after["state"][idx][key]
            assert got.dtype == value.dtype and torch.equal(_bits(got), _bits(value)), (idx, key)


def _poison(grad: torch.Tensor, value: float) -> torch.Tensor:
    g = grad.clone()
    (torch.view_as_real(g) if g.is_complex() else g).view(-1)[-1] = value
    return g


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("bad_index", [0, 6], ids=["real", "complex"])
def test_skip_leaves_everything_bitwise_unchanged(spec, kernel, bad, bad_index):
    gen = torch.Generator().manual_seed(1)
    params0 = make_params(torch.float32, gen)
    plan = grad_plan(params0, 4, seed=2)
    config = {"SGD": {"momentum": 0.9}, "RMSprop": {"momentum": 0.9}}.get(spec.name)
    if config is None:  # Adam's amsgrad; the spec family's weight decay
        config = {"amsgrad": True} if spec.name in ("Adam", "AdamW") else spec.configs[1]
    params, opt = run_optimizer(
        spec.ours, params0, config, plan[:3], on_nonfinite="skip", **KERNELS[kernel]
    )
    before = _snapshot(params, opt)
    for p, g in zip(params, plan[3], strict=True):
        p.grad = None if g is None else g.clone()
    params[bad_index].grad = _poison(params[bad_index].grad, bad)
    opt.step()
    _assert_bitwise_unchanged(before, params, opt)
    assert opt.skipped_steps == 1
    # The next finite step is taken as usual.
    params[bad_index].grad = plan[3][bad_index].clone()
    opt.step()
    assert opt.skipped_steps == 1
    assert not torch.equal(params[0].detach(), before[0][0])


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
@pytest.mark.parametrize("kernel", KERNELS)
def test_raise_names_the_parameter_and_changes_nothing(spec, kernel):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = spec.ours(
        model.named_parameters(), on_nonfinite="raise", **spec.configs[0], **KERNELS[kernel]
    )
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    params = list(model.parameters())
    before = _snapshot(params, opt)
    model(torch.randn(5, 3)).sum().backward()
    model[1].weight.grad[0, 1] = float("nan")
    with pytest.raises(adamkit.NonFiniteGradientError) as info:
        opt.step()
    message = str(info.value)
    assert "'1.weight'" in message and "group 0, index 2" in message and "(2, 4)" in message
    assert "on_nonfinite='skip'" in message  # says what is accepted instead
    _assert_bitwise_unchanged(before, params, opt)


def test_raise_without_names_gives_group_and_index():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(3, requires_grad=True)
    opt = adamkit.Adam([{"params": [a]}, {"params": [b], "lr": 0.1}], on_nonfinite="raise")
    a.grad, b.grad = torch.ones(2), torch.tensor([1.0, float("inf"), 0.0])
    with pytest.raises(FloatingPointError, match=r"parameter \(group 1, index 0, shape \(3,\)"):
        opt.step()
    assert len(opt.state) == 0


def test_propagate_is_the_default_and_matches_torch():
    results = []
    for cls in (adamkit.Adam, torch.optim.Adam):
        w = torch.ones(3, requires_grad=True)
        opt = cls([w], foreach=False)
        w.grad = torch.tensor([1.0, float("nan"), float("inf")])
        opt.step()
        results.append(w.detach())
    assert torch.equal(results[0].isnan(), results[1].isnan())
    assert results[0].isnan().any()


def test_sparse_gradient_values_are_checked():
    emb = torch.nn.Embedding(6, 2, sparse=True)
    opt = adamkit.Adam(emb.parameters(), on_nonfinite="skip")
    before = emb.weight.detach().clone()
    emb(torch.tensor([1, 3])).sum().backward()
    emb.weight.grad._values()[0, 0] = float("nan")
    opt.step()
    assert torch.equal(emb.weight.detach(), before) and opt.skipped_steps == 1


def test_finite_extremes_are_not_mistaken_for_nonfinite():
    w = torch.zeros(3, requires_grad=True)
    opt = adamkit.Adam([w], on_nonfinite="raise")
    w.grad = torch.tensor([3e38, -3e38, 1e-45])  # squares overflow; the check must not
    opt.step()
    assert opt.skipped_steps == 0


def test_invalid_mode_lists_the_choices():
    with pytest.raises(ValueError, match="'propagate', 'skip', 'raise'"):
        adamkit.SGD([torch.zeros(1, requires_grad=True)], on_nonfinite="ignore")


def test_mode_and_counter_survive_deepcopy():
    w = torch.zeros(1, requires_grad=True)
    opt = adamkit.Adam([w], on_nonfinite="skip")
    w.grad = torch.tensor([float("nan")])
    opt.step()
    clone = copy.deepcopy(opt)
    assert clone.on_nonfinite == "skip" and clone.skipped_steps == 1


@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_grad_scaler_skips_inf_steps_before_the_optimizer_sees_them(mode):
    w = torch.ones(4, requires_grad=True)
    opt = adamkit.Adam([w], lr=0.1, on_nonfinite=mode)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaler.scale((w * torch.tensor([1.0, 1.0, 1.0, float("inf")])).sum()).backward()
    scaler.step(opt)
    scaler.update()
    assert torch.equal(w.detach(), torch.ones(4)) and scaler.get_scale() == 2.0**15
    opt.zero_grad()
    scaler.scale(w.sum()).backward()
    scaler.step(opt)
    scaler.update()
    torch.testing.assert_close(w.detach(), torch.full((4,), 0.9))
    assert opt.skipped_steps == 0
