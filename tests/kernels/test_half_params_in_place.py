"""bfloat16 and float16 params on the CPU are stepped in place by the fused low-memory kernel
(adamkit.kernels._numba_lowbit), their torch-format state ("fp32": the moments in the param's
dtype) read and stored by a load/store adapter, as 8-bit and bf16 state are: no float32 copies
(adamkit.kernels.wrappers.half_in_float32) and no torch-ops pass (lowbit_torch.step_tensor).

The oracles: with param_rounding="nearest", the path before (the fp32 kernel on float32 copies,
rounded once to the param's dtype), bit for bit; with "stochastic" and "kahan", the torch-ops
path (lowbit_torch), bit for bit once its element evaluates lerp and √ as the numba kernel does
(each operation rounded once: torch's lerp is one FMA, its vectorized float32 √ can be an ulp
off, which moves a float32 result by an ulp that Kahan's compensation then shows)."""

from __future__ import annotations

import contextlib
import io

import numba
import numpy as np
import pytest
import torch

import adamkit
from adamkit.algorithms.state_formats import NAN, SLOT_KINDS
from adamkit.kernels import _numba_bits, half_params, lowbit, lowbit_torch, wrappers
from adamkit.kernels._threads import SPLIT_MIN_ELEMENTS

SIZES = (1, 255, 257, 4097, 70001, 0)  # 70001 > SPLIT_MIN_ELEMENTS: split over the threads
assert SIZES[4] > SPLIT_MIN_ELEMENTS
HALF = [torch.bfloat16, torch.float16]
SPECS = [
    (adamkit.Adam, {"weight_decay": 0.1}),
    (adamkit.AdamW, {}),
    (adamkit.NAdam, {"weight_decay": 0.1, "decoupled_weight_decay": True}),
    (adamkit.RAdam, {"weight_decay": 0.1}),
    (adamkit.Adamax, {"maximize": True}),
    # three slots, a third switched on by a flag, and the other two-slot specs
    (adamkit.AdEMAMix, {"t_alpha": 2, "t_beta3": 2}),
    (adamkit.Adam, {"amsgrad": True}),
    (adamkit.RMSprop, {"centered": True, "momentum": 0.5}),
    (adamkit.ADOPT, {}),
    # uncounted: no step in their torch-format state (the kernel counts a scratch one)
    (adamkit.SGD, {"momentum": 0.9, "dampening": 0.25, "weight_decay": 0.1}),
    (adamkit.SGD, {"momentum": 0.9, "nesterov": True}),
    (adamkit.Lion, {"weight_decay": 0.1}),
    (adamkit.ScheduleFreeAdamW, {"weight_decay": 0.1, "warmup_steps": 2}),
    # a pass before the update
    (adamkit.StableAdamW, {"weight_decay": 0.1}),
    (adamkit.AdamW, {"cautious": True, "amsgrad": True}),
    (adamkit.Lion, {"cautious": True}),
]
SPEC_IDS = [
    cls.__name__
    + ("-cautious" if "cautious" in o else "")
    + ("-amsgrad" if "amsgrad" in o else "-nesterov" if "nesterov" in o else "")
    for cls, o in SPECS
]


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().reshape(-1).view(torch.uint8)


