"""The Triton kernels against the for-loop kernel: on CPU tensors under Triton's interpreter
(CI), or compiled on CUDA tensors with ADAMKIT_TRITON_COMPILED=1 on a GPU machine."""

from __future__ import annotations

import os

import pytest
import torch

import adamkit

pytest.importorskip("triton")

from adamkit.algorithms import SPEC_BUILT, SPECS
from adamkit.algorithms import sgd as sgd_spec
from adamkit.kernels import registry, spec_kernels, triton_driver
from adamkit.optim._base import _adapted_kernel
from harness import assert_all_close_to_scale, grad_plan, run_optimizer
from specs import ALL_CONFIGS, ALL_IDS, make_params

COMPILED = os.environ.get("ADAMKIT_TRITON_COMPILED") == "1"
if COMPILED and not torch.cuda.is_available():
    pytest.skip("ADAMKIT_TRITON_COMPILED=1 needs a CUDA device", allow_module_level=True)
if not COMPILED and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("set TRITON_INTERPRET=1 (tests/conftest.py does)", allow_module_level=True)
DEVICE = "cuda" if COMPILED else "cpu"


class _LaunchCounter:
    def __init__(self, kernel):
        self.kernel, self.grids = kernel, []

    def __getitem__(self, grid):
        self.grids.append(grid)
        return self.kernel[grid]


@pytest.fixture
def triton_as_fused(monkeypatch):
    """Route the optimizers' fused backend to the Triton kernels on this device, and count
    their launches (so a test cannot pass on another kernel by mistake)."""
    # "fused" means the Triton backend on this device, for every algorithm.
    monkeypatch.setattr(registry, "fused_name", lambda device_type: "triton")
    registry.resolve.cache_clear()
    # Every algorithm's kernel: the generic Triton driver.
    spec_counter = _LaunchCounter(triton_driver._spec_kernel)
    monkeypatch.setattr(triton_driver, "_spec_kernel", spec_counter)
    counters = dict.fromkeys(SPEC_BUILT, spec_counter)
    _adapted_kernel.cache_clear()  # optimizers cache their kernel per device
    yield counters
    _adapted_kernel.cache_clear()
    registry.resolve.cache_clear()


def _on_device(params):
    return [p.to(DEVICE) for p in params]


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_optimizers_on_triton_match_the_forloop_kernel(triton_as_fused, spec, config, dtype):
    gen = torch.Generator().manual_seed(4)
    params0 = _on_device(make_params(dtype, gen))  # odd sizes, empty, scalar, complex
    plan = [
        [None if g is None else g.to(DEVICE) for g in step] for step in grad_plan(params0, 6, 1)
    ]
    config = {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in config.items()}
    ours, o_ours = run_optimizer(spec.ours, params0, config, plan)
    assert triton_as_fused[spec.ours.algorithm].grids  # the Triton kernel really ran
    loop, o_loop = run_optimizer(spec.ours, params0, config, plan, foreach=False)
    # One rounding per stored value here, one per op in the for-loop kernel.
    rtol = 1e-12 if dtype == torch.float64 else 2e-5
    assert_all_close_to_scale(ours, loop, o_ours, o_loop, rtol=rtol)


def _spec_step(name, backend, params, grads, states, steps, group, **amp):
    """One step of spec ``name``'s Triton kernel or its for-loop kernel (torch's own)."""
    if backend == "triton":
        kernel = triton_driver.kernel(SPECS[name])
    else:
        kernel = spec_kernels.kernel(name, "forloop", "cpu")
    kernel(params, grads, *states, steps, [], group=group, **amp)


SGD_GROUP = dict(lr=0.1, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=True,
                 maximize=False)  # fmt: skip
RMSPROP_GROUP = dict(lr=0.01, alpha=0.9, eps=1e-8, weight_decay=0.0, momentum=0.0,
                     centered=True, maximize=False)  # fmt: skip


