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
    zero = [np.zeros((4, 5), bool), np.arange(10) < 3]  # 3 of the group's 30 elements
    opt, _, params, auxes, grads = _run(shapes, 3, zero=zero)
    (s,) = snapshot(opt)
    assert s["eps_dominated"] == pytest.approx(3 / 30)
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


def test_the_clip_divisor_is_the_same_taken_in_chunks(monkeypatch):
    shapes = [(13, 17), (29,)]
    opt, *_ = _run(shapes, 2)
    whole = flatten(snapshot(opt)[0])
    monkeypatch.setattr(_adafactor, "_CHUNK", 7)
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
