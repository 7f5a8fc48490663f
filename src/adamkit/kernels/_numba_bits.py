"""The low-memory formats' bit arithmetic as numba intrinsics on 32-bit integers.

numba types every integer operation as 64-bit: written in numba, a minifloat's decode or a
bfloat16 rounding runs on 64-bit vector lanes, with widening and narrowing moves around them,
and the hash behind stochastic rounding multiplies 64-bit lanes (slow on x86). Emitted here
as LLVM IR on i32, they stay 32-bit and vectorize with the float32 math around them: the
8-bit Adam step ran 3x faster for it (benchmarks/low_memory.py). Each function is
:mod:`adamkit.reference.lowbit`'s, bit for bit (tests/optim/test_low_memory.py).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from ..algorithms.state_formats import EXP_OFFSET, INF, MIN_NORMAL_BITS, NAN, TOP

_I32, _F32 = ir.IntType(32), ir.FloatType()
_ABS_MASK, _INF_BITS, _QUIET_NAN_BITS = 0x7FFFFFFF, 0x7F800000, 0x7FC00000
# A minifloat's pattern shifted into a float32's is a float32 2^112 times too small, its
# subnormals included (float32 subnormals): one multiply decodes both ranges.
_UNIT = float(2.0**112)


def _i32(value: int) -> ir.Constant:
    return ir.Constant(_I32, value)


def _f32(value: float) -> ir.Constant:
    return ir.Constant(_F32, value)


def _mantissa_bits(kind: str) -> int:
    return 3 if kind == "signed" else 4


def _decode(builder, code, scale, kind: str):
    """code (i8) × the block's scale → float32: ±Inf and NaN by their own codes."""
    c = builder.zext(code, _I32)
    signed = kind == "signed"
    magnitude = builder.and_(c, _i32(0x7F)) if signed else c
    top = _i32(TOP[kind])
    m = builder.select(builder.icmp_unsigned("<", magnitude, top), magnitude, top)
    bits = builder.shl(m, _i32(23 - _mantissa_bits(kind)))
    sign = builder.shl(builder.and_(c, _i32(0x80)), _i32(24)) if signed else _i32(0)
    unit = builder.fmul(builder.bitcast(builder.or_(bits, sign), _F32), _f32(_UNIT))
    is_nan = builder.icmp_unsigned("==", magnitude, _i32(NAN[kind]))
    special = builder.or_(builder.select(is_nan, _i32(_QUIET_NAN_BITS), _i32(_INF_BITS)), sign)
    return builder.select(
        builder.icmp_unsigned(">=", magnitude, _i32(INF[kind])),
        builder.bitcast(special, _F32),
        builder.fmul(unit, scale),
    )


def _decode_finite(builder, code, scaled, kind: str):
    """code (i8) → float32 for a code known to be a number (no clamp, no special codes), with
    the minifloat's 2^112 folded into ``scaled`` (the block's scale × 2^112, finite): the same
    bits as :func:`_decode`, whose two products round the same exact value once."""
    c = builder.zext(code, _I32)
    if kind == "signed":
        magnitude = builder.shl(builder.and_(c, _i32(0x7F)), _i32(23 - _mantissa_bits(kind)))
        sign = builder.shl(builder.and_(c, _i32(0x80)), _i32(24))
        bits = builder.or_(magnitude, sign)
    else:
        bits = builder.shl(c, _i32(23 - _mantissa_bits(kind)))
    return builder.fmul(builder.bitcast(bits, _F32), scaled)


def _normal_code(builder, r_bits, noise16, kind: str):
    """The code of a magnitude r ≥ 2^-14 (in units of the block's scale, as its pattern):
    noise/2^16 of a code added on the pattern before truncating, clamped to the top code."""
    shift = 23 - _mantissa_bits(kind)
    added = builder.add(builder.shl(noise16, _i32(shift - 16)), _i32(-EXP_OFFSET))
    code = builder.ashr(builder.add(r_bits, added), _i32(shift))
    top = _i32(TOP[kind])
    return builder.select(builder.icmp_signed("<", code, top), code, top)


