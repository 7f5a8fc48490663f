"""The CUDA default follows the rule "a kernel becomes a device's default only after the parity
suite has passed on that device": until a GPU run has passed, CUDA tensors run torch's own
fastest kernel (torch's fused Adam/AdamW/SGD, torch's foreach order for the others, the torch
ops path for low-memory state), and adamkit's Triton kernels are opt-in
(``registry.set_default("cuda", "triton")`` or ``ADAMKIT_CUDA_KERNELS=triton``).

The choice is a pure function of the flags and the device type, so it is tested here without a
GPU; the glue to torch's fused kernels runs on CPU tensors (torch has CPU fused kernels too)
against ``torch.optim``'s ``fused=True``. The CUDA tests at the end run on a GPU machine
(``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import adamkit
from adamkit.algorithms import sgd as sgd_spec
from adamkit.kernels import lowbit, registry, torch_fused
from adamkit.optim import _base

pytestmark = pytest.mark.timeout(120)

TORCH_FUSED = ("adam", "sgd")
FOREACH = ("rmsprop", "nadam", "radam", "adamax")
CUDA = torch.cuda.is_available()


@pytest.fixture
def cuda_default():
    """Run with CUDA on its default (torch's kernels), whatever the environment says; put the
    setting back afterwards."""
    before = registry.get_default("cuda")
    registry.set_default("cuda", "torch")
    yield
    registry.set_default("cuda", before)


def _cuda_backend(algorithm: str, **flags) -> str:
    """The backend record that optimizers' kernel choice gives CUDA tensors (what
    ``KernelOptimizer._backend`` and ``_adapted_kernel`` resolve)."""
    flags = {"foreach": None, "fused": None, "differentiable": False, "capturable": False, **flags}
    backend, device_type = _base._backend(*flags.values(), False, "cuda")
    return registry.resolve(algorithm, backend, device_type).name


# ----------------------------------------------------------------- the choice (pure)


@pytest.mark.parametrize("algorithm", TORCH_FUSED)
def test_cuda_default_is_torchs_fused_kernel(cuda_default, algorithm):
    assert _cuda_backend(algorithm) == "torch_fused"
    assert _cuda_backend(algorithm, fused=True) == "torch_fused"  # fused=True: torch's too


@pytest.mark.parametrize("algorithm", FOREACH)
def test_cuda_default_without_a_torch_fused_kernel_is_foreach(cuda_default, algorithm):
    assert _cuda_backend(algorithm) == "foreach"
    assert _cuda_backend(algorithm, fused=True) == "foreach"


@pytest.mark.parametrize("algorithm", TORCH_FUSED + FOREACH)
def test_explicit_flags_keep_their_torch_meaning_on_cuda(cuda_default, algorithm):
    assert _cuda_backend(algorithm, foreach=True) == "foreach"
    assert _cuda_backend(algorithm, foreach=False) == "forloop"
    assert _cuda_backend(algorithm, fused=False) == "forloop"
    assert _cuda_backend(algorithm, capturable=True) == "forloop"


def test_torchs_fused_record_declares_what_torchs_kernel_does(cuda_default):
    record = registry.resolve("adam", "fused", "cuda")
    assert record.grad_scaler  # takes GradScaler's grad_scale/found_inf, as torch's fused
    assert record.handles_half  # half parameters computed in float32 by torch's kernel
    assert not record.float32_state_for_half  # their state in the param's dtype, as torch


def test_cpu_default_is_unchanged(cuda_default):
    for algorithm in TORCH_FUSED + FOREACH:
        assert registry.resolve(algorithm, "fused", "cpu").name == "fused"  # numba


@pytest.mark.skipif(not registry.triton_available(), reason="needs triton")
@pytest.mark.parametrize("algorithm", TORCH_FUSED + FOREACH)
def test_triton_is_opt_in(cuda_default, algorithm):
    assert registry.get_default("cuda") == "torch"
    registry.set_default("cuda", "triton")
    assert registry.triton_opted_in()
    assert _cuda_backend(algorithm) == "triton"
    assert _cuda_backend(algorithm, fused=True) == "triton"
    assert _cuda_backend(algorithm, foreach=True) == "foreach"
    registry.set_default("cuda", "torch")
    assert _cuda_backend(algorithm) in ("torch_fused", "foreach")


def test_switching_clears_the_optimizers_kernel_cache(cuda_default):
    key = (None, None, False, False, False, "cuda")
    _base._adapted_kernel("adam", *key)
    assert _base._adapted_kernel.cache_info().currsize
    registry.set_default("cuda", "torch")
    assert _base._adapted_kernel.cache_info().currsize == 0
    assert registry.resolve.cache_info().currsize == 0


@pytest.mark.parametrize(
    ("device_type", "kernels"), [("cuda", "numba"), ("cuda", "fused"), ("tpu", "torch")]
)
def test_set_default_refuses_unknown_choices_clearly(cuda_default, device_type, kernels):
    with pytest.raises(ValueError, match="expected one of"):
        registry.set_default(device_type, kernels)
    assert registry.get_default("cuda") == "torch"


def _child_default(value: str) -> subprocess.CompletedProcess:
    env = {**os.environ, registry.ENV_VARIABLE: value}
    code = "from adamkit.kernels import registry; print(registry.get_default('cuda'))"
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=100
    )


def test_environment_variable_opts_in_and_is_checked():
    assert _child_default("triton").stdout.strip() == "triton"
    assert _child_default("torch").stdout.strip() == "torch"
    bad = _child_default("trition")
    assert bad.returncode != 0
    assert "ADAMKIT_CUDA_KERNELS" in bad.stderr and "'trition'" in bad.stderr


def test_low_memory_state_on_cuda_takes_the_torch_ops_path_until_opted_in(cuda_default):
    assert lowbit.fused_kernel("cuda") is None  # lowbit_torch.step_tensor for every tensor
    assert lowbit.fused_kernel("cpu") is lowbit._numba_fused
    if registry.triton_available():
        registry.set_default("cuda", "triton")
        assert lowbit.fused_kernel("cuda") is lowbit._triton_fused


# ----------------------------------------------------------------- torch's fused kernels, on CPU


@pytest.fixture
def torch_fused_on_cpu(monkeypatch):
    """Route ``fused`` on CPU tensors to torch's fused kernels (as it is routed on CUDA)."""
    monkeypatch.setattr(registry, "fused_name", lambda device_type: "torch_fused")
    registry.resolve.cache_clear()
    _base._adapted_kernel.cache_clear()
    yield
    registry.resolve.cache_clear()
    _base._adapted_kernel.cache_clear()


