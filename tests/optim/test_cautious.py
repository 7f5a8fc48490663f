"""``cautious=True`` (timm's masking, written once per driver) on every optimizer that takes
it: every kernel against the NumPy reference's ``cautious`` flag (itself checked against timm
in tests/reference/test_variants_vs_peers.py), the threads' partial sums, timm's optimizers
themselves, checkpoints and refusals."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import adamkit
from adamkit.kernels import _threads, registry
from adamkit.optim._base import _adapted_kernel
from harness import grad_plan, reference_close, run_optimizer, run_reference, timm_module
from specs import CAUTIOUS_SPECS, make_params

CASES = [(spec, config) for spec in CAUTIOUS_SPECS for config in spec.configs]
IDS = [i for spec in CAUTIOUS_SPECS for i in spec.config_ids()]
BACKENDS = {
    "forloop": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
    "triton": {"fused": True},
}


@pytest.fixture
def backend_flags(request, monkeypatch):
    """The optimizer flags of a backend; "triton" routes fused to the Triton driver (under
    TRITON_INTERPRET=1, which tests/conftest.py sets)."""
    name = request.param
    if name == "triton":
        pytest.importorskip("triton")
        monkeypatch.setattr(registry, "fused_name", lambda device_type: "triton")
        registry.resolve.cache_clear()
        _adapted_kernel.cache_clear()
    yield BACKENDS[name]
    if name == "triton":
        registry.resolve.cache_clear()
        _adapted_kernel.cache_clear()


def test_every_optimizer_the_issue_names_takes_cautious():
    names = {spec.ours.__name__ for spec in CAUTIOUS_SPECS}
    assert names == {"Adam", "AdamW", "NAdam", "RAdam", "Adamax", "Lion", "AdEMAMix", "ADOPT"}


@pytest.mark.parametrize("backend_flags", list(BACKENDS), indirect=True)
@pytest.mark.parametrize(("spec", "config"), CASES, ids=IDS)
def test_kernels_match_the_reference_float64(spec, config, backend_flags):
    gen = torch.Generator().manual_seed(3)
    params0 = make_params(torch.float64, gen)  # odd sizes, empty, scalar, complex
    plan = grad_plan(params0, 7, seed=5)
    params, _ = run_optimizer(spec.ours, params0, config, plan, **backend_flags)
    expected, _ = run_reference(spec, params0, config, plan)
    for i, (p, want) in enumerate(zip(params, expected, strict=True)):
        reference_close(p, want, rtol=1e-12, atol=1e-12, what=f"param {i}")


@pytest.mark.parametrize("spec", CAUTIOUS_SPECS, ids=lambda s: s.name)
def test_the_mask_changes_the_step(spec):
    """A check that cannot pass by ignoring the option: with it the params differ from the
    same run without it, by far more than rounding."""
    gen = torch.Generator().manual_seed(4)
    params0 = [torch.randn(513, generator=gen, dtype=torch.float64)]
    plan = grad_plan(params0, 5, seed=6)
    on, _ = run_optimizer(spec.ours, params0, {"cautious": True}, plan, fused=True)
    off, _ = run_optimizer(spec.ours, params0, {}, plan, fused=True)
    assert (on[0] - off[0]).abs().max() > 1e-6


@pytest.mark.parametrize("spec", CAUTIOUS_SPECS, ids=lambda s: s.name)
def test_threads_partial_sums_give_the_serial_result(spec, monkeypatch):
    """Tensors split across threads (the parallel loops' pass before the update adds each
    thread's partial counts) step as the for-loop kernel steps them."""
    monkeypatch.setattr(_threads.Threads, "SMALL_WORK", 0)  # every launch parallel
    monkeypatch.setattr(_threads.Threads, "contended_until", 0.0)
    parallel = []
    launch = _threads.Threads.launch.__func__

    def counted(cls, parallel_loop, serial, tables, args, work=0):
        parallel.append(len(tables.bounds) > 2 and cls.usable)
        launch(cls, parallel_loop, serial, tables, args, work)

    monkeypatch.setattr(_threads.Threads, "launch", classmethod(counted))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        gen = torch.Generator().manual_seed(7)
        params0 = [torch.randn(n, generator=gen, dtype=torch.float64) for n in (70001, 3, 40000)]
        plan = grad_plan(params0, 4, seed=8)
        fused, _ = run_optimizer(spec.ours, params0, {"cautious": True}, plan, fused=True)
        loop, _ = run_optimizer(spec.ours, params0, {"cautious": True}, plan, foreach=False)
    finally:
        torch.set_num_threads(threads)
    if not any(parallel):
        pytest.skip("numba's threading layer runs one thread here")
    for a, b in zip(fused, loop, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", CAUTIOUS_SPECS, ids=lambda s: s.name)
def test_float32_fused_matches_the_torch_ops_kernel(spec):
    gen = torch.Generator().manual_seed(9)
    params0 = make_params(torch.float32, gen)
    plan = grad_plan(params0, 6, seed=10)
    fused, _ = run_optimizer(spec.ours, params0, {"cautious": True}, plan, fused=True)
    loop, _ = run_optimizer(spec.ours, params0, {"cautious": True}, plan, foreach=False)
    for a, b in zip(fused, loop, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("ours", "module", "theirs", "config"),
    [
        (adamkit.AdamW, "adamw", "AdamWLegacy", {"lr": 1e-2, "weight_decay": 0.1}),
        (adamkit.Lion, "lion", "Lion", {"lr": 1e-3, "weight_decay": 0.5}),
    ],
    ids=["AdamW", "Lion"],
)
def test_default_kernel_trains_as_timms_caution(ours, module, theirs, config):
    peer = getattr(timm_module(module), theirs)
    gen = torch.Generator().manual_seed(12)
    a = [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in (1031, 7, 300)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    opt_a = ours(a, cautious=True, **config)
    opt_b = peer(b, caution=True, foreach=False, **config)
    for _ in range(6):
        for p, q in zip(a, b, strict=True):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g.clone(), g.clone()
        opt_a.step()
        opt_b.step()
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_checkpoint_keeps_the_option_and_resumes_bitwise():
    gen = torch.Generator().manual_seed(13)
    w = torch.nn.Parameter(torch.randn(600, generator=gen))
    opt = adamkit.AdamW([w], lr=1e-2, cautious=True)
    grads = [torch.randn(600, generator=gen) for _ in range(6)]
    for g in grads[:3]:
        w.grad = g.clone()
        opt.step()
    saved = copy.deepcopy(opt.state_dict())  # (state_dict() holds the live state tensors)
    assert saved["param_groups"][0]["cautious"] is True
    w2 = torch.nn.Parameter(w.detach().clone())
    resumed = adamkit.AdamW([w2], lr=1e-2)  # the option comes with the checkpoint
    resumed.load_state_dict(saved)
    for g in grads[3:]:
        w.grad, w2.grad = g.clone(), g.clone()
        opt.step()
        resumed.step()
    assert torch.equal(w, w2)


def test_groups_stay_torchs_without_the_option_and_torch_loads_them():
    w = torch.nn.Parameter(torch.randn(8))
    plain = adamkit.AdamW([w])
    assert "cautious" not in plain.param_groups[0]
    opt = adamkit.AdamW([w], cautious=True)
    w.grad = torch.ones(8)
    opt.step()
    torch_opt = torch.optim.AdamW([torch.nn.Parameter(w.detach().clone())])
    torch_opt.load_state_dict(opt.state_dict())  # torch keeps the key, and ignores it


def test_a_group_can_turn_it_on_alone():
    gen = torch.Generator().manual_seed(14)
    a, b = (torch.nn.Parameter(torch.randn(300, generator=gen, dtype=torch.float64)) for _ in "ab")
    opt = adamkit.Adam([{"params": [a], "cautious": True}, {"params": [b]}], lr=0.1)
    ref = adamkit.Adam(
        [{"params": [a.detach().clone().requires_grad_()], "cautious": True}], lr=0.1
    )
    plain = adamkit.Adam([b.detach().clone().requires_grad_()], lr=0.1)
    for _ in range(3):
        g = torch.randn(300, generator=gen, dtype=torch.float64)
        for p in (a, b, ref.param_groups[0]["params"][0], plain.param_groups[0]["params"][0]):
            p.grad = g.clone()
        for o in (opt, ref, plain):
            o.step()
    assert torch.equal(a, ref.param_groups[0]["params"][0])
    assert torch.equal(b, plain.param_groups[0]["params"][0])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda w: adamkit.AdamW([w], cautious="yes"), "cautious must be True or False"),
        (lambda w: adamkit.RMSprop([{"params": [w], "cautious": True}]), "does not take"),
        (lambda w: adamkit.SGD([{"params": [w], "cautious": True}]), "does not take"),
        (lambda w: adamkit.Adam([w], cautious=True, differentiable=True), "differentiable"),
    ],
    ids=["not-a-bool", "rmsprop", "sgd", "differentiable"],
)
def test_bad_options_are_refused_with_what_is_accepted(make, message):
    with pytest.raises(ValueError, match=message):
        make(torch.nn.Parameter(torch.randn(4)))


