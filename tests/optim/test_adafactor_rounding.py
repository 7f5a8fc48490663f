"""Adafactor with bfloat16/float16 params rounded "stochastic" or "kahan": the step computed in
float32 on copies of the param, its gradient and its factors, then the param rounded.

The oracle for one step is a float32 param holding the same values (its factors start at zero,
so its first step is the copies' step exactly): the half param must be that value rounded
down or up (stochastic), or rounded to nearest with the rest in ``kahan_comp`` (Kahan)."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import adamkit

HALF = [torch.bfloat16, torch.float16]
SHAPES = [(64, 48), (3, 5, 7), (1000,)]  # factored over the last two dimensions, or a vector


def _params(shape, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    values = torch.randn(shape, generator=gen).to(dtype)
    grads = [torch.randn(shape, generator=gen).to(dtype) for _ in range(40)]
    return values, grads


def _run(values, grads, steps, lr=1e-2, **options):
    # ε1 given: None would resolve to the machine epsilon of the param's dtype (torch's rule,
    # kept with rounding), which differs between the float32 oracle and the half param
    p = torch.nn.Parameter(values.clone())
    opt = adamkit.Adafactor([p], lr=lr, eps=(1e-30, 1e-3), **options)
    for g in grads[:steps]:
        p.grad = g.to(p.dtype)
        opt.step()
    return p, opt


def _neighbours(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The largest ``dtype`` value <= x and the smallest >= x (float32 ``x``)."""
    nearest = x.to(dtype)
    down = torch.nextafter(nearest, torch.full_like(nearest, -torch.inf))
    up = torch.nextafter(nearest, torch.full_like(nearest, torch.inf))
    below = torch.where(nearest.float() > x, down, nearest)
    above = torch.where(nearest.float() < x, up, nearest)
    return below.float(), above.float()


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_stochastic_rounds_the_float32_step_down_or_up_in_proportion(dtype, shape, fused):
    values, grads = _params(shape, dtype)
    exact, _ = _run(values.float(), grads, 1, fused=fused)
    ours, opt = _run(values, grads, 1, param_rounding="stochastic", fused=fused)
    x = exact.detach()
    below, above = _neighbours(x, dtype)
    got = ours.detach().float()
    assert torch.all((got == below) | (got == above))
    moved = (above > below) & ((got == above) != (got == below))
    fraction = ((x - below) / (above - below))[above > below]
    up = (got == above)[above > below].float()
    assert moved.any()
    # unbiased: the mean of the roundings up is the mean fraction (the binomial's 5 sigmas)
    n = fraction.numel()
    assert abs(up.mean() - fraction.mean()) < 5 * (0.25 / n) ** 0.5
    assert "kahan_comp" not in opt.state[ours]
    assert opt.state[ours]["row_var" if len(shape) > 1 else "variance"].dtype == dtype


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_kahan_keeps_what_the_rounding_lost(dtype, shape):
    values, grads = _params(shape, dtype)
    exact, _ = _run(values.float(), grads, 1)
    ours, opt = _run(values, grads, 1, param_rounding="kahan")
    x = exact.detach()
    assert torch.equal(ours.detach(), x.to(dtype))
    comp = opt.state[ours]["kahan_comp"]
    assert comp.dtype == dtype
    assert torch.equal(comp, (x - ours.detach().float()).to(dtype))


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_small_steps_that_nearest_rounding_loses_are_kept(dtype):
    # lr 1e-4: each step moves a param by ~1e-4, below half an ulp of a bfloat16 near 1. The
    # oracle: a float32 param whose factors are rounded to the half dtype after each step,
    # as the half param's factors are stored.
    values, grads = _params((64, 48), dtype)
    exact = torch.nn.Parameter(values.float())
    oracle = adamkit.Adafactor([exact], lr=1e-4, eps=(1e-30, 1e-3))
    for g in grads:
        exact.grad = g.float()
        oracle.step()
        for key in ("row_var", "col_var"):
            oracle.state[exact][key].copy_(oracle.state[exact][key].to(dtype))
    moved = exact.detach() - values.float()

    def captured(param: torch.Tensor) -> float:  # of the oracle's displacement
        return float((param.float() - values.float()).mul(moved).sum() / moved.square().sum())

    held = {}
    for rounding in ("nearest", "stochastic", "kahan"):
        ours, opt = _run(values, grads, len(grads), lr=1e-4, param_rounding=rounding)
        held[rounding] = captured(ours.detach())
    assert held["nearest"] < 0.5  # most steps lost
    assert 0.9 < held["stochastic"] < 1.1  # in expectation all, with noise
    # Kahan's param is the nearest rounding of the value it holds, its rest in kahan_comp
    comp = opt.state[ours]["kahan_comp"].float()
    assert abs(captured(ours.detach() + comp) - 1) < 1e-3