CONFIGS = [
    (adamkit.Adam, torch.optim.Adam, {"lr": 0.1}),
    (adamkit.Adam, torch.optim.Adam, {"lr": 0.1, "amsgrad": True, "weight_decay": 0.1}),
    (adamkit.Adam, torch.optim.Adam, {"maximize": True, "betas": (0.5, 0.8), "eps": 1e-6}),
    (adamkit.Adam, torch.optim.Adam, {"lr": torch.tensor(0.01, dtype=torch.float64)}),
    (adamkit.AdamW, torch.optim.AdamW, {"lr": 0.1, "weight_decay": 0.5, "amsgrad": True}),
    (adamkit.SGD, torch.optim.SGD, {"lr": 0.1}),
    (adamkit.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}),
    (adamkit.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    (
        adamkit.SGD,
        torch.optim.SGD,
        {"lr": 0.1, "momentum": 0.5, "maximize": True, "weight_decay": 0.1},
    ),
]
IDS = [f"{ours.__name__}-{i}" for i, (ours, _, _) in enumerate(CONFIGS)]


def _run(cls, params0, config, plan, **flags):
    params = [torch.nn.Parameter(p.clone()) for p in params0]
    config = {k: v.clone() if torch.is_tensor(v) else v for k, v in config.items()}
    opt = cls(params, **config, **flags)
    for grads in plan:
        for p, g in zip(params, grads, strict=True):
            p.grad = None if g is None else g.clone()
        opt.step()
    return [p.detach() for p in params], opt


def _plan(params0, n, seed):
    gen = torch.Generator().manual_seed(seed)
    plan = []
    for t in range(n):
        grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params0]
        if t % 3 == 2:
            grads[1] = None  # a param without a gradient this step (SGD's buffer made later)
        plan.append(grads)
    return plan


