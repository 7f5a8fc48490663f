"""Half-precision parameters are computed in float32 by every kernel; step counts stay exact."""

from __future__ import annotations

import pytest
import torch

from specs import SPECS

KERNELS = {"forloop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {}}
HALF = [torch.float16, torch.bfloat16]
CONFIG = {
    "Adam": {"amsgrad": True, "weight_decay": 0.1},
    "AdamW": {},
    "SGD": {"momentum": 0.9, "nesterov": True},
    "RMSprop": {"centered": True, "momentum": 0.5},
}


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("grad_scale", [0.0, 1e-7, 1e-30], ids=["zero", "tiny", "underflow"])
def test_zero_and_tiny_gradients_never_give_nan_or_inf(spec, kernel, dtype, grad_scale):
    w = torch.ones(16, dtype=dtype, requires_grad=True)
    opt = spec.ours([w], **CONFIG.get(spec.name, spec.configs[1]), **KERNELS[kernel])
    for _ in range(4):
        w.grad = torch.full((16,), grad_scale).to(dtype)
        opt.step()
        assert w.isfinite().all()
        for value in opt.state[w].values():
            if torch.is_tensor(value) and value.dtype == dtype:
                assert value.isfinite().all()


def test_torch_adam_gives_nan_here_so_the_test_above_means_something():
    w = torch.ones(4, dtype=torch.float16, requires_grad=True)
    opt = torch.optim.Adam([w], foreach=False)
    w.grad = torch.zeros(4, dtype=torch.float16)
    opt.step()
    assert w.isnan().all()


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
@pytest.mark.parametrize("kernel", KERNELS)
def test_half_params_follow_float32_arithmetic(spec, kernel):
    """One step on float16 params equals the float32 step rounded to float16 (state too)."""
    gen = torch.Generator().manual_seed(0)
    w32 = torch.randn(257, generator=gen)
    g32 = torch.randn(257, generator=gen).half().float()
    w32 = w32.half().float()
    results = {}
    for dtype in (torch.float32, torch.float16):
        w = w32.to(dtype).clone().requires_grad_()
        opt = spec.ours([w], **CONFIG.get(spec.name, spec.configs[1]), **KERNELS[kernel])
        w.grad = g32.to(dtype)
        opt.step()
        results[dtype] = (w.detach(), opt.state[w])
    w_half, state_half = results[torch.float16]
    w_full, state_full = results[torch.float32]
    assert torch.equal(w_half, w_full.half())
    for key, value in state_full.items():
        if key in ("step", "mu_product"):  # per-tensor scalars: torch's dtype whatever p's
            assert state_half[key].dtype == value.dtype
            assert torch.equal(state_half[key], value), key
        else:
            assert state_half[key].dtype == torch.float16
            assert torch.equal(state_half[key], value.half()), key


@pytest.mark.parametrize("spec", [s for s in SPECS if s.ours.spec.counted], ids=lambda s: s.name)
def test_step_count_is_exact_past_2_to_the_24(spec):
    w = torch.zeros(3, requires_grad=True)
    opt = spec.ours([w], **spec.configs[0])  # (StableAdamW's lr has no default)
    w.grad = torch.ones(3)
    opt.step()
    opt.state[w]["step"].fill_(2.0**24)
    for _ in range(3):
        opt.step()
    assert opt.state[w]["step"].item() == 2**24 + 3  # float32 would be stuck at 2^24
    # torch.optim loads and continues from this state_dict.
    w_torch = w.detach().clone().requires_grad_()
    theirs = spec.theirs([w_torch], **spec.configs[0])
    theirs.load_state_dict(opt.state_dict())
    w_torch.grad = torch.ones(3)
    theirs.step()
    assert theirs.state[w_torch]["step"].item() == 2**24 + 4