def _data(dtype, seed, sizes=SIZES):
    """Params spread over many binades, and gradients for 3 steps (a NaN and an Inf at the
    second, where a tensor has room for them)."""
    gen = torch.Generator().manual_seed(seed)
    span = 12 if dtype == torch.float16 else 30  # float16 overflows past 2^16

    def spread(n):
        scale = torch.exp2(torch.randint(-span, span // 3, (n,), generator=gen).float())
        return (torch.randn(n, generator=gen) * scale).to(dtype)

    params = [spread(n) for n in sizes]
    plan = []
    for step in range(3):
        grads = [spread(n) for n in sizes]
        for g in grads:
            if step == 1 and g.numel() > 10:
                g[2], g[9] = float("nan"), float("inf")
        plan.append(grads)
    return params, plan


@contextlib.contextmanager
def _old_path():
    """Steps inside take the path before: the float32 copies for nearest, the torch-ops path
    for stochastic and kahan with torch-format state."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(half_params, "half_in_place", lambda *args: [])
        patch.setattr(
            lowbit, "_STORAGE", {k: v for k, v in lowbit._STORAGE.items() if k[0] != "fp32"}
        )
        yield


def _run(cls, params0, plan, old=False, after_first=None, **config):
    params = [torch.nn.Parameter(p.clone()) for p in params0]
    opt = cls(params, lr=1e-2, **config)
    if isinstance(opt, adamkit.ScheduleFreeAdamW):
        opt.train()
    for i, grads in enumerate(plan):
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        with _old_path() if old else contextlib.nullcontext():
            opt.step()
        if i == 0 and after_first is not None:
            after_first()
    return params, opt


def _same(a: torch.Tensor, b: torch.Tensor, key: str | None = None) -> bool:
    """Bit for bit, but any NaN for a NaN: torch stores a float32 NaN as bfloat16 0xFFFF on
    x86 (its vectorized conversion; 0x7FC0 in its scalar one), the kernels as 0x7FC0. So too
    for the 8-bit codes of slot ``key``: a signed slot's NaN code keeps the NaN's sign (127 or
    255), and the fused kernel stores every NaN positive where the torch ops keep the sign
    their arithmetic gave."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.is_floating_point():
        if a.dtype == torch.uint8 and SLOT_KINDS.get(key) == "signed":
            nan = NAN["signed"]
            a, b = (torch.where(x == 0x80 | nan, nan, x) for x in (a, b))
        return torch.equal(a, b)
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(_bits(a[~nan]), _bits(b[~nan]))


def _assert_bitwise(ours, o_ours, theirs, o_theirs):
    for p, q in zip(ours, theirs, strict=True):
        assert _same(p.detach(), q.detach()), p.numel()
        assert o_ours.state[p].keys() == o_theirs.state[q].keys()
        for key, value in o_theirs.state[q].items():
            assert _same(o_ours.state[p][key], value, key), (key, p.numel())


class _Counted:
    """Counts the float32 copies of half tensors and the torch-ops steps."""

    def __init__(self, monkeypatch):
        self.reset()
        copy, step_tensor = wrappers._float32, lowbit.step_tensor

        def counted_copy(t):
            if t is not None and t.dtype in wrappers.HALF_DTYPES and t.numel():
                self.copies += 1
            return copy(t)

        def counted_step(*args, **kwargs):
            self.torch_ops += 1
            return step_tensor(*args, **kwargs)

        monkeypatch.setattr(wrappers, "_float32", counted_copy)
        monkeypatch.setattr(lowbit, "step_tensor", counted_step)

    def reset(self):
        self.copies, self.torch_ops = 0, 0


# --- nearest: today's numbers, bit for bit ---------------------------------------------------


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("cls,options", SPECS, ids=SPEC_IDS)
def test_nearest_equals_the_float32_copies_bitwise(cls, options, dtype, monkeypatch):
    params, plan = _data(dtype, 1)
    counted = _Counted(monkeypatch)
    # (an uncounted spec's slots start in the copies' path: its buffer as g, or z as p)
    ours, o_ours = _run(
        cls, params, plan, after_first=counted.reset if _uncounted(cls) else None, **options
    )
    assert counted.copies == 0 and counted.torch_ops == 0
    theirs, o_theirs = _run(cls, params, plan, old=True, **options)
    assert counted.copies > 0  # the oracle took the copies
    _assert_bitwise(ours, o_ours, theirs, o_theirs)
    for p in ours:  # the state stays in torch's format: the param's dtype
        assert (
            o_ours.state[p]["step"].item() == 3
            if o_ours.spec.counted
            else "step" not in o_ours.state[p]
        )
        assert all(v.dtype == dtype for k, v in o_ours.state[p].items() if k != "step" and v.dim())


def _uncounted(cls) -> bool:
    return not adamkit.algorithms.SPECS[cls.algorithm].counted


def test_the_step_writes_in_place(monkeypatch):
    counted = _Counted(monkeypatch)
    p = torch.nn.Parameter(torch.randn(5000).bfloat16())
    opt = adamkit.AdamW([p], lr=1e-2)
    p.grad = torch.randn(5000).bfloat16()
    opt.step()
    addresses = {k: v.data_ptr() for k, v in opt.state[p].items()}
    address = p.data_ptr()
    before = p.detach().clone()
    opt.step()
    assert p.data_ptr() == address and not torch.equal(p.detach(), before)
    assert {k: v.data_ptr() for k, v in opt.state[p].items()} == addresses
    assert counted.copies == 0 and counted.torch_ops == 0


# --- stochastic and kahan: the torch-ops path, bit for bit ------------------------------------


# (the fixture torch_ops_in_numba_order: tests/kernels/conftest.py)


@pytest.mark.parametrize("rounding", ["stochastic", "kahan"])
@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("cls,options", SPECS, ids=SPEC_IDS)
def test_rounded_params_equal_the_torch_ops_path_bitwise(
    cls, options, dtype, rounding, torch_ops_in_numba_order, monkeypatch
):
    params, plan = _data(dtype, 2)
    counted = _Counted(monkeypatch)
    ours, o_ours = _run(cls, params, plan, param_rounding=rounding, **options)
    assert counted.torch_ops == len(plan)  # the empty tensor's counters only
    theirs, o_theirs = _run(cls, params, plan, param_rounding=rounding, fused=False, **options)
    _assert_bitwise(ours, o_ours, theirs, o_theirs)
    assert counted.copies == 0


@pytest.mark.parametrize("precision", ["bf16", "8bit"])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic", "kahan"])
def test_float16_params_with_low_memory_state_are_fused_too(
    precision, rounding, torch_ops_in_numba_order, monkeypatch
):
    params, plan = _data(torch.float16, 3)
    counted = _Counted(monkeypatch)
    config = {"state_precision": precision, "param_rounding": rounding, "min_8bit_size": 0}
    ours, o_ours = _run(adamkit.AdamW, params, plan, **config)
    assert counted.torch_ops == len(plan)
    theirs, o_theirs = _run(adamkit.AdamW, params, plan, fused=False, **config)
    _assert_bitwise(ours, o_ours, theirs, o_theirs)


def test_non_finite_gradients_propagate_as_before():
    params, plan = _data(torch.bfloat16, 4, sizes=(300,))
    ours, _ = _run(adamkit.AdamW, params, plan)
    theirs, _ = _run(adamkit.AdamW, params, plan, old=True)
    p = ours[0].detach()
    assert p.isnan()[[2, 9]].all() and not p.isnan()[[0, 1, 3]].any()
    assert _same(p, theirs[0].detach())


# --- what keeps the path before --------------------------------------------------------------


@pytest.mark.parametrize(
    "case",
    [
        "foreach", "fused=False", "strided", "float32 grad", "listed twice",
        "SGD's first step", "Lion's first step", "ScheduleFreeAdamW's first step",
    ],
)  # fmt: skip
def test_what_the_fused_kernel_does_not_take_keeps_the_float32_copies(case, monkeypatch):
    p = torch.nn.Parameter(torch.randn(40, 50).bfloat16())
    options = {
        "foreach": {"foreach": True},
        "fused=False": {"fused": False},
        # SGD, Lion, Schedule-Free: their slots start in the copies' path (SGD's as g)
        "SGD's first step": {"momentum": 0.9},
    }.get(case, {})
    params = [p, p] if case == "listed twice" else [p]
    classes = {
        "SGD's first step": adamkit.SGD, "Lion's first step": adamkit.Lion,
        "ScheduleFreeAdamW's first step": adamkit.ScheduleFreeAdamW,
    }  # fmt: skip
    opt = classes.get(case, adamkit.AdamW)(params, lr=1e-2, **options)
    if case == "ScheduleFreeAdamW's first step":
        opt.train()
    grad = torch.randn(40, 50)
    if case == "strided":
        p.data = torch.randn(50, 40).bfloat16().t()
    if case == "float32 grad":
        p.grad_dtype = None  # torch refuses a grad of another dtype unless told
    p.grad = grad if case == "float32 grad" else grad.to(p.dtype)
    counted = _Counted(monkeypatch)
    opt.step()
    assert counted.copies > 0 and counted.torch_ops == 0
    key = {"SGD's first step": "momentum_buffer", "ScheduleFreeAdamW's first step": "z"}.get(
        case, "exp_avg"
    )
    assert opt.state[p][key].dtype == torch.bfloat16


@pytest.mark.parametrize("cls", [adamkit.SGD, adamkit.Lion, adamkit.ScheduleFreeAdamW])
def test_an_uncounted_specs_step_left_by_low_memory_state_is_not_advanced_in_place(
    cls, monkeypatch
):
    # Low-memory state keeps a "step" for SGD, Lion and Schedule-Free; back in torch's
    # format the copies' path left it as it was, and so does the step in place (it counts a
    # scratch step). Counted on, a later low-memory step would draw other random numbers.
    p = torch.nn.Parameter(torch.randn(1000).bfloat16())
    options = {"momentum": 0.9} if cls is adamkit.SGD else {}
    opt = cls([p], lr=1e-2, state_precision="bf16", **options)
    if hasattr(opt, "train"):
        opt.train()
    for step in range(4):
        if step == 2:
            opt.state_precision = "fp32"
        p.grad = torch.randn(1000).bfloat16()
        opt.step()
    assert opt.state[p]["step"].item() == 2
    counted = _Counted(monkeypatch)
    p.grad = torch.randn(1000).bfloat16()
    opt.step()
    assert counted.copies == 0 and counted.torch_ops == 0 and opt.state[p]["step"].item() == 2


@pytest.mark.parametrize("cls", [adamkit.SGD, adamkit.Lion])
@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_a_none_slot_from_a_checkpoint_steps_as_a_float32_params_does(cls, dtype):
    # torch.optim saves SGD's momentum_buffer as None before its first step
    key = "momentum_buffer" if cls is adamkit.SGD else "exp_avg"
    options = {"momentum": 0.9} if cls is adamkit.SGD else {}
    results = []
    for param_dtype in (dtype, torch.float32):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 100).to(param_dtype))
        opt = cls([p], lr=1e-2, **options)
        saved = opt.state_dict()
        saved["state"] = {0: {key: None}}
        opt.load_state_dict(saved)
        p.grad = torch.linspace(1, -1, 100).to(param_dtype)
        opt.step()
        results.append(p.detach().float())
    torch.testing.assert_close(results[0], results[1], atol=1e-2, rtol=1e-2)
    assert not torch.equal(results[0], torch.linspace(-1, 1, 100).to(dtype).float())


