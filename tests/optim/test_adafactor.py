"""adamkit.Adafactor against torch.optim.Adafactor (bit for bit on foreach/for-loop), its fused
CPU kernel against the NumPy reference (float64, 1e-12) and torch (float32), checkpoints both
ways, and bad input."""

from __future__ import annotations

import copy
import io
import math
import random

import numpy as np
import pytest
import torch

import adamkit
from adamkit.kernels import _threads, adafactor_cpu
from adamkit.reference import adafactor as ref

SHAPES = [(7, 5), (3, 4, 6), (11,), (), (1, 1), (2, 1, 9), (33, 17), (1,), (5, 1)]


def _params(shapes, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]


def _grads(params, steps, seed, *, zeros=False, spike=False):
    gen = torch.Generator().manual_seed(seed + 1000)
    out = []
    for t in range(steps):
        row = []
        for p in params:
            g = torch.randn(p.shape, generator=gen, dtype=torch.float64)
            if zeros:
                g[torch.rand(p.shape, generator=gen) < 0.3] = 0.0
            if spike and t == steps - 1:
                g = g * 1e4
            row.append(g.to(p.dtype))
        out.append(row)
    return out


def _run(make, params0, grads, *, skip=()):
    params = [torch.nn.Parameter(p.clone()) for p in params0]
    opt = make(params)
    for step in grads:
        for i, (p, g) in enumerate(zip(params, step, strict=True)):
            p.grad = None if i in skip else g.clone()
        opt.step()
    return params, opt


def _random_config(rnd: random.Random) -> dict:
    kw: dict = {}
    if rnd.random() < 0.5:
        kw["weight_decay"] = rnd.choice([0.0, 0.01, 0.3])
    if rnd.random() < 0.5:
        kw["lr"] = rnd.choice([1e-3, 0.05, 0.7, torch.tensor(0.02)])
    if rnd.random() < 0.4:
        kw["eps"] = (rnd.choice([None, 1e-30, 1e-6, 1e-3]), rnd.choice([1e-3, 0.0, 0.1]))
    if rnd.random() < 0.4:
        kw["d"] = rnd.choice([1.0, 1.5, math.inf])
    if rnd.random() < 0.4:
        kw["beta2_decay"] = rnd.choice([-0.8, -0.5, -1.0, 0.0])
    kw["maximize"] = rnd.random() < 0.3
    return kw


