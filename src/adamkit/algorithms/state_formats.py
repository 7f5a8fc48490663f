"""The low-memory state formats' constants: what a stored byte means (read by the NumPy
reference :mod:`adamkit.reference.lowbit`, which documents the formats, and by every kernel).
"""

from __future__ import annotations

from collections.abc import Collection

BLOCK = 256  # elements per 8-bit block, each block with one float32 absmax
KINDS = ("signed", "square", "unsigned")
# The kind of each state slot (by torch's key): moments of g are signed; those of g² are
# stored as their square root ("square"); Adamax's u ≥ 0.
SLOT_KINDS = {
    "exp_avg": "signed",
    "exp_avg_sq": "square",
    "exp_avg_slow": "signed",  # AdEMAMix's slow EMA
    "z": "signed",  # Schedule-Free's iterate (bf16 only: 8-bit is refused)
    "max_exp_avg_sq": "square",
    "exp_inf": "unsigned",
    "square_avg": "square",  # RMSprop's v
    "grad_avg": "signed",  # centered RMSprop's mean gradient
    "momentum_buffer": "signed",  # SGD's and RMSprop's momentum
}
MANTISSA_BITS = {"signed": 3, "square": 4, "unsigned": 4}
# Magnitude codes: 0..TOP are numbers (TOP means 1.0·absmax); INF and NAN are special.
TOP = {"signed": 15 << 3, "square": 15 << 4, "unsigned": 15 << 4}
INF = {"signed": 126, "square": 254, "unsigned": 254}
NAN = {"signed": 127, "square": 255, "unsigned": 255}
SIGN = 0x80  # the sign bit of a signed code
EXP_OFFSET = 112 << 23  # float32's exponent bias (127) less the minifloats' (15), in place
MIN_NORMAL_BITS = 113 << 23  # the pattern of 2^-14: below it the minifloats are linear
# A block whose scale is below float32's smallest normal number is stored as zeros (its 1/absmax
# would overflow to Inf): every codec flushes it alike.
MIN_SCALE = 2.0**-126
# Slots that hold a running maximum (AMSGrad's) are stored rounded toward zero (noise 0), not
# stochastically: a rounding up would be kept by every later max, so the stored max would
# ratchet upward with the rounding noise; a rounding down is undone by the next v above it.
ROUNDED_DOWN = ("max_exp_avg_sq",)
# A running max over an 8-bit v climbs that v's own rounding noise: a code is 1/16 of a binade,
# and stochastic rounding of an EMA whose step is far below a code makes each element a random
# walk (√v reads 0.87-1.17 of fp32's), so AMSGrad's max drifted 13% above fp32's in 10k steps.
# With 8-bit state, a state that has AMSGrad's max keeps v and the max in bf16 (m stays 8-bit).
BF16_BESIDE_MAX = {"max_exp_avg_sq": ("exp_avg_sq", "max_exp_avg_sq")}
NEAREST = 0x8000  # the 16-bit rounding "noise" of round-to-nearest: half a code (ties up)
PARAM_STREAM = 0x5BD1E995  # params' stochastic rounding draws from a random stream of its own
ABSMAX_SUFFIX = "_absmax"  # an 8-bit slot "exp_avg" keeps its scales in "exp_avg_absmax"
# In a state_dict, an 8-bit slot's codes are saved under "exp_avg_codes", a key torch.optim
# does not read (it raises KeyError 'exp_avg' at its first step instead of training on
# codes); in memory they stay under "exp_avg". Checkpoints from before keep codes under
# "exp_avg" beside "exp_avg_absmax" and load as well.
CODES_SUFFIX = "_codes"
KAHAN_KEY = "kahan_comp"  # param_rounding="kahan": the param's compensation, in its dtype


def tensor_seed(step: float, numel: int, stream: int) -> int:
    """The seed of a tensor's random stream at (the new value of) its step count: the
    stochastic rounding of bf16 state and params draws from a hash of (seed, element index),
    so a resumed run draws what an uninterrupted one would. ``stream`` is the tensor's own
    (the optimizers pass the param's position among all their params, which a checkpoint
    keeps), so two tensors of one size round with independent errors."""
    return (
        int(step) * 0x9E3779B9 ^ int(numel) * 0x632BE5AB ^ int(stream) * 0x2545F491
    ) & 0xFFFFFFFF


def slot_precision(precision: str, key: str, keys: Collection[str]) -> str:
    """The precision slot ``key`` is stored in, in a parameter's state of ``precision`` whose
    slots are ``keys``: ``precision``, except the slots :data:`BF16_BESIDE_MAX` keeps in bf16
    under 8-bit state."""
    if precision == "8bit":
        for max_key, slots in BF16_BESIDE_MAX.items():
            if max_key in keys and key in slots:
                return "bf16"
    return precision