@pytest.mark.parametrize(("ours", "theirs", "config"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_fused_backend_is_torchs_fused_optimizer_bitwise(
    torch_fused_on_cpu, ours, theirs, config, dtype
):
    gen = torch.Generator().manual_seed(3)
    params0 = [
        torch.randn(s, generator=gen, dtype=dtype) for s in [(7, 13), (1,), (0,), (), (1031,)]
    ]
    plan = _plan(params0, 8, seed=4)
    got, o_ours = _run(ours, params0, config, plan)
    want, o_theirs = _run(theirs, params0, config, plan, fused=True)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    for p_ours, p_theirs in zip(
        o_ours.param_groups[0]["params"], o_theirs.param_groups[0]["params"], strict=True
    ):
        s_ours, s_theirs = o_ours.state[p_ours], o_theirs.state[p_theirs]
        for key, value in s_theirs.items():
            if key == "step":  # torch's fused count is float32, adamkit's float64
                assert s_ours[key].item() == value.item()
            else:
                assert torch.equal(s_ours[key], value), key


@pytest.mark.parametrize(("ours", "theirs", "config"), CONFIGS, ids=IDS)
def test_tensors_torchs_fused_kernel_cannot_take_match_the_forloop(
    torch_fused_on_cpu, ours, theirs, config
):
    gen = torch.Generator().manual_seed(5)
    params0 = [
        torch.randn(6, 4, generator=gen).t(),  # not contiguous
        torch.randn(5, 3, generator=gen, dtype=torch.complex64),  # complex
        torch.randn(40, generator=gen),
    ]
    plan = _plan(params0, 6, seed=6)
    got, _ = _run(ours, params0, config, plan)
    want, _ = _run(theirs, params0, config, plan, foreach=False)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_torch_fused_takes_gradscalers_scale_and_found_inf():
    gen = torch.Generator().manual_seed(7)
    shapes = [(33,), (4, 5)]
    params = [torch.randn(s, generator=gen) for s in shapes]
    grads = [torch.randn(s, generator=gen) for s in shapes]
    state = [[torch.zeros(s) for s in shapes] for _ in range(2)]
    steps = [torch.zeros((), dtype=torch.float64) for _ in shapes]
    group = dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 decoupled_weight_decay=False, amsgrad=False, maximize=False)  # fmt: skip
    before = [p.clone() for p in params]
    torch_fused.adam(params, [g * 1024 for g in grads], *state, [], steps, [], group=group,
                     grad_scale=torch.tensor(1024.0), found_inf=torch.tensor(1.0))  # fmt: skip
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))  # nothing written
    assert all(s.item() == 0 for s in steps)  # nor counted
    state = [[torch.zeros(s) for s in shapes] for _ in range(2)]
    scaled = [p.clone() for p in before]
    torch_fused.adam(scaled, [g * 1024 for g in grads], *state, [],
                     [torch.zeros((), dtype=torch.float64) for _ in shapes], [], group=group,
                     grad_scale=torch.tensor(1024.0), found_inf=torch.tensor(0.0))  # fmt: skip
    plain = [p.clone() for p in before]
    state = [[torch.zeros(s) for s in shapes] for _ in range(2)]
    torch_fused.adam(plain, grads, *state, [],
                     [torch.zeros((), dtype=torch.float64) for _ in shapes], [], group=group)  # fmt: skip
    for a, b in zip(scaled, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_grad_scaler_with_a_tensor_torchs_kernel_cannot_take_is_a_clear_error():
    p = torch.randn(6, 4).t()
    with pytest.raises(ValueError, match="grad_scale/found_inf"):
        group = dict(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                     maximize=False)  # fmt: skip
        torch_fused.sgd([p], [torch.randn(4, 6)], [], [sgd_spec.LATER], [], group=group,
                        grad_scale=torch.tensor(2.0))  # fmt: skip


# ----------------------------------------------------------------- on a GPU


needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


@needs_cuda
@pytest.mark.parametrize(("ours", "theirs", "config"), CONFIGS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_on_cuda_the_default_is_torchs_fused_optimizer_bitwise(
    cuda_default, ours, theirs, config, dtype
):
    gen = torch.Generator().manual_seed(8)
    params0 = [torch.randn(s, generator=gen).to("cuda", dtype) for s in [(7, 13), (1,), (100_003,)]]
    plan = [[None if g is None else g.cuda() for g in step] for step in _plan(params0, 6, 9)]
    config = {k: v.cuda() if torch.is_tensor(v) else v for k, v in config.items()}
    got, o_ours = _run(ours, params0, config, plan)
    want, _ = _run(theirs, params0, config, plan, fused=True)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
    assert o_ours._step_supports_amp_scaling  # GradScaler hands over grad_scale/found_inf


@needs_cuda
@pytest.mark.parametrize("cls", [adamkit.RMSprop, adamkit.NAdam, adamkit.RAdam, adamkit.Adamax])
def test_on_cuda_the_default_without_torch_fused_is_torchs_foreach_bitwise(cuda_default, cls):
    theirs = getattr(torch.optim, cls.__name__)
    gen = torch.Generator().manual_seed(10)
    params0 = [torch.randn(s, generator=gen).cuda() for s in [(7, 13), (1,), (100_003,)]]
    plan = [[None if g is None else g.cuda() for g in step] for step in _plan(params0, 6, 11)]
    got, _ = _run(cls, params0, {"lr": 0.01}, plan)
    want, _ = _run(theirs, params0, {"lr": 0.01}, plan, foreach=True)
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)


@needs_cuda
@pytest.mark.parametrize("precision", ["bf16", "8bit"])
def test_on_cuda_low_memory_state_runs_the_torch_ops_path(cuda_default, monkeypatch, precision):
    def refuse(*args, **kwargs):
        raise AssertionError("the Triton low-memory kernel ran without opting in")

    monkeypatch.setattr(lowbit, "_triton_fused", refuse)
    p = torch.nn.Parameter(torch.randn(10_000, device="cuda"))
    opt = adamkit.Adam([p], lr=0.01, state_precision=precision, min_8bit_size=0)
    for _ in range(3):
        p.grad = torch.randn_like(p)
        opt.step()
    assert torch.isfinite(p).all()
