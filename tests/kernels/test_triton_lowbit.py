"""The Triton kernel for low-memory state (CUDA's fused path), run on CPU tensors under
TRITON_INTERPRET=1: bit for bit the fused CPU kernel's params and state, the formats'
specials included, for every optimizer of the shared table with each low-memory precision it
takes (a third slot, one slot, a pass before the update) and every param storage."""

from __future__ import annotations

import os

import pytest
import torch

import adamkit
from adamkit.kernels import lowbit
from specs import LOW_MEMORY_IDS, LOW_MEMORY_ROWS

pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("set TRITON_INTERPRET=1 (tests/conftest.py does)", allow_module_level=True)

# The interpreter runs the kernel in NumPy, which warns on the NaN and Inf elements tested.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

PARAM_STORAGE = [
    (torch.float32, "nearest"),
    (torch.bfloat16, "nearest"),
    (torch.bfloat16, "stochastic"),
    (torch.bfloat16, "kahan"),
    (torch.float16, "nearest"),
    (torch.float16, "stochastic"),
    (torch.float16, "kahan"),
]
ROWS, IDS = LOW_MEMORY_ROWS, LOW_MEMORY_IDS


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).view(torch.uint8)


def _run(cls, kernel, n, dtype, rounding, precision, steps=3, **options):
    """Params and state after ``steps`` steps with ``kernel`` as the CPU fused kernel (the
    torch-ops path refused, so a run cannot pass on it)."""
    torch.manual_seed(n)
    x = torch.randn(n) * torch.exp2(torch.randint(-20, 20, (n,)).float())
    w = torch.nn.Parameter(x.to(dtype))
    options = {"lr": 1e-2, **options}
    opt = cls([w], state_precision=precision, param_rounding=rounding, min_8bit_size=0,
              **options)  # fmt: skip
    if hasattr(opt, "train"):  # Schedule-Free
        opt.train()
    for step in range(steps):
        g = torch.randn(n) * torch.exp2(torch.randint(-30, 30, (n,)).float())
        if step == 1 and n > 10:
            g[2], g[9] = float("nan"), float("inf")
        w.grad = g.to(dtype)
        with pytest.MonkeyPatch.context() as patch:
            patch.setitem(lowbit.FUSED_KERNELS, "cpu", kernel)
            patch.setattr(lowbit, "step_tensor", _refused)
            opt.step()
    return w, opt.state[w]


def _refused(*args, **kwargs):
    raise AssertionError("a tensor took the torch-ops path, not the fused kernel")


def _assert_bitwise(got_w, got, want_w, want):
    assert torch.equal(_bits(got_w), _bits(want_w))
    assert got.keys() == want.keys()
    for key in want:
        assert torch.equal(_bits(got[key]), _bits(want[key])), key


@pytest.mark.parametrize("dtype,rounding", PARAM_STORAGE)
@pytest.mark.parametrize("precision", ["8bit", "bf16"])
@pytest.mark.parametrize("n", [1, 255, 257, 4097])
def test_triton_kernel_equals_the_fused_cpu_kernel_bitwise(n, precision, dtype, rounding):
    got = _run(adamkit.Adam, lowbit._triton_fused, n, dtype, rounding, precision)
    _assert_bitwise(*got, *_run(adamkit.Adam, lowbit._numba_fused, n, dtype, rounding, precision))


@pytest.mark.parametrize(("spec", "config", "precision"), ROWS, ids=IDS)
def test_triton_kernel_runs_each_optimizer_as_the_cpu_kernel(spec, config, precision):
    # NAdam's per-tensor scalars come from the host here, from its product rounded to
    # float32 as the CPU kernel stores it. The cautious count is exact in any order;
    # StableAdamW's float64 sum is added in another order, which rounds to the same float32
    # on these inputs but not on all (a total built to sit on a float32 tie, with terms 2^66
    # apart, rounds one float32 step apart: docs/low-memory.md).
    got = _run(spec.ours, lowbit._triton_fused, 300, torch.float32, "nearest", precision,
               **config)  # fmt: skip
    want = _run(spec.ours, lowbit._numba_fused, 300, torch.float32, "nearest", precision,
                **config)  # fmt: skip
    _assert_bitwise(*got, *want)


