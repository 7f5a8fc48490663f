"""Adafactor's diagnostics against the NumPy reference's intermediates: √V̂ rebuilt from the
factors, the effective lr with the relative step size and update clipping, ε1's floor."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

import adamkit
from adamkit.diagnostics import Recorder, _adafactor, _sampling, snapshot
from adamkit.diagnostics.snapshot import QUANTITIES, flatten
from adamkit.reference import adafactor as ref

EPS64 = float(np.finfo(np.float64).eps)


def _rms(x) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def _run(shapes, steps, *, lr=1.0, d=1.0, zero=None, seed=5, cls=adamkit.Adafactor, **kw):
    """adamkit (or torch) and the reference side by side on float64 params; ``zero``: a
    boolean mask per shape of gradient elements held at 0 (their V̂ stays 0: ε1 floors it)."""
    rng = np.random.default_rng(seed)
    p0 = [rng.standard_normal(s) for s in shapes]
    ws = [torch.tensor(p, requires_grad=True) for p in p0]
    opt = cls(ws, lr=lr, d=d, **kw)
    hyper = ref.AdafactorHyper(lr=lr, d=d, eps1=EPS64, maximize=kw.get("maximize", False))
    params, states, auxes, grads = list(p0), [ref.init(p) for p in p0], [None] * len(p0), []
    for _ in range(steps):
        grads = [rng.standard_normal(s) * rng.uniform(0.1, 10.0) for s in shapes]
        if zero is not None:
            grads = [np.where(z, 0.0, g) for g, z in zip(grads, zero, strict=True)]
        for w, g in zip(ws, grads, strict=True):
            w.grad = torch.tensor(g)
        opt.step()
        for i, g in enumerate(grads):
            params[i], states[i], auxes[i] = ref.step(params[i], g, states[i], hyper)
    return opt, ws, params, auxes, grads


def _expected(params, auxes, grads, t, lr=1.0, maximize=False):
    """Per element, flat and concatenated: √V̂, the effective lr with α from the param as it
    is now (what the snapshot reads), and the update α/d·U."""
    sqrt_v, eff, update = [], [], []
    for p, aux, g in zip(params, auxes, grads, strict=True):
        alpha = max(1e-3, _rms(p)) * min(lr, 1 / math.sqrt(t))
        floored = np.sqrt(np.maximum(aux.var_estimate, EPS64 * EPS64))
        e = alpha / aux.clip_divisor / floored
        sqrt_v.append(np.sqrt(aux.var_estimate).ravel())
        eff.append(e.ravel())
        update.append((e * (-g if maximize else g)).ravel())
    return (np.concatenate(x) for x in (sqrt_v, eff, update))


@pytest.mark.parametrize("maximize", [False, True])
def test_adafactor_snapshot_matches_the_reference(maximize):
    shapes = [(6, 7), (2, 3, 5), (9,), ()]
    opt, _, params, auxes, grads = _run(shapes, 4, maximize=maximize)
    (s,) = snapshot(opt)
    sqrt_v, eff, update = _expected(params, auxes, grads, 4, maximize=maximize)
    assert s["step"] == 4
    assert s["sqrt_v_hat_rms"] == pytest.approx(_rms(sqrt_v), rel=1e-9)
    assert s["update_rms"] == pytest.approx(_rms(update), rel=1e-9)
    assert s["effective_lr"]["median"] == pytest.approx(float(np.median(eff)), rel=1e-9)
    assert s["effective_lr"]["min"] == pytest.approx(float(eff.min()), rel=1e-9)
    assert s["effective_lr"]["max"] == pytest.approx(float(eff.max()), rel=1e-9)
    assert s["relative_step"] == 0.5  # min(lr=1, 1/√4)
    clipped = [aux.clip_divisor > 1 for aux in auxes]
    assert s["clipped_fraction"] == pytest.approx(np.mean(clipped))
    assert 0 < s["clipped_fraction"] < 1  # both kinds, so the divisor is read per tensor
    assert s["eps_dominated"] == 0.0
    assert s["grad_rms"] == pytest.approx(_rms(np.concatenate([g.ravel() for g in grads])))
    assert set(s) == {"step", *(q.split(".")[0] for q in QUANTITIES["adafactor"])}
    assert "m_hat_rms" not in s and "snr" not in s  # no first moment


def test_the_update_is_close_to_the_step_the_params_took():
    opt, ws, *_ = _run([(6, 7), (11,)], 3, lr=0.01)
    rng = np.random.default_rng(9)
    for w in ws:
        w.grad = torch.tensor(rng.standard_normal(tuple(w.shape)))
    last = [w.detach().clone() for w in ws]
    opt.step()
    (s,) = snapshot(opt)
    moved = torch.cat([(a - w.detach()).reshape(-1) for a, w in zip(last, ws, strict=True)])
    # α's RMS(φ) is read after the step, which changed it by at most ρ_t = 0.01 relative
    assert s["update_rms"] == pytest.approx(_rms(moved.numpy()), rel=0.02)
    assert s["update_rms"] != pytest.approx(_rms(moved.numpy()), rel=1e-12)  # (not exact)


def test_an_element_whose_gradient_stays_zero_is_eps_dominated():
    shapes = [(4, 5), (10,)]
    # a column of the matrix (its C is 0: the whole-tensor RMS takes the floored path) and 3
    # of the vector's elements: 7 of the group's 30
    zero = [np.arange(5)[None, :].repeat(4, 0) == 0, np.arange(10) < 3]
    opt, _, params, auxes, grads = _run(shapes, 3, zero=zero)
    (s,) = snapshot(opt)
    assert s["eps_dominated"] == pytest.approx(7 / 30)
    sqrt_v, eff, _ = _expected(params, auxes, grads, 3)
    kept = sqrt_v >= EPS64
    assert s["effective_lr_adaptive"]["median"] == pytest.approx(
        float(np.median(eff[kept])), rel=1e-9
    )
    assert s["effective_lr"]["max"] == pytest.approx(float(eff.max()), rel=1e-9)


def test_a_sampled_large_matrix_reads_the_factors_at_the_sampled_elements():
    shapes = [(3, 300, 257)]
    opt, _, params, auxes, grads = _run(shapes, 2)
    (s,) = snapshot(opt, max_elements=4096)
    numel = 3 * 300 * 257
    plan = _sampling.sample([numel], 4096)
    layout = _sampling.blocks(numel, plan.shares[0])
    assert layout is not None  # sampled
    index = (np.arange(layout.count)[:, None] * layout.spacing + np.arange(layout.length)).ravel()
    sqrt_v, _, update = _expected(params, auxes, grads, 2)
    assert s["sqrt_v_hat_rms"] == pytest.approx(_rms(sqrt_v[index]), rel=1e-9)
    assert s["update_rms"] == pytest.approx(_rms(update[index]), rel=1e-9)


@pytest.mark.parametrize("chunk", [7, 40])
def test_the_clip_divisor_is_the_same_taken_in_chunks(monkeypatch, chunk):
    # 7: a matrix by rows; 40: two of the (3, 5) matrices of a batch at a time
    shapes = [(13, 17), (29,), (6, 3, 5)]
    opt, *_ = _run(shapes, 2)
    whole = flatten(snapshot(opt)[0])
    monkeypatch.setattr(_adafactor, "_CHUNK", chunk)
    assert flatten(snapshot(opt)[0]) == pytest.approx(whole, rel=1e-13)  # (sums in another order)


def test_without_a_gradient_the_step_is_unknown_and_the_scale_still_shows():
    opt, _, params, auxes, grads = _run([(6, 7)], 2)
    opt.zero_grad()
    (s,) = snapshot(opt)
    sqrt_v, *_ = _expected(params, auxes, grads, 2)
    assert s["sqrt_v_hat_rms"] == pytest.approx(_rms(sqrt_v), rel=1e-9)
    assert math.isnan(s["clipped_fraction"]) and s["update_rms"] == 0.0
    assert "grad_rms" not in s


def test_torch_adafactor_gives_the_same_snapshot_as_adamkits_torch_order_step():
    shapes = [(6, 7), (9,)]
    ours = _run(shapes, 3, foreach=False)[0]
    theirs = _run(shapes, 3, cls=torch.optim.Adafactor, foreach=False)[0]
    assert snapshot(ours) == snapshot(theirs)
    assert snapshot(theirs)[0]["relative_step"] == pytest.approx(1 / math.sqrt(3))


def test_per_param_snapshots_and_the_recorder_take_adafactor(tmp_path):
    w = torch.nn.Parameter(torch.randn(8, 5))
    b = torch.nn.Parameter(torch.randn(5))
    opt = adamkit.Adafactor([("w", w), ("b", b)])
    path = tmp_path / "adafactor.csv"
    with Recorder(opt, every=1, csv=path):
        for _ in range(3):
            w.grad, b.grad = torch.randn(8, 5), torch.randn(5)
            opt.step()
    per = snapshot(opt, per_param=True)
    assert set(per) == {"w", "b"} and per["w"]["state_format"] == "fp32"
    assert per["w"]["clipped_fraction"] in (0.0, 1.0)
    rows = list(csv.DictReader(path.open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3]
    assert list(rows[0]) == ["call", "label", "step", *QUANTITIES["adafactor"]]
    assert float(rows[-1]["relative_step"]) == pytest.approx(1e-2)


def _reported_and_moved(opt, params, seed=3, scale=1.0):
    """Each param's ``update_rms`` from a per-param snapshot after one more step, and the RMS of
    what that step moved it (float32 params, lr small: the two agree to about ρ_t)."""
    gen = torch.Generator().manual_seed(seed)
    last = [p.detach().clone() for p in params]
    for p in params:
        p.grad = (torch.randn(p.shape, generator=gen) * scale).to(p.dtype)
    opt.step()
    report = snapshot(opt, per_param=True)
    moved = [_rms((a - p.detach()).double().numpy()) for a, p in zip(last, params, strict=True)]
    names = {id(p): f"group0.param{i}" for i, p in enumerate(opt.param_groups[0]["params"])}
    return [report[names[id(p)]]["update_rms"] for p in params], moved


@pytest.mark.parametrize("foreach", [True, False, None])
@pytest.mark.parametrize("first", [torch.float32, torch.bfloat16])
def test_eps1_none_is_resolved_as_the_step_resolved_it(foreach, first):
    """ε1 None: torch's foreach takes a dtype bucket's machine epsilon (bf16's before
    float32's), its for-loop (and adamkit's fused step) the first param's. With gradients
    of 1e-4, V̂ ~ 1e-8 sits under bf16's ε1² (6e-5) but over float32's: which ε1 the step
    used decides the update by ~100x. The snapshot used the first param's, per group or (with
    per_param=True) each param's own."""
    other = torch.bfloat16 if first == torch.float32 else torch.float32
    gen = torch.Generator().manual_seed(0)
    params = [
        torch.nn.Parameter(torch.randn(8, 9, generator=gen).to(first)),
        torch.nn.Parameter(torch.randn(8, 9, generator=gen).to(other)),
    ]
    opt = adamkit.Adafactor(params, lr=1e-3, foreach=foreach)
    _reported_and_moved(opt, params, seed=1, scale=1e-4)
    reported, moved = _reported_and_moved(opt, params, scale=1e-4)
    fp32 = 0 if first == torch.float32 else 1
    assert reported[fp32] == pytest.approx(moved[fp32], rel=0.01)