@pytest.mark.parametrize("rounding", ["stochastic", "kahan"])
def test_a_resumed_run_steps_as_an_uninterrupted_one_bitwise(rounding):
    values, grads = _params((40, 30), torch.bfloat16)
    straight, straight_opt = _run(values, grads, 6, param_rounding=rounding)
    first, opt = _run(values, grads, 3, param_rounding=rounding)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    resumed = torch.nn.Parameter(first.detach().clone())
    opt2 = adamkit.Adafactor([resumed], lr=1e-2, eps=(1e-30, 1e-3), param_rounding=rounding)
    opt2.load_state_dict(torch.load(buffer, weights_only=True))
    for g in grads[3:6]:
        resumed.grad = g
        opt2.step()
    assert torch.equal(resumed.detach(), straight.detach())
    for key, value in straight_opt.state[straight].items():
        assert torch.equal(opt2.state[resumed][key], value), key


def test_a_torch_checkpoint_loads_into_kahan_and_a_kahan_one_into_nearest():
    values, grads = _params((40, 30), torch.bfloat16)
    theirs = torch.nn.Parameter(values.clone())
    torch_opt = torch.optim.Adafactor([theirs], lr=1e-2)
    theirs.grad = grads[0]
    torch_opt.step()
    kahan_p = torch.nn.Parameter(theirs.detach().clone())
    kahan = adamkit.Adafactor([kahan_p], lr=1e-2, param_rounding="kahan")
    kahan.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    kahan_p.grad = grads[1]
    kahan.step()  # its compensation starts at zero
    assert opt_keys(kahan, kahan_p) == ["col_var", "kahan_comp", "row_var", "step"]
    nearest_p = torch.nn.Parameter(kahan_p.detach().clone())
    nearest = adamkit.Adafactor([nearest_p], lr=1e-2)
    nearest.load_state_dict(copy.deepcopy(kahan.state_dict()))
    owed = kahan.state[kahan_p]["kahan_comp"]
    nearest_p.grad = grads[2]
    expected_p = torch.nn.Parameter((nearest_p.detach() + owed).clone())
    expected = adamkit.Adafactor([expected_p], lr=1e-2)
    expected.load_state_dict(copy.deepcopy(kahan.state_dict()))
    del expected.state[expected_p]["kahan_comp"]  # (folded into expected_p by hand)
    expected_p.grad = grads[2]
    nearest.step()  # the compensation folded into the param, then torch's step
    expected.step()
    assert torch.equal(nearest_p.detach(), expected_p.detach())
    assert "kahan_comp" not in nearest.state[nearest_p]


def opt_keys(opt, p):
    return sorted(opt.state[p])


def test_float32_params_and_nearest_are_unchanged():
    values, grads = _params((40, 30), torch.float32)
    for rounding in ("stochastic", "kahan"):
        ours, opt = _run(values, grads, 3, param_rounding=rounding)
        plain, _ = _run(values, grads, 3)
        assert torch.equal(ours, plain) and "kahan_comp" not in opt.state[ours]
    half, _ = _params((40, 30), torch.bfloat16)
    theirs = torch.nn.Parameter(half.clone())
    torch_opt = torch.optim.Adafactor([theirs], lr=1e-2, foreach=False)
    ours, _ = _run(half, grads, 3, fused=False)
    for g in grads[:3]:
        theirs.grad = g.bfloat16()
        torch_opt.step()
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("value", ["up", None, 1])
def test_an_unknown_rounding_is_refused_naming_what_is_accepted(value):
    p = torch.nn.Parameter(torch.randn(4, 4))
    with pytest.raises(ValueError, match=r"param_rounding.*'nearest', 'stochastic', 'kahan'"):
        adamkit.Adafactor([p], param_rounding=value)
    opt = adamkit.Adafactor([p])
    with pytest.raises(ValueError, match="param_rounding"):
        opt.add_param_group(
            {"params": [torch.nn.Parameter(torch.randn(2))], "param_rounding": value}
        )


def test_params_of_two_groups_round_with_their_own_streams():
    values, grads = _params((40, 30), torch.bfloat16)
    a, b = (torch.nn.Parameter(values.clone()) for _ in range(2))
    opt = adamkit.Adafactor([{"params": [a]}, {"params": [b]}], param_rounding="stochastic")
    a.grad, b.grad = grads[0], grads[0].clone()
    opt.step()
    assert not torch.equal(a, b)  # the same values, rounded with independent draws


@pytest.mark.parametrize("foreach", [True, False])
def test_rounding_half_params_leaves_the_float32_params_of_their_group_as_they_were(foreach):
    # ε1 None resolves once for the group (its first param's dtype, or torch's foreach's
    # dtype bucket), whether or not the half params are split off to be rounded
    half, grads = _params((40, 30), torch.bfloat16)
    full, full_grads = _params((20, 10), torch.float32, seed=3)
    results = []
    for rounding in ("nearest", "stochastic"):
        h, f = torch.nn.Parameter(half.clone()), torch.nn.Parameter(full.clone())
        opt = adamkit.Adafactor([h, f], foreach=foreach, param_rounding=rounding)
        for step in range(3):
            h.grad, f.grad = grads[step], full_grads[step]
            opt.step()
        results.append(f.detach())
    assert torch.equal(results[0], results[1])
