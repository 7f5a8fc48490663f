"""Low-memory state: the formats against their NumPy reference, the fused kernel against the
reference step, checkpoints, options, memory, rounding of half params, quality bounds."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch

import adamkit
from adamkit.kernels import lowbit_torch
from adamkit.reference import adam as ref_adam
from adamkit.reference import lowbit

KINDS = lowbit.KINDS


def _values(kind: str, n: int, seed: int = 0) -> np.ndarray:
    """Values over 60 binary orders of magnitude, zeros, NaN and ±Inf."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * np.exp2(rng.uniform(-40, 20, n))).astype(np.float32)
    if kind != "signed":
        x = np.abs(x)
    x[:: max(1, n // 7)] = 0
    if n > 10:
        x[3], x[5] = np.nan, np.inf
        if kind == "signed":
            x[7] = -np.inf
    return x


@pytest.mark.parametrize("stochastic", [False, True])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [0, 1, 255, 257, 4097])
def test_torch_codec_equals_reference_bitwise(kind, n, stochastic):
    x = _values(kind, n, seed=n)
    noise = lowbit.random_bits(n, np.arange(n)).astype(np.int64) if stochastic else None
    codes, absmax = lowbit.quantize(x, kind, noise)
    t_noise = None if noise is None else torch.from_numpy(noise)
    t_codes, t_absmax = lowbit_torch.quantize(torch.from_numpy(x), kind, t_noise)
    np.testing.assert_array_equal(t_codes.numpy(), codes)
    np.testing.assert_array_equal(t_absmax.numpy(), absmax)
    back = lowbit_torch.dequantize(t_codes, t_absmax, kind).numpy()
    np.testing.assert_array_equal(back, lowbit.dequantize(codes, absmax, kind))


@pytest.mark.parametrize("kind", KINDS)
def test_quantization_error_is_bounded_and_specials_survive(kind):
    x = _values(kind, 4097)
    codes, absmax = lowbit.quantize(x, kind)
    y = lowbit.dequantize(codes, absmax, kind)
    assert np.isnan(y[3]) and y[5] == np.inf
    finite = np.isfinite(x)
    scale = np.repeat(absmax, lowbit.BLOCK)[: x.size]
    stored = np.sqrt(np.abs(x)) if kind == "square" else np.abs(x)
    back = np.sqrt(np.abs(y)) if kind == "square" else np.abs(y)
    normal = finite & (stored >= scale * 2.0**-14)
    relative = np.abs(back[normal] - stored[normal]) / stored[normal]
    assert relative.max() <= (1 / 16 if kind == "signed" else 1 / 32) * 1.0001
    # below the normal range the error is at most half the smallest step
    small = finite & ~normal
    step = scale[small] * 2.0 ** -(17 if kind == "signed" else 18)
    assert np.all(np.abs(back[small] - stored[small]) <= step * 0.5001 + (kind != "signed") * step)
    if kind != "signed":  # a nonzero denominator never reads back as 0
        assert np.all(y[finite & (x > 0)] > 0)
    else:
        assert np.all(np.signbit(y[finite & (x != 0)]) == np.signbit(x[finite & (x != 0)]))


def test_every_code_round_trips():
    for m in (3, 4):
        codes = np.arange((15 << m) + 1)
        assert np.array_equal(lowbit.encode(lowbit.decode(codes, m), m), codes)


def test_bf16_stochastic_rounding_is_unbiased():
    x = np.float32(1.0) + np.float32(2.0**-9) * np.float32(0.3)  # 0.3 of a bfloat16 ulp
    samples = 200_000
    noise = lowbit.random_bits(12345, np.arange(samples)) & 0xFFFF
    values = lowbit.bf16_value(lowbit.bf16_bits(np.full(samples, x), noise))
    ulp = 2.0**-7
    assert set(np.unique(values)) == {np.float32(1.0), np.float32(1.0 + ulp)}
    # the mean is x within 4 standard errors (p(1-p)·ulp²/n)
    se = np.sqrt(0.3 * 0.7 / samples) * ulp
    assert abs(values.astype(np.float64).mean() - float(x)) < 4 * se
    torch_values = lowbit_torch.to_bf16(
        torch.full((samples,), float(x)), torch.from_numpy(noise.astype(np.int64))
    )
    np.testing.assert_array_equal(torch_values.float().numpy(), values)


def test_8bit_stochastic_rounding_is_unbiased():
    # a value 0.3 of the way between two codes (e4m3 at 0.5 of the block's max: steps of 1/16)
    block = np.full(lowbit.BLOCK, np.float32(0.5 + 0.3 / 16), dtype=np.float32)
    block[0] = 1.0  # the block's scale
    samples = 2000
    values = []
    for s in range(samples // lowbit.BLOCK + 1):
        noise = lowbit.random_bits(s, np.arange(lowbit.BLOCK)).astype(np.int64)
        codes, absmax = lowbit.quantize(block, "signed", noise)
        values.append(lowbit.dequantize(codes, absmax, "signed")[1:])
    values = np.concatenate(values).astype(np.float64)
    assert set(np.unique(values)) == {0.5, 0.5 + 1 / 16}
    se = np.sqrt(0.3 * 0.7 / values.size) / 16
    assert abs(values.mean() - float(block[1])) < 4 * se


def test_8bit_moving_averages_track_slow_changes():
    # v's β2 = 0.999 average changes by ≤ 0.1% a step, well under half a code: rounded to
    # nearest it would stop moving after ~30 steps (v then lags its true value ~8x at step
    # 300, and steps are ~3x too large). Stochastic rounding keeps it on track.
    n = 4096
    g = torch.exp2(torch.linspace(-10, 0, n))  # fixed grads: each block's scale stays put
    w = torch.nn.Parameter(torch.zeros(n))
    opt = adamkit.Adam([w], lr=0.0, state_precision="8bit")
    for _ in range(300):
        w.grad = g.clone()
        opt.step()
    full = lowbit_torch.dequantized_entry(opt.state[w])
    want_v = (1 - 0.999**300) * g.double() ** 2
    want_m = (1 - 0.9**300) * g.double()
    ratio_v = full["exp_avg_sq"].double() / want_v
    ratio_m = full["exp_avg"].double() / want_m
    assert abs(ratio_v.mean().item() - 1) < 0.01 and (ratio_v - 1).abs().max() < 0.15
    assert abs(ratio_m.mean().item() - 1) < 0.01 and (ratio_m - 1).abs().max() < 0.15


def _reference_step(p, g, m, v, step, lr, betas, eps, wd, decoupled):
    """float64 reference Adam from the dequantized state."""
    hyper = ref_adam.AdamHyper(
        lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=wd, decoupled=decoupled
    )
    state = ref_adam.AdamState(
        step, m.astype(np.float64), v.astype(np.float64), np.zeros_like(m, dtype=np.float64)
    )
    return ref_adam.step(p.astype(np.float64), g.astype(np.float64), state, hyper)


@pytest.mark.parametrize("precision", ["8bit", "bf16"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("n", [1, 255, 257, 4097, 70001])
@pytest.mark.parametrize("decoupled", [False, True])
def test_step_matches_reference_from_the_stored_state(precision, fused, n, decoupled):
    torch.manual_seed(n)
    w = torch.nn.Parameter(torch.randn(n) * torch.exp2(torch.randint(-20, 20, (n,)).float()))
    # L2 decay (g + λφ) is left out: in float32 it cancels where g ≈ -λφ, and the fp32 tests
    # cover it (the element is the same); decoupled decay has no such cancellation.
    wd = 0.1 if decoupled else 0.0
    opt = adamkit.Adam([w], lr=1e-2, weight_decay=wd, decoupled_weight_decay=decoupled,
                       state_precision=precision, min_8bit_size=0, fused=None if fused else False)  # fmt: skip
    for step in range(1, 5):
        g = torch.randn(n) * torch.exp2(torch.randint(-30, 30, (n,)).float())
        if step == 3 and n > 10:
            g[2] = float("nan")
        state = opt.state[w]
        full = lowbit_torch.dequantized_entry(state) if state else {}
        m0 = full["exp_avg"].numpy() if state else np.zeros(n, np.float32)
        v0 = full["exp_avg_sq"].numpy() if state else np.zeros(n, np.float32)
        p0 = w.detach().numpy().copy()
        w.grad = g
        opt.step()
        p_ref, s_ref, _ = _reference_step(
            p0, g.numpy(), m0, v0, step - 1, 1e-2, (0.9, 0.999), 1e-8, wd, decoupled
        )
        # float32 against float64: a few roundings, relative to the operands' size (p - Δ
        # may cancel)
        got = w.detach().numpy().astype(np.float64)
        size = np.abs(p0.astype(np.float64)) + np.abs(p_ref - p0)
        close = np.abs(got - p_ref) <= 1e-6 * size
        assert np.all(close | (np.isnan(got) & np.isnan(p_ref)))
        assert opt.state[w]["step"].item() == step
        full = lowbit_torch.dequantized_entry(opt.state[w])
        for key, want in (("exp_avg", s_ref.m), ("exp_avg_sq", s_ref.v)):
            got = full[key].numpy().astype(np.float64)
            if precision == "bf16":
                ok = np.isclose(got, want, rtol=2.0**-7, atol=0) | (np.isnan(got) & np.isnan(want))
                assert ok.all(), key
            else:  # codes equal the reference's quantization of the float32 result
                seed = lowbit.tensor_seed(float(step), n, 0)  # the optimizer's first param
                noise = lowbit.random_bits(seed, np.arange(n)).astype(np.int64)
                codes, _ = lowbit.quantize(
                    want.astype(np.float32),
                    "signed" if key == "exp_avg" else "square",
                    noise if key == "exp_avg" else noise >> 16,  # m: low bits, v: high
                )
                stored = opt.state[w][key].numpy()
                off = np.abs(stored.astype(np.int64) - codes.astype(np.int64))
                off = np.where((stored & 0x7F) == (codes & 0x7F), 0, off)  # sign of a flushed 0
                assert (off > 1).sum() == 0 and (off == 1).mean() < 0.01, key


@pytest.mark.parametrize("cls", [adamkit.NAdam, adamkit.RAdam, adamkit.Adamax, adamkit.AdamW])
@pytest.mark.parametrize("precision", ["8bit", "bf16"])
def test_fused_kernel_agrees_with_the_torch_ops_path(cls, precision):
    torch.manual_seed(0)
    n = 9000
    a = torch.nn.Parameter(torch.randn(n))
    b = torch.nn.Parameter(a.detach().clone())
    fast = cls([a], lr=1e-2, state_precision=precision)
    slow = cls([b], lr=1e-2, state_precision=precision, fused=False)
    for _ in range(6):
        g = torch.randn(n)
        a.grad, b.grad = g.clone(), g.clone()
        fast.step()
        slow.step()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for key, value in fast.state[a].items():
        other = slow.state[b][key]
        if value.dtype == torch.uint8:
            assert (value.int() - other.int()).abs().le(1).all() and (
                value != other
            ).float().mean() < 0.01
        else:
            torch.testing.assert_close(value.float(), other.float(), rtol=1e-2, atol=1e-6)


@pytest.mark.parametrize("precision", ["8bit", "bf16"])
def test_checkpoint_round_trip_and_resume_are_bitwise(precision):
    torch.manual_seed(0)
    model = torch.nn.Linear(100, 80)
    twin = torch.nn.Linear(100, 80)
    twin.load_state_dict(model.state_dict())

    def make(m):
        return adamkit.AdamW(m.parameters(), lr=1e-2, state_precision=precision, min_8bit_size=64)

    opt, opt_twin = make(model), make(twin)
    data = [torch.randn(16, 100) for _ in range(8)]

    def train(m, o, batches):
        for x in batches:
            o.zero_grad()
            m(x).square().mean().backward()
            o.step()

    train(model, opt, data)
    train(twin, opt_twin, data[:4])
    buffer = io.BytesIO()
    torch.save(opt_twin.state_dict(), buffer)
    buffer.seek(0)
    resumed = make(twin)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    for key, value in opt_twin.state[twin.weight].items():
        assert torch.equal(resumed.state[twin.weight][key], value), key
    train(twin, resumed, data[4:])
    assert torch.equal(model.weight, twin.weight) and torch.equal(model.bias, twin.bias)
    for key, value in opt.state[model.weight].items():
        assert torch.equal(resumed.state[twin.weight][key], value), key


def test_dequantized_checkpoint_loads_into_torch_and_torch_checkpoints_quantize():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5000))
    opt = adamkit.Adam([w], state_precision="8bit")
    w.grad = torch.randn(5000)
    opt.step()
    sd = opt.state_dict()
    full = adamkit.optim.dequantized_state_dict(sd)
    assert sd["state"][0]["exp_avg_codes"].dtype == torch.uint8  # the input is unchanged
    reference = torch.optim.Adam([w])
    reference.load_state_dict(full)
    expected = lowbit_torch.dequantize(
        sd["state"][0]["exp_avg_codes"], sd["state"][0]["exp_avg_absmax"], "signed"
    )
    assert torch.equal(reference.state[w]["exp_avg"], expected)
    # torch's fp32 checkpoint into an 8-bit optimizer: quantized; into bf16: rounded
    for precision, dtype in (("8bit", torch.uint8), ("bf16", torch.bfloat16)):
        low = adamkit.Adam([w], state_precision=precision)
        low.load_state_dict(reference.state_dict())
        assert low.state[w]["exp_avg"].dtype == dtype
        back = lowbit_torch.dequantized_entry(low.state[w])["exp_avg"]
        torch.testing.assert_close(back, expected, rtol=1 / 16, atol=1e-7)
    # an 8-bit checkpoint into an fp32 adamkit optimizer is dequantized
    plain = adamkit.Adam([w])
    plain.load_state_dict(sd)
    assert torch.equal(plain.state[w]["exp_avg"], expected)


def test_malformed_low_memory_checkpoint_is_refused_and_nothing_changes():
    w = torch.nn.Parameter(torch.randn(5000))
    opt = adamkit.Adam([w], state_precision="8bit")
    w.grad = torch.randn(5000)
    opt.step()
    sd = opt.state_dict()
    before = {k: v.clone() for k, v in opt.state[w].items()}
    bad = {**sd, "state": {0: {**sd["state"][0], "exp_avg_absmax": torch.zeros(3)}}}
    with pytest.raises(adamkit.StateDictError, match=r"exp_avg_absmax.*shape \(20,\)"):
        opt.load_state_dict(bad)
    for key, value in before.items():
        assert torch.equal(opt.state[w][key], value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"state_precision": "4bit"}, r"state_precision: '4bit'.*'fp32', 'bf16', '8bit'"),
        ({"min_8bit_size": -1}, r"min_8bit_size: -1.*int >= 0"),
        ({"min_8bit_size": 2.5}, r"min_8bit_size: 2.5"),
        ({"param_rounding": "up"}, r"param_rounding: 'up'.*'nearest', 'stochastic', 'kahan'"),
        ({"state_precision": "8bit", "capturable": True}, r"capturable=True needs"),
    ],
)
@pytest.mark.parametrize(
    "cls", [adamkit.Adam, adamkit.AdamW, adamkit.NAdam, adamkit.RAdam, adamkit.Adamax]
)
def test_bad_options_name_the_argument(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls([torch.nn.Parameter(torch.zeros(3))], **kwargs)


def test_state_bytes_per_parameter_and_min_8bit_size():
    big = torch.nn.Parameter(torch.randn(1 << 20))
    small = torch.nn.Parameter(torch.randn(100))
    for precision, limit in (("8bit", 2.1), ("bf16", 4.0)):
        opt = adamkit.Adam([big, small], state_precision=precision)
        big.grad, small.grad = torch.randn_like(big), torch.randn_like(small)
        opt.step()
        state_bytes = sum(t.numel() * t.element_size() for t in opt.state[big].values() if t.dim())
        assert state_bytes / big.numel() <= limit
        expected_small = torch.float32 if precision == "8bit" else torch.bfloat16
        assert opt.state[small]["exp_avg"].dtype == expected_small  # below min_8bit_size


@pytest.mark.parametrize("fused", [None, False])
def test_bf16_params_train_with_stochastic_or_kahan_rounding_where_nearest_stalls(fused):
    """A target half-way between two bfloat16 neighbours of 1, reached by steps of ~1e-4, each
    under half an ulp (2^-8): round-to-nearest never moves; stochastic rounding moves each
    element with the right probability (the mean gets there); Kahan's compensation keeps
    the part each rounding drops (p + comp gets there)."""
    target = 1.0 + 2.0**-8
    errors = {}
    for rounding in ("nearest", "stochastic", "kahan"):
        w = torch.nn.Parameter(torch.ones(4096, dtype=torch.bfloat16))
        opt = adamkit.Adam([w], lr=1e-4, param_rounding=rounding, fused=fused)
        for _ in range(150):
            w.grad = (w.float() - target).to(torch.bfloat16) * 2
            opt.step()
        value = w.float() + opt.state[w].get("kahan_comp", torch.zeros(1)).float()
        errors[rounding] = abs(value.double().mean().item() - target)
    assert errors["nearest"] == 2.0**-8  # stalled at 1.0
    assert errors["stochastic"] < 0.2 * 2.0**-8
    assert errors["kahan"] < 0.2 * 2.0**-8


def test_diagnostics_read_low_memory_state():
    from adamkit.diagnostics import snapshot

    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(8192))
    opt = adamkit.Adam([w], lr=1e-2, state_precision="8bit")
    for _ in range(3):
        w.grad = torch.randn(8192)
        opt.step()
    (s,) = snapshot(opt)
    full = lowbit_torch.dequantized_entry(opt.state[w])
    m_hat = full["exp_avg"].double() / (1 - 0.9**3)
    sqrt_v_hat = (full["exp_avg_sq"].double() / (1 - 0.999**3)).sqrt()
    assert s["step"] == 3
    assert s["m_hat_rms"] == pytest.approx(m_hat.square().mean().sqrt().item(), rel=1e-9)
    assert s["sqrt_v_hat_rms"] == pytest.approx(sqrt_v_hat.square().mean().sqrt().item(), rel=1e-9)