def test_eps1_is_the_stepped_params_when_the_first_has_no_gradient():
    gen = torch.Generator().manual_seed(0)
    a = torch.nn.Parameter(torch.randn(8, 9, generator=gen).bfloat16())
    b = torch.nn.Parameter(torch.randn(8, 9, generator=gen))
    opt = adamkit.Adafactor([a, b], lr=1e-3, foreach=False)
    a.grad, b.grad = torch.zeros(8, 9).bfloat16(), torch.randn(8, 9) * 1e-4
    opt.step()
    a.grad = None  # the next step steps b alone: float32's ε1
    (reported,), (moved,) = _reported_and_moved(opt, [b], scale=1e-4)
    assert reported == pytest.approx(moved, rel=0.01)
    # the group's: a (no gradient) shows no update, b its own, over 72 + 72 elements
    assert snapshot(opt)[0]["update_rms"] == pytest.approx(moved / math.sqrt(2), rel=0.01)


def test_an_empty_param_in_the_group_is_left_out():
    a = torch.nn.Parameter(torch.randn(3, 4))
    empties = [torch.nn.Parameter(torch.randn(*s)) for s in ((0, 5), (5, 0), (2, 0, 3), (0,))]
    opt = adamkit.Adafactor([a, *empties])
    a.grad = torch.randn(3, 4)
    for p in empties:
        p.grad = torch.zeros_like(p)
    opt.step()
    (s,) = snapshot(opt)
    alone = adamkit.Adafactor([torch.nn.Parameter(a.detach().clone())])
    alone.load_state_dict({"state": {0: opt.state_dict()["state"][0]},
                           "param_groups": [{**opt.state_dict()["param_groups"][0], "params": [0]}]})  # fmt: skip
    alone.param_groups[0]["params"][0].grad = a.grad.clone()
    assert s == snapshot(alone)[0]


def test_eps1_on_torchs_foreach_skips_an_empty_first_param():
    """torch's foreach is handed the non-empty params: a float64 empty param listed first does
    not decide ε1 there (it does on the for-loop, as torch's)."""
    from adamkit.optim.adafactor import step_eps1

    empty, w = torch.zeros(0, 3, dtype=torch.float64), torch.zeros(8, 9)
    group = {"eps": (None, 1e-3), "foreach": True}
    assert step_eps1(group, [empty, w]) == torch.finfo(torch.float32).eps
    assert step_eps1({**group, "foreach": False}, [empty, w]) == torch.finfo(torch.float64).eps