def _same(a, b):
    """Equal element for element (NaN where the other has NaN: torch's float16 steps can
    overflow to NaN, and adamkit's must do the same)."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def _assert_states_equal(a, b, exact):
    for pa, pb in zip(a.state.values(), b.state.values(), strict=True):
        assert pa.keys() == pb.keys()
        for key in pa:
            x, y = pa[key], pb[key]
            if key == "step":
                assert float(x) == float(y)
            elif exact:
                _same(x, y)
            else:
                torch.testing.assert_close(x, y, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_torch_order_is_torch_bit_for_bit(foreach, seed):
    """foreach=True/False: params and state equal torch.optim.Adafactor's exactly, over random
    hyperparameters, dtypes, shapes (non-contiguous ones too) and params without a gradient."""
    rnd = random.Random(seed)
    kw = _random_config(rnd)
    dtype = rnd.choice([torch.float32, torch.float64, torch.bfloat16, torch.float16])
    params0 = _params(SHAPES, dtype, seed)
    params0[0] = params0[0].t()  # a non-contiguous (5, 7) param
    grads = _grads(params0, 4, seed, zeros=seed % 3 == 0)
    skip = {2} if seed % 4 == 1 else set()
    ours, opt = _run(
        lambda ps: adamkit.Adafactor(ps, foreach=foreach, **kw), params0, grads, skip=skip
    )
    theirs, topt = _run(
        lambda ps: torch.optim.Adafactor(ps, foreach=foreach, **kw), params0, grads, skip=skip
    )
    for a, b in zip(ours, theirs, strict=True):
        _same(a, b)
    _assert_states_equal(opt, topt, exact=True)


@pytest.mark.parametrize("foreach", [False, True, None])
def test_eps1_none_takes_the_first_params_dtype_for_the_whole_group_as_torch(foreach):
    """eps=(None, ...): torch's for-loop (its CPU default) resolves ε1 from the first param's
    dtype and keeps it for the group; its foreach from a dtype bucket of its own choosing
    (here float64's, for all: adamkit gave it float32's and its float32 param moved 0.03
    away from torch's). Gradients of 1e-10 make V̂ ~ 1e-20, floored at float32's ε1²
    (1.4e-14) but not at float64's (4.9e-32), so the params show which ε1 they got."""
    params0 = [torch.randn(4, 3), torch.randn(4, 3, dtype=torch.float64), torch.randn(5).double()]
    grads = [[p * 1e-10 for p in params0] for _ in range(2)]
    ours, _ = _run(lambda ps: adamkit.Adafactor(ps, foreach=foreach), params0, grads)
    theirs, _ = _run(lambda ps: torch.optim.Adafactor(ps, foreach=foreach), params0, grads)
    alone, _ = _run(
        lambda ps: torch.optim.Adafactor(ps, foreach=foreach),
        params0[1:],
        [row[1:] for row in grads],
    )
    if not foreach:  # (the case tells the two rules apart)
        assert not torch.allclose(theirs[1], alone[0])
    for a, b in zip(ours, theirs, strict=True):
        if foreach is None:  # the fused kernel: at the dtype's rounding
            torch.testing.assert_close(
                a, b, rtol=1e-5 if a.dtype == torch.float32 else 1e-12, atol=0
            )
        else:
            _same(a, b)


def _counting_fused_steps(monkeypatch) -> list[int]:
    """Count the tensors the fused kernel steps (so a test knows it did not fall back)."""
    calls: list[int] = []
    real = adafactor_cpu.step

    def counted(p, *args, **kwargs):
        calls.append(p.numel())
        real(p, *args, **kwargs)

    monkeypatch.setattr(adafactor_cpu, "step", counted)
    return calls


@pytest.mark.parametrize("seed", range(16))
def test_fused_matches_the_reference_in_float64(seed, monkeypatch):
    """The fused kernel against the NumPy reference at 1e-12, with exact zeros in the
    gradient, a spike, weight decay and maximize."""
    calls = _counting_fused_steps(monkeypatch)
    rnd = random.Random(100 + seed)
    kw = _random_config(rnd)
    kw["lr"] = float(kw.get("lr", 1e-2))
    params0 = _params(SHAPES, torch.float64, seed)
    grads = _grads(params0, 5, seed, zeros=seed % 2 == 0, spike=seed % 3 == 0)
    ours, opt = _run(lambda ps: adamkit.Adafactor(ps, fused=True, **kw), params0, grads)
    assert len(calls) == len(SHAPES) * len(grads)  # every tensor by the fused kernel
    eps1, eps2 = kw.get("eps", (None, 1e-3))
    hyper = ref.AdafactorHyper(
        lr=kw["lr"], beta2_decay=kw.get("beta2_decay", -0.8),
        eps1=float(np.finfo(np.float64).eps) if eps1 is None else eps1, eps2=eps2,
        d=kw.get("d", 1.0), weight_decay=kw.get("weight_decay", 0.0), maximize=kw["maximize"],
    )  # fmt: skip
    for i, p0 in enumerate(params0):
        phi, state = p0.numpy().copy(), ref.init(p0.numpy())
        for step in grads:
            phi, state, _ = ref.step(phi, step[i].numpy(), state, hyper)
        np.testing.assert_allclose(ours[i].detach().numpy(), phi, rtol=1e-12, atol=1e-14)
        got = opt.state[ours[i]]
        expected = (
            {"row_var": state.row_var, "col_var": state.col_var}
            if p0.dim() > 1
            else {"variance": state.variance}
        )
        for key, value in expected.items():
            np.testing.assert_allclose(got[key].numpy(), value, rtol=1e-12, atol=1e-300)
        assert float(got["step"]) == len(grads)


@pytest.mark.parametrize("seed", range(6))
def test_fused_float32_is_torch_at_float32_rounding(seed):
    rnd = random.Random(200 + seed)
    kw = _random_config(rnd)
    params0 = _params(SHAPES, torch.float32, seed)
    grads = _grads(params0, 5, seed, zeros=True)
    ours, opt = _run(lambda ps: adamkit.Adafactor(ps, **kw), params0, grads)
    theirs, topt = _run(lambda ps: torch.optim.Adafactor(ps, **kw), params0, grads)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    _assert_states_equal(opt, topt, exact=False)


def test_threads_give_the_serial_result(monkeypatch):
    """Big tensors split their rows between threads (per-thread column sums added in a fixed
    order): the result is the reference's, as the one-thread result is."""
    calls = _counting_fused_steps(monkeypatch)
    monkeypatch.setattr(_threads.Threads, "SMALL_WORK", 0)
    monkeypatch.setattr(_threads.Threads, "contended_until", 0.0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        params0 = _params([(301, 257), (2, 150, 260), (70001,)], torch.float64, 7)
        grads = _grads(params0, 3, 7, zeros=True)
        ours, _ = _run(
            lambda ps: adamkit.Adafactor(ps, fused=True, weight_decay=0.1), params0, grads
        )
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 9
    if not _threads.Threads.usable:
        pytest.skip("numba's threading layer runs one thread here")
    hyper = ref.AdafactorHyper(weight_decay=0.1, eps1=float(np.finfo(np.float64).eps))
    for i, p0 in enumerate(params0):
        phi, state = p0.numpy().copy(), ref.init(p0.numpy())
        for step in grads:
            phi, state, _ = ref.step(phi, step[i].numpy(), state, hyper)
        np.testing.assert_allclose(ours[i].detach().numpy(), phi, rtol=1e-12, atol=1e-14)


def test_what_the_fused_kernel_does_not_take_is_torch_for_loop(monkeypatch):
    """bfloat16, non-contiguous and float16 params under the default take torch's for-loop:
    bit for bit torch's."""
    calls = _counting_fused_steps(monkeypatch)
    params0 = [
        torch.randn(6, 5).bfloat16(), torch.randn(5, 8).t(), torch.randn(9).half(),
    ]  # fmt: skip
    grads = _grads(params0, 3, 3)
    ours, _ = _run(lambda ps: adamkit.Adafactor(ps, weight_decay=0.1), params0, grads)
    theirs, _ = _run(lambda ps: torch.optim.Adafactor(ps, weight_decay=0.1), params0, grads)
    assert not calls
    for a, b in zip(ours, theirs, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("fused", [True, None, False])
def test_empty_params_are_left_alone(fused):
    """torch divides by √0 on an empty param; adamkit leaves it as it is, counts its step, and
    steps the others as usual."""
    w = torch.nn.Parameter(torch.randn(4, 3))
    empties = [torch.nn.Parameter(torch.zeros(0)), torch.nn.Parameter(torch.zeros(0, 5))]
    kw = {} if fused is None else {"fused": fused}
    opt = adamkit.Adafactor([w, *empties], **kw)
    before = w.detach().clone()
    for p in (w, *empties):
        p.grad = torch.ones_like(p)
    opt.step()
    assert not torch.equal(w, before)
    for e in empties:
        assert e.numel() == 0 and float(opt.state[e]["step"]) == 1
    with pytest.raises(ZeroDivisionError):  # what torch does (documented in the docstring)
        t = torch.nn.Parameter(torch.zeros(0))
        t.grad = torch.zeros(0)
        torch.optim.Adafactor([t]).step()


@pytest.mark.parametrize("fused", [True, False])
def test_checkpoints_load_both_ways_and_resume_bit_for_bit(fused):
    params0 = _params([(6, 4), (5,), (2, 3, 4)], torch.float32, 11)
    grads = _grads(params0, 6, 11)
    kw = {"fused": True} if fused else {"foreach": False}
    straight, _ = _run(lambda ps: adamkit.Adafactor(ps, **kw), params0, grads)
    half, opt = _run(lambda ps: adamkit.Adafactor(ps, **kw), params0, grads[:3])
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = [torch.nn.Parameter(p.detach().clone()) for p in half]
    opt2 = adamkit.Adafactor(resumed, **kw)
    opt2.load_state_dict(copy.deepcopy(saved))  # (a load keeps the tensors it is given)
    for step in grads[3:]:
        for p, g in zip(resumed, step, strict=True):
            p.grad = g.clone()
        opt2.step()
    for a, b in zip(resumed, straight, strict=True):
        assert torch.equal(a, b)
    # adamkit's checkpoint in torch, torch's in adamkit
    in_torch = [torch.nn.Parameter(p.detach().clone()) for p in half]
    topt = torch.optim.Adafactor(in_torch, foreach=False)
    topt.load_state_dict(copy.deepcopy(saved))
    back = adamkit.Adafactor([torch.nn.Parameter(p.detach().clone()) for p in half], foreach=False)
    back.load_state_dict(copy.deepcopy(topt.state_dict()))
    for opt_i in (topt, back):
        ps = [p for g in opt_i.param_groups for p in g["params"]]
        for p, g in zip(ps, grads[3], strict=True):
            p.grad = g.clone()
        opt_i.step()
    # (the checkpoint carries its flags, as torch's: one taken with fused=True steps fused)
    for a, b in zip(in_torch, back.param_groups[0]["params"], strict=True):
        if fused:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(a, b)


def test_a_checkpoint_of_the_wrong_shape_is_refused_whole():
    w, v = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))
    opt = adamkit.Adafactor([w, v])
    w.grad, v.grad = torch.randn(4, 3), torch.randn(5)
    opt.step()
    good = opt.state_dict()
    for key, bad in [("row_var", torch.zeros(3, 1)), ("col_var", torch.zeros(4, 3))]:
        broken = opt.state_dict()
        broken["state"][0] = {**broken["state"][0], key: bad}
        fresh = adamkit.Adafactor([w, v])
        with pytest.raises(adamkit.StateDictError, match=key):
            fresh.load_state_dict(broken)
        assert not fresh.state
    broken = opt.state_dict()
    broken["state"][1] = {"step": torch.tensor(1.0), "row_var": torch.zeros(5, 1)}
    with pytest.raises(adamkit.StateDictError, match="variance"):
        adamkit.Adafactor([w, v]).load_state_dict(broken)
    adamkit.Adafactor([w, v]).load_state_dict(good)


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"lr": -1.0}, "Learning rate should be >= 0"),
        ({"lr": math.nan}, "Learning rate"),
        ({"beta2_decay": 0.5}, "beta2_decay should be <= 0"),
        ({"eps": (-1.0, 1e-3)}, "epsilon1 should be >= 0"),
        ({"eps": (None, math.inf)}, "epsilon2"),
        ({"eps": 1e-3}, "eps must be a pair"),
        ({"d": 0.5}, "Clipping threshold d should be >= 1"),
        ({"weight_decay": -0.1}, "weight_decay should be >= 0"),
    ],
)
def test_bad_hyperparameters_are_refused_in_torchs_words(kw, words):
    with pytest.raises(ValueError, match=words):
        adamkit.Adafactor([torch.nn.Parameter(torch.zeros(2))], **kw)
    w = torch.nn.Parameter(torch.ones(2))
    opt = adamkit.Adafactor([w])
    opt.param_groups[0].update(kw)
    w.grad = torch.ones(2)
    with pytest.raises(ValueError, match=words):
        opt.step()
    assert torch.equal(w, torch.ones(2)) and not opt.state