# Three slots, one slot, a pass before the update: with each half param storage.
HALF_ROWS = [
    (adamkit.AdEMAMix, {}),
    (adamkit.Adam, {"amsgrad": True, "cautious": True}),
    (adamkit.StableAdamW, {}),
    (adamkit.Lion, {"weight_decay": 0.1}),
    (adamkit.RMSprop, {"centered": True, "momentum": 0.9}),
]


@pytest.mark.parametrize("dtype,rounding", PARAM_STORAGE[1:])
@pytest.mark.parametrize("precision", ["8bit", "bf16", "fp32"])
@pytest.mark.parametrize(("cls", "config"), HALF_ROWS, ids=lambda v: getattr(v, "__name__", ""))
def test_triton_kernel_steps_half_params_as_the_cpu_kernel(cls, config, precision, dtype,
                                                           rounding):  # fmt: skip
    # "fp32": torch's format (float32 state, or the param's dtype) of a half param rounded
    # stochastically or with Kahan's compensation; rounded to nearest, the fp32 kernels take it
    if precision == "fp32" and rounding == "nearest":
        pytest.skip("the fp32 kernels' cell, not the low-memory kernel's")
    got = _run(cls, lowbit._triton_fused, 300, dtype, rounding, precision, **config)
    _assert_bitwise(*got, *_run(cls, lowbit._numba_fused, 300, dtype, rounding, precision,
                                **config))  # fmt: skip


