"""snapshot() against hand-computed values and the NumPy reference's intermediates."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

import adamkit
from adamkit.diagnostics import _sampling, snapshot
from adamkit.diagnostics.elementwise import group_elements
from adamkit.diagnostics.snapshot import QUANTITIES
from adamkit.reference import adam as ref_adam
from adamkit.reference import ademamix as ref_ademamix
from adamkit.reference import lion as ref_lion
from adamkit.reference import rmsprop as ref_rmsprop
from adamkit.reference import schedule_free as ref_schedule_free
from adamkit.reference import sgd as ref_sgd


def test_constant_gradient_gives_effective_lr_alpha_over_abs_g_plus_eps():
    # For a constant gradient, v̂ = g² exactly, so α/(√v̂+ε) = α/(|g|+ε).
    g = torch.tensor([2.0, -0.5, 1e-10, 3e-9, 0.0, 4.0], dtype=torch.float64)
    lr, eps = 0.01, 1e-8
    w = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    opt = adamkit.Adam([w], lr=lr, eps=eps)
    for _ in range(7):
        w.grad = g.clone()
        opt.step()
    (s,) = snapshot(opt)
    expected = lr / (g.abs() + eps)
    assert s["step"] == 7
    assert s["effective_lr"]["min"] == pytest.approx(expected.min().item(), rel=1e-12)
    assert s["effective_lr"]["max"] == pytest.approx(expected.max().item(), rel=1e-12)
    assert s["effective_lr"]["median"] == pytest.approx(expected.quantile(0.5).item(), rel=1e-12)
    # |g| < ε for 1e-10, 3e-9 and 0: three of six coordinates
    assert s["eps_dominated"] == pytest.approx(3 / 6)
    # ... and the adaptive percentiles are over the other three: |g| = 2, 0.5, 4
    adaptive = np.quantile(lr / (np.array([2.0, 0.5, 4.0]) + eps), [0.1, 0.5, 0.9])
    assert list(s["effective_lr_adaptive"].values()) == pytest.approx(adaptive, rel=1e-12)
    assert s["sqrt_v_hat_rms"] == pytest.approx(g.square().mean().sqrt().item(), rel=1e-12)
    assert s["m_hat_rms"] == pytest.approx(g.square().mean().sqrt().item(), rel=1e-12)
    # m̂ = g and √v̂ = |g|: signal-to-noise 1 wherever g ≠ 0; momentum agrees with g except g = 0
    assert s["snr"] == pytest.approx(1.0, rel=1e-12)
    assert s["momentum_agreement"] == pytest.approx(1.0)


def test_adam_snapshot_matches_reference_intermediates():
    rng = np.random.default_rng(0)
    shapes = [(5, 7), (13,), (0,)]
    params = [rng.standard_normal(s) for s in shapes]
    hyper = ref_adam.AdamHyper(lr=0.02, beta1=0.8, beta2=0.95, eps=1e-6, amsgrad=True)
    ws = [torch.tensor(p, requires_grad=True) for p in params]
    opt = adamkit.Adam(ws, lr=0.02, betas=(0.8, 0.95), eps=1e-6, amsgrad=True)
    states = [ref_adam.init(p) for p in params]
    for _ in range(5):
        grads = [rng.standard_normal(s) * 10.0 ** rng.uniform(-9, 1, s) for s in shapes]
        auxes = []
        for i, g in enumerate(grads):
            ws[i].grad = torch.tensor(g)
            params[i], states[i], aux = ref_adam.step(params[i], g, states[i], hyper)
            auxes.append(aux)
        opt.step()
    (s,) = snapshot(opt)
    cat = lambda f: np.concatenate([f(a).reshape(-1) for a in auxes])  # noqa: E731
    eff, m_hat, sqrt_v = (
        cat(lambda a: a.effective_lr),
        cat(lambda a: a.m_hat),
        cat(lambda a: np.sqrt(a.v_hat)),
    )
    update = cat(lambda a: a.update)
    rms = lambda x: math.sqrt(np.mean(x**2))  # noqa: E731
    assert s["effective_lr"]["min"] == pytest.approx(eff.min(), rel=1e-10)
    assert s["effective_lr"]["median"] == pytest.approx(np.median(eff), rel=1e-10)
    assert s["effective_lr"]["max"] == pytest.approx(eff.max(), rel=1e-10)
    assert s["m_hat_rms"] == pytest.approx(rms(m_hat), rel=1e-10)
    assert s["sqrt_v_hat_rms"] == pytest.approx(rms(sqrt_v), rel=1e-10)
    assert s["snr"] == pytest.approx(np.median(np.abs(m_hat) / sqrt_v), rel=1e-10)
    assert s["update_rms"] == pytest.approx(rms(update), rel=1e-10)
    phi = np.concatenate([p.reshape(-1) for p in params])
    assert s["update_to_param"] == pytest.approx(
        np.linalg.norm(update) / np.linalg.norm(phi), rel=1e-10
    )
    assert s["eps_dominated"] == pytest.approx(np.mean(sqrt_v < 1e-6))
    last_g = np.concatenate([g.reshape(-1) for g in grads])
    m = np.concatenate([st.m.reshape(-1) for st in states])
    assert s["momentum_agreement"] == pytest.approx(np.mean(np.sign(m) == np.sign(last_g)))


def test_rmsprop_and_sgd_quantities_match_the_reference():
    rng = np.random.default_rng(1)
    p0, g = rng.standard_normal(20), rng.standard_normal(20)
    w = torch.tensor(p0, requires_grad=True)
    opt = adamkit.RMSprop([w], lr=0.01, centered=True)
    hyper = ref_rmsprop.RMSpropHyper(lr=0.01, centered=True)
    w.grad = torch.tensor(g)
    opt.step()
    _, _, aux = ref_rmsprop.step(p0, g, ref_rmsprop.init(p0), hyper)
    (s,) = snapshot(opt)
    assert s["effective_lr"]["max"] == pytest.approx(aux.effective_lr.max(), rel=1e-10)
    assert s["update_rms"] == pytest.approx(math.sqrt(np.mean(aux.update**2)), rel=1e-10)
    assert "momentum_agreement" not in s  # no momentum buffer

    w = torch.tensor(p0, requires_grad=True)
    opt = adamkit.SGD([w], lr=0.1, momentum=0.9, nesterov=True)
    hyper_sgd = ref_sgd.SGDHyper(lr=0.1, momentum=0.9, nesterov=True)
    state = ref_sgd.init(p0)
    for _ in range(3):
        w.grad = torch.tensor(g)
        opt.step()
        _, state, aux = ref_sgd.step(p0, g, state, hyper_sgd)
    (s,) = snapshot(opt)
    assert set(s["effective_lr"].values()) == {0.1}
    assert s["update_rms"] == pytest.approx(math.sqrt(np.mean(aux.update**2)), rel=1e-12)
    assert s["momentum_rms"] == pytest.approx(math.sqrt(np.mean(state.buf**2)), rel=1e-12)
    assert s["momentum_agreement"] == 1.0  # constant gradient: the buffer points along it


def test_lion_snapshot_matches_reference_intermediates():
    # Lion's update α·sign(c) is recomputed from the stored m and the gradient still in .grad;
    # varied gradients so that c and g disagree in sign somewhere.
    rng = np.random.default_rng(2)
    p0 = rng.standard_normal(50)
    w = torch.tensor(p0, requires_grad=True)
    opt = adamkit.Lion([w], lr=0.01, betas=(0.6, 0.9), weight_decay=0.1)
    hyper = ref_lion.LionHyper(lr=0.01, beta1=0.6, beta2=0.9, weight_decay=0.1)
    param, state = p0, ref_lion.init(p0)
    for _ in range(4):
        g = rng.standard_normal(50)
        w.grad = torch.tensor(g)
        opt.step()
        param, state, aux = ref_lion.step(param, g, state, hyper)
    (s,) = snapshot(opt)
    assert s["step"] == 4 and set(s["effective_lr"].values()) == {0.01}
    # every |update| is α: compare the signs element by element
    e = group_elements("lion", opt.param_groups[0], opt.state, steps_taken=4)
    np.testing.assert_array_equal(e.update.numpy(), aux.update)
    assert s["momentum_rms"] == pytest.approx(math.sqrt(np.mean(state.m**2)), rel=1e-12)
    agreement = np.mean(np.sign(state.m) == np.sign(g))
    assert 0 < agreement < 1 and s["momentum_agreement"] == pytest.approx(agreement)
    assert "sqrt_v_rms" not in s and "sqrt_v_hat_rms" not in s  # Lion has no scale


def test_ademamix_snapshot_matches_reference_intermediates():
    # Mid-warmup (α_t and β3_t still moving), with the decay excluded from the update as for
    # the other algorithms: m̂ is the mixed numerator m̂1 + α_t·m2, beside the slow EMA alone.
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal(64)
    kw = dict(lr=0.01, betas=(0.8, 0.99, 0.999), alpha=4.0, t_alpha=10, t_beta3=10)
    w = torch.tensor(p0, requires_grad=True)
    opt = adamkit.AdEMAMix([w], **kw, weight_decay=0.1)
    hyper = ref_ademamix.AdEMAMixHyper(
        lr=0.01, beta1=0.8, beta2=0.99, beta3=0.999, alpha=4.0, t_alpha=10, t_beta3=10,
        weight_decay=0.1,
    )  # fmt: skip
    param, state = p0, ref_ademamix.init(p0)
    for _ in range(4):
        g = rng.standard_normal(64)
        w.grad = torch.tensor(g)
        opt.step()
        param, state, aux = ref_ademamix.step(param, g, state, hyper)
    (s,) = snapshot(opt)
    mixed = aux.m1_hat + aux.alpha * aux.m2
    assert s["step"] == 4 and aux.alpha == pytest.approx(1.6)  # α_t = 4·4/10
    assert s["m_hat_rms"] == pytest.approx(math.sqrt(np.mean(mixed**2)), rel=1e-12)
    assert s["sqrt_v_hat_rms"] == pytest.approx(math.sqrt(np.mean(aux.sqrt_v_hat**2)), rel=1e-12)
    assert s["slow_ema_rms"] == pytest.approx(math.sqrt(np.mean(aux.m2**2)), rel=1e-12)
    assert s["update_rms"] == pytest.approx(math.sqrt(np.mean(aux.update**2)), rel=1e-10)
    # every quantity the Recorder's columns name is there (nested stats folded)
    assert set(s) == {"step", *(q.split(".")[0] for q in QUANTITIES["ademamix"])}


def test_plain_sgd_has_no_state_but_has_an_update():
    w = torch.ones(4, requires_grad=True)
    opt = adamkit.SGD([w], lr=0.5)
    w.grad = torch.tensor([1.0, -1.0, 2.0, 0.0])
    opt.step()
    (s,) = snapshot(opt)
    assert s["update_rms"] == pytest.approx(0.5 * math.sqrt(6 / 4))


def test_torch_optimizers_work_too_and_agree():
    results = []
    for cls in (adamkit.Adam, torch.optim.Adam):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 3)
        opt = cls(model.parameters(), lr=0.01)
        model(torch.randn(8, 4)).square().sum().backward()
        opt.step()
        results.append(snapshot(opt))
    assert results[0][0].keys() == results[1][0].keys()
    for key in ("m_hat_rms", "sqrt_v_hat_rms", "update_rms"):
        assert results[0][0][key] == pytest.approx(results[1][0][key], rel=1e-5)


def test_per_param_uses_names_and_groups_before_a_step_are_empty():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    opt = adamkit.Adam(model.named_parameters())
    assert snapshot(opt) == [{}]
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    per = snapshot(opt, per_param=True)
    assert list(per) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert all(v["step"] == 1 for v in per.values())


def test_large_groups_are_sampled_and_close_to_exact():
    torch.manual_seed(0)
    w = torch.zeros(300, 400, requires_grad=True)
    opt = adamkit.Adam([w])
    w.grad = torch.randn(300, 400) * torch.logspace(-3, 1, 400)  # scale varies by column
    opt.step()
    (exact,) = snapshot(opt, max_elements=10**6)
    (sampled,) = snapshot(opt, max_elements=4096)
    assert sampled["effective_lr"]["median"] == pytest.approx(
        exact["effective_lr"]["median"], rel=0.1
    )
    assert sampled["sqrt_v_hat_rms"] == pytest.approx(exact["sqrt_v_hat_rms"], rel=0.1)


def test_unsupported_optimizer_is_named():
    opt = torch.optim.Adagrad([torch.zeros(1, requires_grad=True)])
    with pytest.raises(TypeError, match="Adagrad"):
        snapshot(opt)


def test_sampled_group_whose_params_have_different_step_counts():
    # Blocks round a tensor's share down (a share of 1,562 elements gives one 1,024-element
    # block), so per-tensor values (the bias corrections of different step counts) must be
    # repeated by what each tensor gave, not by its share.
    torch.manual_seed(1)
    a, b = torch.zeros(3000, requires_grad=True), torch.zeros(5000, requires_grad=True)
    opt = adamkit.Adam([a, b])
    for t in range(4):
        a.grad = torch.randn(3000)
        b.grad = torch.randn(5000) if t >= 2 else None  # b starts two steps later
        opt.step()
    (got,) = snapshot(opt, max_elements=2500)
    expected = []
    for p in (a, b):
        st = opt.state[p]
        share = round(p.numel() * 2500 / 8000)
        layout = _sampling.blocks(p.numel(), share)
        m = st["exp_avg"].double()[: layout.count * layout.length]  # one block from 0
        expected.append(m / (1 - 0.9 ** st["step"].item()))
    m_hat = torch.cat(expected)
    assert len(m_hat) == 938 + 1024
    assert got["m_hat_rms"] == pytest.approx(m_hat.square().mean().sqrt().item(), rel=1e-12)


def _family_reference(name):
    from adamkit.reference import adamax as ref_adamax
    from adamkit.reference import nadam as ref_nadam
    from adamkit.reference import radam as ref_radam

    return {
        "NAdam": (adamkit.NAdam, ref_nadam, ref_nadam.NAdamHyper(lr=0.02)),
        "RAdam": (adamkit.RAdam, ref_radam, ref_radam.RAdamHyper(lr=0.02)),
        "Adamax": (adamkit.Adamax, ref_adamax, ref_adamax.AdamaxHyper(lr=0.02)),
    }[name]


@pytest.mark.parametrize("name", ["NAdam", "RAdam", "Adamax"])
def test_spec_family_snapshot_matches_reference_intermediates(name):
    # The diagnostics of the spec-built optimizers come from their specs' intermediates; the
    # NumPy reference computes the same step its own way.
    cls, ref, hyper = _family_reference(name)
    rng = np.random.default_rng(1)
    shapes = [(6, 5), (11,)]
    params = [rng.standard_normal(s) for s in shapes]
    ws = [torch.tensor(p, requires_grad=True) for p in params]
    opt = cls(ws, lr=0.02)
    states = [ref.init(p) for p in params]
    for _ in range(9):  # RAdam's adaptive step is on from step 6
        auxes = []
        for i, s in enumerate(shapes):
            g = rng.standard_normal(s)
            ws[i].grad = torch.tensor(g)
            params[i], states[i], aux = ref.step(params[i], g, states[i], hyper)
            auxes.append(aux)
        opt.step()
    (s,) = snapshot(opt)
    cat = lambda parts: np.concatenate([np.asarray(x).reshape(-1) for x in parts])  # noqa: E731
    update = cat(a.update for a in auxes)
    if name == "NAdam":
        scale = cat(np.sqrt(a.v_hat) for a in auxes)
        eff = cat(hyper.lr / a.denom for a in auxes)
    elif name == "RAdam":
        assert all(a.rectified for a in auxes)
        scale = cat(np.sqrt(st.v) for st in states)
        eff = update / cat(a.m_hat for a in auxes)
    else:
        scale = cat(st.u for st in states)
        eff = hyper.lr / scale
    rms = lambda x: float(np.sqrt(np.mean(np.square(x))))  # noqa: E731
    assert s["step"] == 9
    assert s["update_rms"] == pytest.approx(rms(update), rel=1e-9)
    assert s["sqrt_v_hat_rms"] == pytest.approx(rms(scale), rel=1e-9)
    assert s["effective_lr"]["median"] == pytest.approx(float(np.median(eff)), rel=1e-9)
    assert s["effective_lr"]["max"] == pytest.approx(float(eff.max()), rel=1e-9)


def test_schedule_free_snapshot_matches_reference_intermediates():
    # Mid-warmup, so the averaging weight c and the warmed-up lr still move.
    rng = np.random.default_rng(4)
    p0 = rng.standard_normal(40)
    w = torch.tensor(p0, requires_grad=True)
    opt = adamkit.ScheduleFreeAdamW([w], lr=0.05, warmup_steps=6, r=1.0)
    opt.train()
    hyper = ref_schedule_free.ScheduleFreeHyper(lr=0.05, warmup_steps=6, r=1.0)
    param, state = p0, ref_schedule_free.init(p0)
    for _ in range(4):
        g = rng.standard_normal(40)
        w.grad = torch.tensor(g)
        opt.step()
        param, state, aux = ref_schedule_free.step(param, g, state, hyper)
    (s,) = snapshot(opt)
    assert s["averaging_weight"] == pytest.approx(aux.c, rel=1e-15) and 0 < aux.c < 1
    assert s["scheduled_lr"] == pytest.approx(aux.lr, rel=1e-15) and aux.lr < 0.05
    sqrt_v_hat = aux.denom - hyper.eps
    assert s["sqrt_v_hat_rms"] == pytest.approx(math.sqrt(np.mean(sqrt_v_hat**2)), rel=1e-9)
    step_of_z = aux.lr * aux.normalized_grad  # (no weight decay here)
    assert s["update_rms"] == pytest.approx(math.sqrt(np.mean(step_of_z**2)), rel=1e-9)
    assert "m_hat_rms" not in s and "momentum_rms" not in s  # no momentum buffer
    assert set(s) == {"step", *(q.split(".")[0] for q in QUANTITIES["schedule_free_adamw"])}


def test_a_snapshot_runs_on_one_thread_and_restores_the_count(monkeypatch):
    """On a loaded machine each of a snapshot's small parallel torch ops waited for a
    descheduled thread (Recorder(every=1): 60-107 ms a step): it runs on one thread."""
    module = importlib.import_module("adamkit.diagnostics.snapshot")
    seen = []
    real = module.summarize
    monkeypatch.setattr(
        module, "summarize", lambda e: seen.append(torch.get_num_threads()) or real(e)
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        w = torch.nn.Parameter(torch.randn(5))
        opt = adamkit.Adam([w])
        w.grad = torch.randn(5)
        opt.step()
        assert snapshot(opt)[0]["step"] == 1 and seen == [1]
        assert torch.get_num_threads() == 2
        with pytest.raises(TypeError):
            snapshot(torch.optim.Adagrad([w]))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