def test_turning_it_on_mid_run_with_a_bad_value_changes_nothing():
    w = torch.nn.Parameter(torch.randn(64))
    opt = adamkit.AdamW([w])
    w.grad = torch.randn(64)
    opt.step()
    before = (w.detach().clone(), opt.state[w]["exp_avg"].clone())
    opt.param_groups[0]["cautious"] = 1
    with pytest.raises(ValueError, match="cautious must be True or False"):
        opt.step()
    assert torch.equal(w, before[0]) and torch.equal(opt.state[w]["exp_avg"], before[1])


def test_empty_and_fully_masked_tensors():
    """Nothing to mask in an empty tensor; a tensor where every coordinate disagrees only
    decays (the floor keeps the scale finite)."""
    w = torch.nn.Parameter(torch.ones(5, dtype=torch.float64))
    e = torch.nn.Parameter(torch.zeros(0, dtype=torch.float64))
    opt = adamkit.AdamW([w, e], lr=0.1, weight_decay=0.5, cautious=True)
    w.grad, e.grad = torch.ones(5, dtype=torch.float64), torch.zeros(0, dtype=torch.float64)
    opt.step()
    w.grad = -torch.ones(5, dtype=torch.float64) * 1e-3  # m still > 0: u·g < 0 everywhere
    expected = w.detach() * (1 - 0.1 * 0.5)
    opt.step()
    np.testing.assert_allclose(w.detach().numpy(), expected.numpy(), rtol=1e-15)
