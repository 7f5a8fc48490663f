"""Textbook properties of the algorithms, on the NumPy reference and on the torch optimizers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import adamkit
from adamkit.reference import adam, rmsprop, run, sgd

BETAS = [(0.0, 0.0), (0.9, 0.999), (0.5, 0.1), (0.99, 0.9999)]


@pytest.mark.parametrize(("beta1", "beta2"), BETAS)
def test_first_adam_step_is_lr_g_over_abs_g_plus_eps(beta1, beta2):
    rng = np.random.default_rng(0)
    g = rng.standard_normal(50) * 10.0 ** rng.uniform(-3, 2, 50)
    hyper = adam.AdamHyper(lr=0.05, beta1=beta1, beta2=beta2, eps=1e-3)
    param, _, aux = adam.step(np.zeros(50), g, adam.init(np.zeros(50)), hyper)
    np.testing.assert_allclose(param, -0.05 * g / (np.abs(g) + 1e-3), rtol=1e-13)
    np.testing.assert_allclose(aux.effective_lr, 0.05 / (np.abs(g) + 1e-3), rtol=1e-13)


@pytest.mark.parametrize(("beta1", "beta2"), BETAS)
def test_first_adam_step_torch(beta1, beta2):
    g = torch.tensor([3.0, -0.25, 1e-2, 70.0], dtype=torch.float64)
    w = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = adamkit.Adam([w], lr=0.1, betas=(beta1, beta2), eps=1e-8)
    w.grad = g.clone()
    opt.step()
    torch.testing.assert_close(w.detach(), -0.1 * g / (g.abs() + 1e-8), rtol=1e-14, atol=0)


def test_constant_gradient_gives_constant_steps():
    g = np.array([2.0, -0.5, 1e-3])
    hyper = adam.AdamHyper(lr=0.01, eps=0.0)
    param, state = np.zeros(3), adam.init(np.zeros(3))
    updates = []
    for _ in range(30):
        param, state, aux = adam.step(param, g, state, hyper)
        updates.append(aux.update)
        # With a constant gradient m̂ = g and v̂ = g² exactly (up to rounding).
        np.testing.assert_allclose(aux.m_hat, g, rtol=1e-12)
        np.testing.assert_allclose(aux.v_hat, g * g, rtol=1e-12)
    np.testing.assert_allclose(np.array(updates), np.tile(0.01 * np.sign(g), (30, 1)), rtol=1e-12)


@pytest.mark.parametrize("scale", [1e-6, 1e-2, 3.0, 1e5])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_invariant_to_gradient_scale_when_eps_is_zero(scale, amsgrad):
    rng = np.random.default_rng(1)
    grads = rng.standard_normal((20, 8))
    hyper = adam.AdamHyper(lr=0.01, eps=0.0, amsgrad=amsgrad)
    p1 = p2 = rng.standard_normal(8)
    s1 = s2 = adam.init(p1)
    for g in grads:
        p1, s1, _ = adam.step(p1, g, s1, hyper)
        p2, s2, _ = adam.step(p2, scale * g, s2, hyper)
    np.testing.assert_allclose(p1, p2, rtol=1e-12, atol=1e-14)


def test_adam_scale_invariance_in_torch():
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(20, 16, generator=gen, dtype=torch.float64)
    results = []
    for scale in (1.0, 1e4):
        w = torch.zeros(16, dtype=torch.float64, requires_grad=True)
        opt = adamkit.Adam([w], lr=0.01, eps=0.0)
        for g in grads:
            w.grad = scale * g
            opt.step()
        results.append(w.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-14)


def test_momentum_buffer_is_geometric_sum_of_constant_gradient():
    hyper = sgd.SGDHyper(lr=0.1, momentum=0.9)
    param, state = np.zeros(1), sgd.init(np.zeros(1))
    for t in range(1, 11):
        param, state, _ = sgd.step(param, np.ones(1), state, hyper)
        np.testing.assert_allclose(state.buf, (1 - 0.9**t) / (1 - 0.9), rtol=1e-13)


def test_nesterov_looks_ahead():
    hyper = sgd.SGDHyper(lr=1.0, momentum=0.5, nesterov=True)
    _, _state, aux = sgd.step(np.zeros(1), np.ones(1), sgd.init(np.zeros(1)), hyper)
    np.testing.assert_allclose(aux.direction, [1.5])  # g + μ·b with b = g


def test_rmsprop_normalizes_by_root_mean_square():
    hyper = rmsprop.RMSpropHyper(lr=0.01, alpha=0.9, eps=0.0)
    param, state = np.zeros(2), rmsprop.init(np.zeros(2))
    for _ in range(200):
        param, state, aux = rmsprop.step(param, np.array([4.0, -0.01]), state, hyper)
    # v → g², so every step tends to lr·sign(g)
    np.testing.assert_allclose(aux.update, [0.01, -0.01], rtol=1e-8)


def test_centered_rmsprop_of_constant_gradient_grows_large_steps():
    hyper = rmsprop.RMSpropHyper(lr=0.01, alpha=0.9, eps=1e-8, centered=True)
    _, _state, aux = rmsprop.step(np.zeros(1), np.ones(1), rmsprop.init(np.zeros(1)), hyper)
    # v - ḡ² = 0.1 - 0.01 = 0.09: the variance estimate, not the second moment
    np.testing.assert_allclose(aux.denom, [0.3 + 1e-8], rtol=1e-12)


def test_run_skips_missing_gradients():
    hyper = adam.AdamHyper()
    params = [np.ones(2), np.ones(3)]
    states = [adam.init(p) for p in params]
    new_params, new_states, auxes = run(adam.step, params, [np.ones(2), None], states, hyper)
    assert new_params[1] is params[1] and new_states[1] is states[1] and auxes[1] is None
    assert new_states[0].step == 1


def test_reference_step_is_pure():
    param, grad = np.ones(3), np.full(3, 0.5)
    state = adam.init(param)
    adam.step(param, grad, state, adam.AdamHyper(weight_decay=0.1))
    assert np.all(param == 1) and np.all(grad == 0.5) and np.all(state.m == 0)


def test_decoupled_weight_decay_does_not_touch_moments():
    hyper = adam.AdamHyper(lr=0.1, weight_decay=0.5, decoupled=True)
    param, state, _ = adam.step(np.ones(2), np.zeros(2), adam.init(np.ones(2)), hyper)
    np.testing.assert_allclose(param, [0.95, 0.95])
    assert np.all(state.m == 0) and np.all(state.v == 0)