def test_a_complex_param_is_refused_before_any_group_moves():
    w = torch.nn.Parameter(torch.ones(3))
    z = torch.nn.Parameter(torch.ones(2, dtype=torch.complex64))
    opt = adamkit.Adafactor([{"params": [w]}, {"params": [z]}])
    w.grad, z.grad = torch.ones(3), torch.ones(2, dtype=torch.complex64)
    with pytest.raises(RuntimeError, match="complex"):
        opt.step()
    assert torch.equal(w, torch.ones(3)) and not opt.state


@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_a_nonfinite_gradient_changes_nothing(mode):
    w = torch.nn.Parameter(torch.ones(3, 2))
    opt = adamkit.Adafactor([w], on_nonfinite=mode)
    w.grad = torch.tensor([[1.0, math.nan], [0.0, 1.0], [2.0, 1.0]])
    if mode == "raise":
        with pytest.raises(adamkit.NonFiniteGradientError):
            opt.step()
    else:
        opt.step()
        assert opt.skipped_steps == 1
    assert torch.equal(w, torch.ones(3, 2)) and not opt.state


def test_a_drop_in_for_torch_with_schedulers_and_isinstance():
    w = torch.nn.Parameter(torch.randn(8, 4))
    opt = adamkit.Adafactor([w], lr=0.5)
    assert isinstance(opt, torch.optim.Adafactor)
    assert opt.param_groups[0].keys() == torch.optim.Adafactor([w]).param_groups[0].keys()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    for _ in range(3):
        w.grad = torch.randn(8, 4)
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5e-3)