def _with_sign(builder, code, y_bits, kind: str):
    if kind == "signed":
        code = builder.or_(code, builder.and_(builder.lshr(y_bits, _i32(24)), _i32(0x80)))
    return builder.trunc(code, ir.IntType(8))


def _encode(builder, y, inverse, noise, kind: str):
    """float32 y in a block whose scale's inverse is ``inverse`` → its code (i8), rounded
    with the low 16 bits of ``noise`` (i32; 0x8000 rounds to nearest)."""
    y_bits = builder.bitcast(y, _I32)
    magnitude_bits = builder.and_(y_bits, _i32(_ABS_MASK))
    r = builder.fmul(builder.bitcast(magnitude_bits, _F32), inverse)
    r_bits = builder.bitcast(r, _I32)
    noise16 = builder.and_(noise, _i32(0xFFFF))
    normal = _normal_code(builder, r_bits, noise16, kind)
    # below 2^-14 the codes are linear: noise/2^16 of the smallest code added on r
    to_subnormal = _f32(float(2.0 ** (14 + _mantissa_bits(kind))))
    fraction = builder.fmul(builder.sitofp(noise16, _F32), _f32(2.0**-16))
    subnormal = builder.fptosi(builder.fadd(builder.fmul(r, to_subnormal), fraction), _I32)
    is_normal = builder.icmp_signed(">=", r_bits, _i32(MIN_NORMAL_BITS))
    code = builder.select(is_normal, normal, subnormal)
    if kind != "signed":  # a denominator never reads back as 0
        tiny = builder.and_(
            builder.icmp_signed("==", code, _i32(0)), builder.fcmp_ordered(">", r, _f32(0.0))
        )
        code = builder.select(tiny, _i32(1), code)
    is_inf = builder.icmp_unsigned("==", magnitude_bits, _i32(_INF_BITS))
    code = builder.select(is_inf, _i32(INF[kind]), code)
    is_nan = builder.icmp_unsigned(">", magnitude_bits, _i32(_INF_BITS))
    code = builder.select(is_nan, _i32(NAN[kind]), code)
    return _with_sign(builder, code, y_bits, kind)


def _encode_normal(builder, y, inverse, noise, kind: str):
    """:func:`_encode` of a finite y whose r = |y|·inverse is at least 2^-14 (a block whose
    smallest magnitude is): the normal branch alone, the same bits."""
    y_bits = builder.bitcast(y, _I32)
    magnitude = builder.bitcast(builder.and_(y_bits, _i32(_ABS_MASK)), _F32)
    r_bits = builder.bitcast(builder.fmul(magnitude, inverse), _I32)
    code = _normal_code(builder, r_bits, builder.and_(noise, _i32(0xFFFF)), kind)
    return _with_sign(builder, code, y_bits, kind)


def _codec(kind: str):
    @intrinsic
    def decoded(typingctx, code, scale):
        def codegen(context, builder, signature, args):
            return _decode(builder, args[0], args[1], kind)

        return types.float32(types.uint8, types.float32), codegen

    @intrinsic
    def decoded_finite(typingctx, code, scaled):
        def codegen(context, builder, signature, args):
            return _decode_finite(builder, args[0], args[1], kind)

        return types.float32(types.uint8, types.float32), codegen

    @intrinsic
    def encoded(typingctx, y, inverse, noise):
        def codegen(context, builder, signature, args):
            return _encode(builder, args[0], args[1], args[2], kind)

        return types.uint8(types.float32, types.float32, types.uint32), codegen

    @intrinsic
    def encoded_normal(typingctx, y, inverse, noise):
        def codegen(context, builder, signature, args):
            return _encode_normal(builder, args[0], args[1], args[2], kind)

        return types.uint8(types.float32, types.float32, types.uint32), codegen

    return decoded, decoded_finite, encoded, encoded_normal


# m: sign + e4m3; √v and Adamax's u: e4m4 (the "square" and "unsigned" kinds share a code).
# Each kind: the exact decode and encode, and the fast ones of a block that allows them.
decoded_signed, decoded_finite_signed, encoded_signed, encoded_normal_signed = _codec("signed")
decoded_unsigned, decoded_finite_unsigned, encoded_unsigned, encoded_normal_unsigned = _codec(
    "square"
)
# what a decoded code is at most, and the factor :func:`_decode_finite` folds into the scale
TOP_SIGNED, TOP_UNSIGNED, DECODE_UNIT = TOP["signed"], TOP["square"], _UNIT