@pytest.mark.parametrize("algorithm", ["adam", "sgd", "rmsprop"])
def test_many_tensors_take_one_launch(monkeypatch, algorithm):
    counter = _LaunchCounter(triton_driver._spec_kernel)
    monkeypatch.setattr(triton_driver, "_spec_kernel", counter)
    gen = torch.Generator().manual_seed(0)
    sizes = [int(n) for n in torch.randint(1, 300, (200,), generator=gen)]
    ps = [torch.randn(n, generator=gen).to(DEVICE) for n in sizes]
    gs = [torch.randn(n, generator=gen).to(DEVICE) for n in sizes]
    expected = [p.clone() for p in ps]
    zeros = lambda: [torch.zeros_like(p) for p in ps]  # noqa: E731
    if algorithm == "sgd":  # SGD's markers: every buffer starts now
        steps = loop_steps = [sgd_spec.FIRST] * len(ps)
        group = SGD_GROUP
        states, loop_states = [zeros()], [zeros()]
    else:  # the spec kernels count their steps: from 0
        loop_steps = [torch.tensor(0.0, dtype=torch.float64) for _ in ps]
        steps = [torch.tensor(0.0, dtype=torch.float64) for _ in ps]
        group = RMSPROP_GROUP if algorithm == "rmsprop" else {**ADAM_GROUP, "amsgrad": False}
        states, loop_states = [zeros(), zeros(), []], [zeros(), zeros(), []]
    _spec_step(algorithm, "triton", ps, gs, states, steps, group)
    _spec_step(algorithm, "forloop", expected, gs, loop_states, loop_steps, group)
    block = triton_driver.BLOCK
    assert counter.grids == [(sum((n + block - 1) // block for n in sizes),)]
    for p, e in zip(ps, expected, strict=True):
        torch.testing.assert_close(p, e, rtol=1e-5, atol=1e-6)


ADAM_GROUP = dict(lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
                  decoupled_weight_decay=True, amsgrad=True, maximize=False)  # fmt: skip


def test_grad_scaler_found_inf_changes_nothing():
    gen = torch.Generator().manual_seed(1)
    p = torch.randn(3000, generator=gen).to(DEVICE)
    m, v, vmax = (torch.rand(3000, generator=gen).to(DEVICE) for _ in range(3))
    before = [t.clone() for t in (p, m, v, vmax)]
    g = torch.full((3000,), float("inf"), device=DEVICE)
    steps = [torch.tensor(5.0, dtype=torch.float64)]
    found = torch.ones((), device=DEVICE)
    scale = torch.full((), 1024.0, device=DEVICE)
    amp = dict(grad_scale=scale, found_inf=found)
    _spec_step("adam", "triton", [p], [g], [[m], [v], [vmax]], steps, ADAM_GROUP, **amp)
    for a, b in zip((p, m, v, vmax), before, strict=True):
        assert torch.equal(a, b)
    assert steps[0].item() == 5.0  # not counted


@pytest.mark.parametrize("algorithm", ["adam", "sgd", "rmsprop"])
def test_grad_scale_unscales_inside_the_kernel(algorithm):
    gen = torch.Generator().manual_seed(2)
    p0 = torch.randn(1500, generator=gen, dtype=torch.float64).to(DEVICE)
    g = torch.randn(1500, generator=gen, dtype=torch.float64).to(DEVICE)
    scale = torch.full((), 2.0**14, device=DEVICE)  # a power of two: unscaling is exact
    amp = dict(grad_scale=scale, found_inf=torch.zeros((), device=DEVICE))
    results = []
    for backend, grad, extra in (("triton", g * scale, amp), ("forloop", g, {})):
        p = p0.clone()
        state = [[torch.zeros_like(p)] for _ in range(3)]
        steps = [torch.tensor(1.0, dtype=torch.float64)]
        group = {
            "adam": ADAM_GROUP,
            "rmsprop": {**RMSPROP_GROUP, "momentum": 0.5, "alpha": 0.99},
            "sgd": {**SGD_GROUP, "weight_decay": 0.1, "nesterov": False, "maximize": True},
        }[algorithm]
        if algorithm == "sgd":
            steps, state = [sgd_spec.FIRST], state[:1]
        _spec_step(algorithm, backend, [p], [grad], state, steps, group, **extra)
        results.append(p)
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_params_with_float32_state_compute_in_float32(dtype):
    gen = torch.Generator().manual_seed(3)
    p32 = torch.randn(2000, generator=gen).to(dtype).float().to(DEVICE)
    g32 = torch.randn(2000, generator=gen).to(dtype).float().to(DEVICE)
    g32[:100] = 0.0  # ε underflows in half: the for-loop kernel would give 0/0 here
    p_half, m, v = p32.to(dtype), torch.zeros_like(p32), torch.zeros_like(p32)
    steps = [torch.tensor(0.0, dtype=torch.float64)]
    state = [[m], [v], [torch.zeros_like(p32)]]
    _spec_step("adam", "triton", [p_half], [g32.to(dtype)], state, steps, ADAM_GROUP)
    expected, m_exp, v_exp = p32.clone(), torch.zeros_like(p32), torch.zeros_like(p32)
    loop_steps = [torch.tensor(0.0, dtype=torch.float64)]
    loop_state = [[m_exp], [v_exp], [torch.zeros_like(p32)]]
    _spec_step("adam", "forloop", [expected], [g32], loop_state, loop_steps, ADAM_GROUP)
    assert p_half.isfinite().all() and m.dtype == torch.float32
    # float32 results that round to neighbouring half values: at most one half ulp apart
    ulp = torch.finfo(dtype).eps
    torch.testing.assert_close(p_half.float(), expected.to(dtype).float(), rtol=ulp, atol=0)
    torch.testing.assert_close(v, v_exp, rtol=1e-6, atol=0)


def test_non_contiguous_tensors_take_the_forloop_path():
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(40, 30, generator=gen).to(DEVICE)
    p = base.t()  # non-contiguous
    g = torch.randn(30, 40, generator=gen).to(DEVICE)
    expected = p.clone()
    zeros = lambda: [[torch.zeros_like(p)] for _ in range(3)]  # noqa: E731
    steps = lambda: [torch.tensor(0.0, dtype=torch.float64)]  # noqa: E731
    _spec_step("adam", "triton", [p], [g], zeros(), steps(), ADAM_GROUP)
    _spec_step("adam", "forloop", [expected], [g], zeros(), steps(), ADAM_GROUP)
    torch.testing.assert_close(p, expected, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_optimizer_uses_triton_with_grad_scaler_and_fp32_state():
    import adamkit

    model = torch.nn.Linear(64, 64).cuda().to(torch.bfloat16)
    opt = adamkit.Adam(model.parameters(), lr=1e-3)
    assert opt._step_supports_amp_scaling
    scaler = torch.amp.GradScaler("cuda")
    x = torch.randn(8, 64, device="cuda", dtype=torch.bfloat16)
    scaler.scale(model(x).float().square().mean()).backward()
    scaler.step(opt)
    scaler.update()
    state = opt.state[model.weight]
    assert state["exp_avg"].dtype == torch.float32 and state["step"].item() == 1


@pytest.mark.parametrize("algorithm", ["adam", "sgd", "rmsprop"])
def test_conjugated_and_negative_bit_grads_are_read_as_their_values(triton_as_fused, algorithm):
    # The launches read grads by address; memory of a lazily conjugated (or negated) tensor
    # holds other values than it means. They must be resolved first.
    import adamkit

    cls = {"adam": adamkit.Adam, "sgd": adamkit.SGD, "rmsprop": adamkit.RMSprop}[algorithm]
    config = {"momentum": 0.9} if algorithm == "sgd" else {}
    gen = torch.Generator().manual_seed(6)
    p0 = torch.randn(37, dtype=torch.complex64, generator=gen).to(DEVICE)
    r0 = torch.randn(37, generator=gen).to(DEVICE)
    g = torch.randn(37, dtype=torch.complex64, generator=gen).to(DEVICE)
    results = []
    for lazy in (True, False):
        p, r = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(r0.clone())
        opt = cls([p, r], lr=0.1, **config)
        for _ in range(2):
            p.grad = g.conj() if lazy else g.conj().resolve_conj()
            r.grad = g.conj().imag if lazy else g.conj().imag.resolve_neg()
            assert p.grad.is_conj() == lazy and r.grad.is_neg() == lazy
            opt.step()
        results.append((p.detach(), r.detach()))
    assert triton_as_fused[algorithm].grids  # the Triton launches ran
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", SPEC_BUILT)
def test_spec_driver_with_grad_scaler(triton_as_fused, name):
    # GradScaler hands the spec optimizers' Triton kernel grad_scale/found_inf, as Adam's:
    # gradients are unscaled inside the kernel, and a step with an Inf changes nothing
    # (params, state, the step counters and NAdam's mu_product).
    import adamkit

    cls = getattr(adamkit, SPECS[name].torch_name)
    extra = {"momentum": 0.9} if name == "sgd" else {}  # SGD's state: its momentum buffer
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 8, generator=gen, device=DEVICE)
    results = []
    for scaled in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Linear(8, 1).to(DEVICE)
        opt = cls(model.parameters(), lr=0.01, **extra)
        getattr(opt, "train", lambda: None)()  # (Schedule-Free starts in eval mode)
        assert opt._step_supports_amp_scaling  # the kernel unscales: GradScaler does not
        scaler = torch.amp.GradScaler(DEVICE, init_scale=2.0**10, enabled=scaled)
        for _ in range(3):
            opt.zero_grad()
            scaler.scale(model(x).square().mean()).backward()
            scaler.step(opt)
            scaler.update()
        results.append([p.detach().clone() for p in model.parameters()])
        if scaled:
            before = {k: v.clone() for k, v in opt.state[model.weight].items()}
            group_before = {k: opt.param_groups[0][k] for k, _ in SPECS[name].group_state}
            w = model.weight.detach().clone()
            opt.zero_grad()
            scaler.scale(model(x * float("inf")).square().mean()).backward()
            scaler.step(opt)  # found an Inf: skipped
            assert torch.equal(model.weight.detach(), w)
            for key, value in opt.state[model.weight].items():
                assert torch.equal(value, before[key]), key
            for key, value in group_before.items():  # (Schedule-Free's count and average)
                assert opt.param_groups[0][key] == value, key
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_param_listed_twice_is_stepped_twice(triton_as_fused):
    """As torch.optim does (and the other kernels): one step after the other, each reading
    the state the first wrote, the counter moved twice."""
    w0 = torch.randn(300, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    results = []
    for flags in ({"fused": True}, {"foreach": False}):
        w = torch.nn.Parameter(w0.clone().to(DEVICE))
        opt = adamkit.AdamW([w, w], lr=0.01, **flags)
        for t in range(3):
            w.grad = torch.full_like(w, t + 1.0)
            opt.step()
        assert opt.state[w]["step"].item() == 6
        results.append(w.detach().cpu())
    assert triton_as_fused["adam"].grids  # the Triton kernel ran
    torch.testing.assert_close(results[0], results[1], rtol=1e-12, atol=1e-12)