def test_gradients_are_not_modified():
    w = torch.nn.Parameter(torch.randn(5, 4))
    g = torch.randn(5, 4)
    w.grad = g.clone()
    adamkit.Adafactor([w], maximize=True).step()
    assert torch.equal(w.grad, g)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("new_shape", [(400, 300), (3, 4), (2, 3), (12,), (4000,)])
def test_a_param_reshaped_after_a_step_is_refused_before_anything_moves(fused, new_shape):
    """The fused kernel must never read state of another size (it has no bounds checks): a
    param whose shape no longer fits its state raises, and nothing changes."""
    w = torch.nn.Parameter(torch.randn(4, 3))
    v = torch.nn.Parameter(torch.randn(5))
    opt = adamkit.Adafactor(
        [{"params": [v]}, {"params": [w]}], **({"fused": True} if fused else {"foreach": False})
    )
    w.grad, v.grad = torch.randn(4, 3), torch.randn(5)
    opt.step()
    w.data = torch.randn(new_shape)
    w.grad = torch.randn(new_shape)
    before_v, before_w = v.detach().clone(), w.detach().clone()
    steps = [float(s["step"]) for s in opt.state.values()]
    with pytest.raises(RuntimeError, match="changed shape"):
        opt.step()
    assert torch.equal(v, before_v) and torch.equal(w, before_w)
    assert [float(s["step"]) for s in opt.state.values()] == steps