def test_a_group_mixing_dtypes_steps_each_on_its_path():
    half = torch.nn.Parameter(torch.randn(3000).bfloat16())
    full = torch.nn.Parameter(torch.randn(3000))
    twin_half = torch.nn.Parameter(half.detach().clone())
    twin_full = torch.nn.Parameter(full.detach().clone())
    opt = adamkit.AdamW([half, full], lr=1e-2)
    twin = adamkit.AdamW([twin_half, twin_full], lr=1e-2)
    for _ in range(3):
        g_half, g_full = torch.randn(3000).bfloat16(), torch.randn(3000)
        half.grad, full.grad, twin_half.grad, twin_full.grad = g_half, g_full, g_half, g_full
        opt.step()
        with _old_path():
            twin.step()
    assert torch.equal(_bits(half), _bits(twin_half)) and torch.equal(full, twin_full)


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoints_keep_their_format_and_resume_bitwise():
    torch.manual_seed(0)
    data = [torch.randn(8000).bfloat16() for _ in range(6)]

    def train(opt, p, batches):
        for g in batches:
            p.grad = g.clone()
            opt.step()

    p = torch.nn.Parameter(torch.randn(8000).bfloat16())
    twin = torch.nn.Parameter(p.detach().clone())
    opt, opt_twin = adamkit.AdamW([p], lr=1e-2), adamkit.AdamW([twin], lr=1e-2)
    train(opt, p, data)
    train(opt_twin, twin, data[:3])
    buffer = io.BytesIO()
    torch.save(opt_twin.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    # torch's format: step, exp_avg, exp_avg_sq in the param's dtype, as before
    entry = saved["state"][0]
    assert sorted(entry) == ["exp_avg", "exp_avg_sq", "step"]
    assert entry["exp_avg"].dtype == entry["exp_avg_sq"].dtype == torch.bfloat16
    old = adamkit.AdamW([torch.nn.Parameter(p.detach().clone())], lr=1e-2)
    old_p = old.param_groups[0]["params"][0]
    old_p.grad = data[0].clone()
    with _old_path():
        old.step()
    old_entry = old.state_dict()["state"][0]
    assert {k: (v.dtype, v.shape) for k, v in old_entry.items()} == {
        k: (v.dtype, v.shape) for k, v in entry.items()
    }
    resumed = adamkit.AdamW([twin], lr=1e-2)
    resumed.load_state_dict(saved)
    train(resumed, twin, data[3:])
    assert torch.equal(_bits(p), _bits(twin))
    for key, value in opt.state[p].items():
        assert torch.equal(_bits(resumed.state[twin][key]), _bits(value)), key
    mirror = torch.optim.AdamW([torch.nn.Parameter(twin.detach().clone())], lr=1e-2)
    mirror.load_state_dict(resumed.state_dict())  # torch loads it, as before


# --- the float16 adapters against torch ------------------------------------------------------


def _conversions():
    """Fresh loops over the float16 adapters (compiled with _numba_bits.NATIVE_HALF as set)."""

    @numba.njit
    def convert(x, noise, nearest, stochastic):
        for i in range(x.size):
            nearest[i] = _numba_bits.f16_nearest(x[i])
            stochastic[i] = _numba_bits.f16_stochastic(x[i], noise[i])

    @numba.njit
    def load(h, out):
        for i in range(h.size):
            out[i] = _numba_bits.f16_load(h[i])

    return convert, load


@pytest.mark.parametrize("native", [True, False], ids=["llvm-half", "integer-arithmetic"])
def test_float16_load_and_stores_equal_torchs_bitwise(native, monkeypatch):
    if native and not _numba_bits._native_half():
        pytest.skip("numba's target has no float16 conversion instructions")
    monkeypatch.setattr(_numba_bits, "NATIVE_HALF", native)
    convert, load = _conversions()
    patterns = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    loaded = np.empty(patterns.size, np.float32)
    load(patterns, loaded)
    want = torch.from_numpy(patterns.view(np.int16)).view(torch.float16).float().numpy()
    assert np.array_equal(loaded.view(np.uint32), want.view(np.uint32))  # NaN payloads too
    rng = np.random.default_rng(0)
    finite = want[np.isfinite(want)].astype(np.float64)
    finite.sort()
    middles = ((finite[:-1] + finite[1:]) / 2).astype(np.float32)  # ties, and beside them
    x = np.concatenate(
        [
            rng.integers(0, 1 << 32, 400_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
            (rng.standard_normal(200_000) * np.exp2(rng.uniform(-30, 17, 200_000))).astype(
                np.float32
            ),
            middles,
            np.nextafter(middles, np.float32(np.inf)),
            np.nextafter(middles, np.float32(-np.inf)),
            np.array([0.0, -0.0, 65504, 65519.996, 65520, np.inf, -np.inf, 2.98e-8], np.float32),
        ]
    )
    noise = rng.integers(0, 1 << 32, x.size, dtype=np.uint64).astype(np.uint32)
    nearest, stochastic = np.empty(x.size, np.uint16), np.empty(x.size, np.uint16)
    convert(x, noise, nearest, stochastic)
    t = torch.from_numpy(x)
    want_nearest = t.to(torch.float16).view(torch.int16).numpy().view(np.uint16)
    want_stochastic = lowbit_torch.to_float16_stochastic(
        t, torch.from_numpy(noise.astype(np.int64))
    )
    assert np.array_equal(nearest, want_nearest)
    assert np.array_equal(stochastic, want_stochastic.view(torch.int16).numpy().view(np.uint16))


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_float32_state_of_a_half_param_is_read_and_stored_as_float32(dtype, monkeypatch):
    # state made by a backend that keeps float32 state for half params (the Triton kernels),
    # or loaded so: plain float32 slots, no rounding of the moments, as on the path before
    params, plan = _data(dtype, 5, sizes=(257, 4097))
    counted = _Counted(monkeypatch)
    runs = []
    for old in (False, True):
        ours = [torch.nn.Parameter(p.clone()) for p in params]
        opt = adamkit.AdamW(ours, lr=1e-2)
        for step, grads in enumerate(plan):
            for p, g in zip(ours, grads, strict=True):
                p.grad = g.clone()
            with _old_path() if old else contextlib.nullcontext():
                opt.step()
            if step == 0:
                for p in ours:
                    for key in ("exp_avg", "exp_avg_sq"):
                        opt.state[p][key] = opt.state[p][key].float()
        runs.append((ours, opt))
        assert counted.copies > 0 if old else counted.copies == counted.torch_ops == 0
    (ours, o_ours), (theirs, o_theirs) = runs
    _assert_bitwise(ours, o_ours, theirs, o_theirs)
    assert o_ours.state[ours[0]]["exp_avg"].dtype == torch.float32