@intrinsic
def finite_magnitude_bits(typingctx, x):
    """|x|'s pattern as uint32 when x is finite, else 0 (a block's scale is the largest)."""

    def codegen(context, builder, signature, args):
        magnitude = builder.and_(builder.bitcast(args[0], _I32), _i32(_ABS_MASK))
        finite = builder.icmp_unsigned("<", magnitude, _i32(_INF_BITS))
        return builder.select(finite, magnitude, _i32(0))

    return types.uint32(types.float32), codegen


@intrinsic
def float_of(typingctx, bits):
    """The float32 whose pattern is uint32 ``bits``."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], _F32)

    return types.float32(types.uint32), codegen


@intrinsic
def bf16_load(typingctx, bits):
    """bfloat16 pattern (uint16) → float32."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.shl(builder.zext(args[0], _I32), _i32(16)), _F32)

    return types.float32(types.uint16), codegen


def _bf16_store(builder, x, added_bits):
    """The top half of ``x``'s pattern plus ``added_bits``, quiet NaN for NaN."""
    rounded = builder.lshr(builder.add(builder.bitcast(x, _I32), added_bits), _i32(16))
    is_nan = builder.fcmp_unordered("uno", x, x)
    return builder.trunc(builder.select(is_nan, _i32(0x7FC0), rounded), ir.IntType(16))


@intrinsic
def bf16_nearest(typingctx, x):
    """float32 → bfloat16 pattern, to nearest even."""

    def codegen(context, builder, signature, args):
        bits = builder.bitcast(args[0], _I32)
        odd = builder.and_(builder.lshr(bits, _i32(16)), _i32(1))
        return _bf16_store(builder, args[0], builder.add(odd, _i32(0x7FFF)))

    return types.uint16(types.float32), codegen


def _bf16_stochastic(half: int):
    @intrinsic
    def rounded(typingctx, x, noise):
        """float32 → bfloat16 pattern, stochastically with 16 bits of uint32 ``noise``."""

        def codegen(context, builder, signature, args):
            bits = args[1] if half == 0 else builder.lshr(args[1], _i32(16))
            return _bf16_store(builder, args[0], builder.and_(bits, _i32(0xFFFF)))

        return types.uint16(types.float32, types.uint32), codegen

    return rounded


# The two halves of one random draw round two values (m and v).
bf16_stochastic_low, bf16_stochastic_high = _bf16_stochastic(0), _bf16_stochastic(1)


def _random_mix(builder, x):
    for shift, factor in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        x = builder.xor(x, builder.lshr(x, _i32(shift)))
        x = builder.mul(x, _i32(factor - (1 << 32)))
    return builder.xor(x, builder.lshr(x, _i32(16)))


_GOLDEN = _i32(0x9E3779B1 - (1 << 32))


@intrinsic
def random_bits(typingctx, seed, index):
    """:func:`adamkit.reference.lowbit.random_bits` for int64 ``seed`` and ``index`` (their
    low 32 bits): murmur3's finalizer of index·golden + seed, all modulo 2^32."""

    def codegen(context, builder, signature, args):
        seed32, index32 = (builder.trunc(a, _I32) for a in args)
        return _random_mix(builder, builder.add(builder.mul(index32, _GOLDEN), seed32))

    return types.uint32(types.int64, types.int64), codegen


@intrinsic
def random_base(typingctx, seed, start):
    """index·golden + seed of element ``start`` (int64s, modulo 2^32): what
    :func:`random_bits_after` counts on from."""

    def codegen(context, builder, signature, args):
        seed32, start32 = (builder.trunc(a, _I32) for a in args)
        return builder.add(builder.mul(start32, _GOLDEN), seed32)

    return types.uint32(types.int64, types.int64), codegen