def test_a_param_cast_after_a_step_is_refused_clearly():
    w = torch.nn.Parameter(torch.randn(4, 3))
    opt = adamkit.Adafactor([w])
    w.grad = torch.randn(4, 3)
    opt.step()
    w.data = w.data.double()
    w.grad = torch.randn(4, 3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="shape or dtype"):
        opt.step()


def test_a_group_of_empty_params_only_steps_its_counts():
    e = torch.nn.Parameter(torch.empty(0))
    w = torch.nn.Parameter(torch.ones(3))
    opt = adamkit.Adafactor([{"params": [e]}, {"params": [w]}])
    e.grad, w.grad = torch.empty(0), torch.ones(3)
    opt.step()
    assert float(opt.state[e]["step"]) == 1 and not torch.equal(w, torch.ones(3))


@pytest.mark.parametrize("shape", [(6, 5), (3, 6, 5), (30,)])
def test_a_tiny_eps1_gives_torchs_nans_for_zero_rows(shape):
    """transformers' ε1 = 1e-30 squares to 0 in float32: torch's V̂ floor is then 0 and a row
    or column of zero gradients gives NaN (0·∞). The fused kernel floors at ε1² rounded to the
    dtype too, so it agrees with torch on which elements are NaN."""
    gen = torch.Generator().manual_seed(5)
    params0 = [torch.randn(shape, generator=gen)]
    grad = torch.randn(shape, generator=gen)
    if len(shape) > 1:
        grad[..., 1, :] = 0.0  # a zero row (an embedding row not in the batch)
    else:
        grad[3:7] = 0.0
    kw = {"eps": (1e-30, 1e-3)}
    ours, _ = _run(lambda ps: adamkit.Adafactor(ps, fused=True, **kw), params0, [[grad]])
    theirs, _ = _run(lambda ps: torch.optim.Adafactor(ps, **kw), params0, [[grad]])
    assert torch.isnan(theirs[0]).any()
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-5, atol=1e-6, equal_nan=True)


def test_the_reference_lerps_as_torch_when_the_weight_is_one():
    """beta2_decay = 0 gives the lerp weight t^0 = 1: V = g² exactly (torch's lerp is exact
    at both ends); a naive v + w·(g² - v) loses a small g² next to a large old v."""
    p0 = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    grads = [[torch.tensor([1e3, -2e3, 5e2], dtype=torch.float64)],
             [torch.tensor([1e-6, 2e-6, -3e-6], dtype=torch.float64)]]  # fmt: skip
    theirs, topt = _run(lambda ps: torch.optim.Adafactor(ps, beta2_decay=0.0), [p0], grads)
    hyper = ref.AdafactorHyper(beta2_decay=0.0, eps1=float(np.finfo(np.float64).eps))
    phi, state = p0.numpy().copy(), ref.init(p0.numpy())
    for (g,) in grads:
        phi, state, _ = ref.step(phi, g.numpy(), state, hyper)
    np.testing.assert_allclose(
        state.variance, topt.state[theirs[0]]["variance"].numpy(), rtol=1e-12
    )
    np.testing.assert_allclose(phi, theirs[0].detach().numpy(), rtol=1e-12)


def test_a_checkpoint_with_both_backend_flags_is_refused_as_a_state_dict_error():
    w = torch.nn.Parameter(torch.ones(2))
    opt = adamkit.Adafactor([w])
    sd = opt.state_dict()
    sd["param_groups"][0].update(foreach=True, fused=True)
    with pytest.raises(adamkit.StateDictError, match="cannot be `True` together"):
        opt.load_state_dict(sd)
