"""The fused low-memory kernel's fast paths equal its exact codec bit for bit wherever the
kernel takes them: the closed-form decode of a block whose codes are all numbers, the
normal-only encode of a block whose values all have normal codes, and the random draws
counted on from a block's first element (:mod:`adamkit.kernels._numba_bits`)."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from adamkit.algorithms.state_formats import TOP
from adamkit.kernels import _numba_formats as kernel
from adamkit.kernels._numba_bits import (
    DECODE_UNIT,
    magnitude_bits,
    random_base,
    random_bits,
    random_bits_after,
)
from adamkit.reference import lowbit

KINDS = {"signed": kernel.SIGNED, "square": kernel.SQUARE, "unsigned": kernel.UNSIGNED}
SUBNORMAL_SMALLEST = np.float32(2.0**-149)
SCALES = np.array(
    [0.0, 2.0**-149, 2.0**-140, 2.0**-127, 2.0**-126, 1.2e-38, 1e-30, 1e-3, 0.7, 1.0, 3.0,
     1000.0, 2.0**16 * (1 - 2.0**-24), 2.0**16, 1e20, 3.4e38],
    dtype=np.float32,
)  # fmt: skip


@numba.njit
def _decode_both(codes, scale, kind):
    exact = np.empty(codes.size, np.float32)
    fast = np.empty(codes.size, np.float32)
    scaled = scale * np.float32(DECODE_UNIT)
    for j in range(codes.size):
        exact[j] = kernel._decoded(codes[j], scale, kind)
        fast[j] = kernel._decoded_finite(codes[j], scaled, kind)
    return exact, fast


@numba.njit
def _encode_both(values, inverse, noise, kind):
    exact = np.empty(values.size, np.uint8)
    fast = np.empty(values.size, np.uint8)
    for j in range(values.size):
        exact[j] = kernel._encoded(values[j], inverse, noise[j], kind)
        fast[j] = kernel._encoded_normal(values[j], inverse, noise[j], kind)
    return exact, fast


@numba.njit
def _block_decisions(values):
    """For a block of ``values``: its scale, inverse and whether the kernel encodes it by the
    normal-only path (the kernel's own helpers, as it runs them)."""
    top, bottom = np.uint32(0), np.uint32(0xFFFFFFFF)
    for j in range(values.size):
        size = magnitude_bits(values[j])
        top, bottom = max(top, size), min(bottom, size)
    scale = kernel._block_scale(values, top)
    inverse = kernel._inverse(scale)
    return scale, inverse, kernel._all_normal(top, bottom, inverse)


@numba.njit
def _draws(seed, start, count):
    direct = np.empty(count, np.uint32)
    counted = np.empty(count, np.uint32)
    base = random_base(seed, start)
    for j in range(count):
        direct[j] = random_bits(seed, start + j)
        counted[j] = random_bits_after(base, j)
    return direct, counted


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_closed_form_decode_equals_the_exact_one_for_every_number_code(kind):
    codes = np.arange(256, dtype=np.uint8)
    magnitude = codes & 0x7F if kind == "signed" else codes
    numbers = codes[magnitude <= TOP[kind]]
    rng = np.random.default_rng(0)
    # scales up to 2^16: above it scale × 2^112 overflows and the kernel decodes exactly
    scales = np.concatenate([SCALES, (10.0 ** rng.uniform(-45, 4.8, 200)).astype(np.float32)])
    taken = 0
    for scale in scales:
        if scale >= 2.0**16:
            continue
        taken += 1
        exact, fast = _decode_both(numbers, np.float32(scale), KINDS[kind])
        assert np.array_equal(exact.view(np.uint32), fast.view(np.uint32)), scale
        # and both are the reference's
        want = lowbit.dequantize(numbers, np.array([scale], np.float32), kind)
        assert np.array_equal(exact.view(np.uint32), want.astype(np.float32).view(np.uint32))
    assert taken > 200


def _blocks(rng: np.random.Generator) -> list[np.ndarray]:
    """Blocks around the normal/subnormal boundary of their codes, and across float32."""
    out = []
    for _ in range(400):
        top = np.float32(2.0 ** rng.integers(-149, 128) * rng.uniform(0.5, 1))
        if not np.isfinite(top) or top == 0:
            continue
        ratio = 2.0**-14 * (1 + rng.choice([-1, 1]) * 2.0 ** rng.integers(-24, -2))
        values = top * rng.uniform(ratio, 1, 256)
        values[:2] = top, top * ratio
        values *= rng.choice([-1.0, 1.0], 256)
        out.append(values.astype(np.float32))
    out.append(np.full(256, 3.4e38, np.float32))
    out.append(np.float32(1.0) + np.zeros(256, np.float32))
    return out


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_normal_only_encode_equals_the_exact_one_where_the_kernel_takes_it(kind):
    rng = np.random.default_rng(1)
    taken = refused = 0
    for values in _blocks(rng):
        if kind != "signed":
            values = np.abs(values)
        scale, inverse, normal = _block_decisions(values)
        if not normal:
            refused += 1
            continue
        taken += 1
        for noise in (
            rng.integers(0, 2**32, 256, dtype=np.uint32),
            np.full(256, 0xFFFF, np.uint32),
            np.zeros(256, np.uint32),
        ):
            exact, fast = _encode_both(values, inverse, noise, KINDS[kind])
            assert np.array_equal(exact, fast), (scale, kind)
            # the exact path is the reference's quantization
            same = "unsigned" if kind == "square" else kind  # the kernel encodes √v itself
            codes, _ = lowbit.quantize(values, same, (noise & 0xFFFF).astype(np.int64))
            assert np.array_equal(exact, codes)
    # the boundary is reached from both sides
    assert taken > 100 and refused > 100


def test_blocks_with_specials_zeros_or_subnormal_codes_take_the_exact_path():
    base = np.linspace(0.5, 1.0, 256, dtype=np.float32)
    for poison in (np.nan, np.inf, -np.inf, 0.0, 2.0**-15, SUBNORMAL_SMALLEST):
        values = base.copy()
        values[17] = poison
        assert not _block_decisions(values)[2], poison
    assert _block_decisions(base)[2]
    # a block scaled below float32's smallest normal flushes: its inverse is 0
    assert not _block_decisions(base * np.float32(2.0**-127))[2]


@pytest.mark.parametrize("seed", [0, 1, -1, 2**31, 2**33 + 5, -(2**40) + 3])
@pytest.mark.parametrize("start", [0, 256, 2**31 - 256, 2**32 - 128, 2**32 + 512, 3 * 2**33])
def test_draws_counted_from_a_blocks_first_element_equal_the_direct_ones(seed, start):
    direct, counted = _draws(seed, start, 256)
    assert np.array_equal(direct, counted)
    want = lowbit.random_bits(seed & 0xFFFFFFFF, np.arange(start, start + 256) & 0xFFFFFFFF)
    assert np.array_equal(direct, want)


@numba.njit
def _decode_as_the_kernel(codes, scale, kind):
    out = np.empty(codes.size, np.float32)
    kernel._decode_block(codes, scale, kind, out)
    return out


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_negative_or_nan_scale_in_edited_state_decodes_exactly(kind):
    # The kernels never store one (and a checkpoint with one is refused), but state edited in
    # place can hold one: -1e5 · 2^112 overflows to -Inf, which the closed form must not take.
    codes = np.array([0, 1, 8, 64, 120, 0xC0, 0xF0], np.uint8)
    for scale in (-0.0, -1.0, -65535.0, -65536.0, -1e5, -3.4e38, np.nan):
        got = _decode_as_the_kernel(codes, np.float32(scale), KINDS[kind])
        want, _ = _decode_both(codes, np.float32(scale), KINDS[kind])
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32)), scale