@intrinsic
def random_bits_after(typingctx, base, offset):
    """random_bits(seed, start + offset) from ``base`` = random_base(seed, start): with the
    loop's own counter as ``offset`` the vectorizer keeps the index in 32-bit lanes (the
    index start + offset took 64-bit lanes and their narrowing on every iteration)."""

    def codegen(context, builder, signature, args):
        offset32 = builder.trunc(args[1], _I32)
        return _random_mix(builder, builder.add(builder.mul(offset32, _GOLDEN), args[0]))

    return types.uint32(types.uint32, types.int64), codegen


@intrinsic
def magnitude_bits(typingctx, x):
    """|x|'s pattern as uint32 (a NaN's above +Inf's)."""

    def codegen(context, builder, signature, args):
        return builder.and_(builder.bitcast(args[0], _I32), _i32(_ABS_MASK))

    return types.uint32(types.float32), codegen


# --- float16 (IEEE half) patterns. LLVM's own conversions (fpext/fptrunc of ``half``) where
# the target has instructions for them (x86's F16C, as torch's conversions use; AArch64):
# 4x faster than the integer arithmetic below, which serves other targets (LLVM would call a
# compiler runtime's routine there, which the JIT may not find). Both round to nearest even
# and quiet a NaN keeping its payload's top bits, as torch does (tested bit for bit).
_F16_MAGNITUDE, _F16_INF = 0x7FFF, 0x7C00
_I16, _HALF = ir.IntType(16), ir.HalfType()


def _native_half() -> bool:
    """Whether numba's target converts float16 in hardware (its CPU as numba compiles for it:
    ``NUMBA_CPU_NAME``/``NUMBA_CPU_FEATURES`` when set, else the host's)."""
    import llvmlite.binding as llvm
    from numba.core import config

    triple = llvm.get_process_triple()
    if triple.startswith(("aarch64", "arm64")):
        return True
    if not triple.startswith(("x86_64", "i386", "i686")):
        return False
    features = config.CPU_FEATURES if config.CPU_NAME else llvm.get_host_cpu_features().flatten()
    return "+f16c" in (features or "").split(",")


NATIVE_HALF = _native_half()


def _f16_to_f32(builder, h):
    """float16 pattern (i32, low 16 bits) → float32, exactly."""
    if NATIVE_HALF:
        return builder.fpext(builder.bitcast(builder.trunc(h, _I16), _HALF), _F32)
    return _f16_to_f32_bits(builder, h)


def _f32_to_f16(builder, x):
    """float32 → float16 pattern (i32, low 16 bits), to nearest even."""
    if NATIVE_HALF:
        return builder.zext(builder.bitcast(builder.fptrunc(x, _HALF), _I16), _I32)
    return _f32_to_f16_bits(builder, x)


def _f16_to_f32_bits(builder, h):
    """float16 pattern (i32, low 16 bits) → float32, exactly; a NaN quiet, its payload kept
    (as torch's conversion)."""
    sign = builder.shl(builder.and_(h, _i32(0x8000)), _i32(16))
    magnitude = builder.and_(h, _i32(_F16_MAGNITUDE))
    shifted = builder.shl(magnitude, _i32(13))
    # as a float32 pattern 2^112 too small, subnormals included (the minifloat decode's trick)
    finite = builder.fmul(builder.bitcast(shifted, _F32), _f32(_UNIT))
    finite_bits = builder.or_(builder.bitcast(finite, _I32), sign)
    is_nan = builder.icmp_unsigned(">", magnitude, _i32(_F16_INF))
    quiet = builder.select(is_nan, _i32(0x00400000), _i32(0))
    special = builder.or_(builder.or_(builder.or_(shifted, _i32(_INF_BITS)), quiet), sign)
    is_special = builder.icmp_unsigned(">=", magnitude, _i32(_F16_INF))
    return builder.bitcast(builder.select(is_special, special, finite_bits), _F32)