def test_quality_per_step_error_against_a_resynced_fp32_reference():
    """bitsandbytes' method: before each step an fp32 torch Adam is loaded with the 8-bit
    optimizer's (dequantized) state and params, so the error measured is one step's, not an
    accumulated drift. The step's params are exact (its inputs are the stored values); the
    stored moments are within the formats' bound. Codes are at most Δ = 1/8 of a value apart
    (e4m3; e4m4 on √v: 1/16 of √v, so 1/8 of v), and stochastic rounding of a value a
    fraction f of the way from one code to the next errs by (1-f)Δ with probability f and by
    -fΔ otherwise: a mean square of f(1-f)Δ², Δ²/6 over uniform f, an RMS of at most
    (1/8)/√6 = 5.1% (rounding to nearest would be Δ/√12 = 3.6%, but biased; see
    test_8bit_moving_averages_track_slow_changes)."""
    torch.manual_seed(0)
    n = 65536
    w = torch.nn.Parameter(torch.randn(n))
    low = adamkit.Adam([w], lr=1e-3, state_precision="8bit")
    w.grad = torch.randn(n)
    low.step()
    for _ in range(10):
        g = torch.randn(n) + 0.1
        twin = torch.nn.Parameter(w.detach().clone())
        exact = torch.optim.Adam([twin], lr=1e-3)
        # a deep copy: a state_dict holds references (the step counter would be shared)
        exact.load_state_dict(copy.deepcopy(adamkit.optim.dequantized_state_dict(low.state_dict())))
        p0 = w.detach().clone()
        w.grad, twin.grad = g, g.clone()
        low.step()
        exact.step()
        update_low, update_exact = w.detach() - p0, twin.detach() - p0
        assert ((update_low - update_exact).norm() / update_exact.norm()).item() < 1e-5
        stored = lowbit_torch.dequantized_entry(low.state[w])
        for key in ("exp_avg", "exp_avg_sq"):
            want = exact.state[twin][key]
            error = (stored[key] - want).norm() / want.norm()
            assert error.item() < 0.051, key