def _shared_counter_run(kernel):
    """Two params whose loaded state shares one step tensor (a hand-made checkpoint): each
    kernel advances it once per param, as the torch-ops path does."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(300)) for _ in range(2)]
    opt = adamkit.Adam(params, lr=1e-2, state_precision="bf16")
    for step in range(3):
        for p in params:
            p.grad = torch.randn(300)
        if step == 1:
            saved = opt.state_dict()
            saved["state"][1]["step"] = saved["state"][0]["step"]
            opt.load_state_dict(saved)
            assert opt.state[params[0]]["step"] is opt.state[params[1]]["step"]
        with pytest.MonkeyPatch.context() as patch:
            patch.setitem(lowbit.FUSED_KERNELS, "cpu", kernel)
            patch.setattr(lowbit, "step_tensor", _refused)
            opt.step()
    return params, opt


def test_a_counter_two_params_share_advances_once_for_each():
    got, o_got = _shared_counter_run(lowbit._triton_fused)
    want, o_want = _shared_counter_run(lowbit._numba_fused)
    assert o_got.state[got[0]]["step"].item() == 5.0  # 1 + 1 + 2 + ... as the CPU kernel
    for a, b in zip(got, want, strict=True):
        _assert_bitwise(a, o_got.state[a], b, o_want.state[b])


class _FailingUpdate:
    """The kernel, whose update launch fails (the pass before it runs)."""

    def __init__(self, kernel):
        self.kernel = kernel

    def __getitem__(self, grid):
        def launch(*args, REDUCING, **kwargs):
            if not REDUCING:
                raise RuntimeError("the update's launch failed")
            return self.kernel[grid](*args, REDUCING=REDUCING, **kwargs)

        return launch


@pytest.mark.parametrize("cls,options", [
    (adamkit.NAdam, {}),  # a step counter and NAdam's product
    (adamkit.StableAdamW, {"lr": 1e-2}),  # a pass before the update, which runs
])  # fmt: skip
def test_a_failed_launch_leaves_the_counters_params_and_state_as_they_were(cls, options):
    """Counters are advanced on the host before the launch: a launch that fails puts them
    back, so the step can be taken again (nothing else was written: one cell here; with
    several, those launched before the failing one stay stepped, see triton_lowbit._launch)."""
    from adamkit.kernels import triton_lowbit

    w = torch.nn.Parameter(torch.randn(300))
    opt = cls([w], state_precision="8bit", min_8bit_size=0, **options)
    w.grad = torch.randn(300)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(lowbit.FUSED_KERNELS, "cpu", lowbit._triton_fused)
        patch.setattr(lowbit, "step_tensor", _refused)
        opt.step()
        w.grad = torch.randn(300)
        before = (w.detach().clone(), {k: v.clone() for k, v in opt.state[w].items()})
        patch.setattr(triton_lowbit, "_lowbit_kernel", _FailingUpdate(triton_lowbit._lowbit_kernel))
        with pytest.raises(RuntimeError, match="the update's launch failed"):
            opt.step()
    assert torch.equal(w.detach(), before[0])
    assert opt.state[w].keys() == before[1].keys()
    for key, value in before[1].items():
        assert torch.equal(opt.state[w][key], value), key
    assert opt.state[w]["step"].item() == 1


def test_tensors_the_triton_kernel_cannot_take_go_to_the_torch_ops_path():
    a = torch.nn.Parameter(torch.randn(300))
    b = torch.nn.Parameter(torch.randn(40, 30).t())  # not contiguous
    empty = torch.nn.Parameter(torch.randn(0))
    opt = adamkit.Adam([a, b, empty], state_precision="8bit", min_8bit_size=0)
    for p in (a, b, empty):
        p.grad = torch.randn_like(p)
    opt.step()  # state made
    states = [opt.state[p] for p in (a, b, empty)]
    from adamkit.algorithms import SPECS
    from adamkit.kernels.spec_kernels import hyper_key, padded_scalars

    padded = padded_scalars("adam", torch.float32, hyper_key(SPECS["adam"], opt.param_groups[0]))
    rest = lowbit._triton_fused(
        SPECS["adam"], [a, b, empty], [p.grad for p in (a, b, empty)], states,
        ["8bit"] * 3, [0, 1, 2], (padded.hyper, padded.bias, padded.flags), "nearest",
    )  # fmt: skip
    assert rest == [1, 2]
    assert opt.state[a]["step"].item() == 2 and opt.state[b]["step"].item() == 1


def test_cuda_tensors_take_the_triton_kernel():
    assert lowbit.FUSED_KERNELS["cuda"] is lowbit._triton_fused


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["8bit", "bf16"])
def test_on_cuda_the_step_matches_the_cpu_kernel(precision):
    torch.manual_seed(0)
    n, steps, lr = 100_003, 5, 1e-2
    w_cpu = torch.nn.Parameter(torch.randn(n))
    w_gpu = torch.nn.Parameter(w_cpu.detach().cuda())
    cpu = adamkit.Adam([w_cpu], lr=lr, state_precision=precision)
    gpu = adamkit.Adam([w_gpu], lr=lr, state_precision=precision)
    for _ in range(steps):
        g = torch.randn(n)
        w_cpu.grad, w_gpu.grad = g, g.cuda()
        cpu.step()
        gpu.step()
    # The Triton kernel is compiled with IEEE division and square root and no multiply-add
    # contraction (tests/kernels/test_triton_ptx.py checks its PTX), so it should store the
    # CPU kernel's bits; the torch-ops path (CUDA's default) runs torch's CUDA ops, which may
    # round otherwise. Not yet run on a GPU: this allows what that would cost, a value near a
    # rounding boundary stored one code (8-bit) or one bfloat16 ulp away, that element's
    # later steps moving differently. Such elements are rare; each step moves a param by at
    # most ~lr, so by less than steps·lr differently.
    diff = (w_gpu.detach().cpu() - w_cpu.detach()).abs()
    close = diff <= 1e-6 + 1e-5 * w_cpu.detach().abs()
    assert close.float().mean() > 0.99 and diff.max() <= steps * lr
    for key, value in cpu.state[w_cpu].items():
        other = gpu.state[w_gpu][key].cpu()
        if value.dtype == torch.uint8:
            off = (other.int() - value.int()).abs()
            assert off.le(1).all() and (off > 0).float().mean() < 0.01, key
        else:
            torch.testing.assert_close(other.float(), value.float(), rtol=1e-2, atol=1e-6)