def _f32_to_f16_bits(builder, x):
    """float32 → float16 pattern (i32, low 16 bits), to nearest even; overflow to ±Inf, NaN
    to a quiet NaN (F. Giesen's branch-free conversion)."""
    bits = builder.bitcast(x, _I32)
    sign = builder.and_(bits, _i32(0x80000000 - (1 << 32)))
    a = builder.xor(bits, sign)
    # NaN: quiet, the payload's top bits kept (as x86's F16C conversion, torch's, does)
    payload = builder.and_(builder.lshr(a, _i32(13)), _i32(0x3FF))
    nan = builder.or_(payload, _i32(0x7E00))
    big = builder.select(builder.icmp_unsigned(">", a, _i32(_INF_BITS)), nan, _i32(_F16_INF))
    # below float16's smallest normal: a float32 add of 0.5 rounds it to nearest even in place
    half = builder.fadd(builder.bitcast(a, _F32), _f32(0.5))
    small = builder.sub(builder.bitcast(half, _I32), _i32(0x3F000000))
    odd = builder.and_(builder.lshr(a, _i32(13)), _i32(1))
    rebias = builder.add(a, _i32(((15 - 127) << 23) + 0xFFF))
    normal = builder.lshr(builder.add(rebias, odd), _i32(13))
    is_big = builder.icmp_unsigned(">=", a, _i32((127 + 16) << 23))
    is_small = builder.icmp_unsigned("<", a, _i32(113 << 23))
    magnitude = builder.select(is_big, big, builder.select(is_small, small, normal))
    return builder.or_(magnitude, builder.lshr(sign, _i32(16)))


@intrinsic
def f16_load(typingctx, bits):
    """float16 pattern (uint16) → float32."""

    def codegen(context, builder, signature, args):
        return _f16_to_f32(builder, builder.zext(args[0], _I32))

    return types.float32(types.uint16), codegen


@intrinsic
def f16_nearest(typingctx, x):
    """float32 → float16 pattern, to nearest even (as torch's ``.to(torch.float16)``)."""

    def codegen(context, builder, signature, args):
        return builder.trunc(_f32_to_f16(builder, args[0]), ir.IntType(16))

    return types.uint16(types.float32), codegen


@intrinsic
def f16_stochastic(typingctx, x, noise):
    """float32 → float16 pattern, stochastically with the low 16 bits of uint32 ``noise``:
    :func:`adamkit.kernels.lowbit_torch.to_float16_stochastic`, bit for bit (the neighbour
    above with probability (x - below)/(above - below), compared in float32)."""

    def codegen(context, builder, signature, args):
        x, noise = args
        near_bits = _f32_to_f16(builder, x)
        near = _f16_to_f32(builder, near_bits)
        up = builder.fcmp_ordered("<", near, x)
        negative = builder.icmp_unsigned("!=", builder.and_(near_bits, _i32(0x8000)), _i32(0))
        # the other neighbour: nextafter toward +Inf (up) or -Inf, on the pattern (from ±0 it
        # goes away from 0 on x's side, the only side taken: x rounds to -0 only from below)
        away = builder.select(builder.xor(up, negative), _i32(1), _i32(-1))
        other_bits = builder.add(near_bits, away)
        other = _f16_to_f32(builder, other_bits)
        lo = builder.select(up, near, other)
        gap_bits = builder.and_(builder.bitcast(builder.fsub(other, near), _I32), _i32(_ABS_MASK))
        # hi with probability (x - lo)/gap > (draw + 0.5)/2^16, compared as both × 2^16: gap is
        # a power of two (the neighbours' spacing) where finite, so × 2^16/gap, exact from its
        # pattern, equals torch's ÷ gap bit for bit and costs no division
        draw = builder.sitofp(builder.and_(noise, _i32(0xFFFF)), _F32)
        scale = builder.bitcast(builder.sub(_i32(0x87000000 - (1 << 32)), gap_bits), _F32)
        take_hi = builder.fcmp_ordered(
            "<", builder.fadd(draw, _f32(0.5)), builder.fmul(builder.fsub(x, lo), scale)
        )
        # hi is the other neighbour when rounding up, else the nearest
        rounded = builder.select(builder.icmp_unsigned("==", take_hi, up), other_bits, near_bits)
        # x representable (±Inf too), or no finite neighbour (NaN, overflow): x to nearest
        exact = builder.or_(
            builder.fcmp_ordered("==", near, x),
            builder.icmp_unsigned(">=", gap_bits, _i32(_INF_BITS)),
        )
        result = builder.select(exact, near_bits, rounded)
        return builder.trunc(result, ir.IntType(16))

    return types.uint16(types.float32, types.uint32), codegen
