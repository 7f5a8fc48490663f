"""The fused low-memory CPU kernel's results, bit for bit, on inputs chosen to reach every
path of its codecs: block scales from float32's smallest subnormal to its largest finite,
values from 1e-30 to 1e30 within one block, NaN and ±Inf, exact zeros, and blocks whose
smallest value sits just above and just below 2^-14 of their largest (where an 8-bit code
turns subnormal).

The digests were recorded from the kernel as it stood before its fast paths (commit bcfcdab,
which decoded and encoded every element with the special cases). A change of the kernel that
moves any bit of a param or a state tensor fails here; run this file as a script to print the
digests of the current kernel. The cases the kernel took when it grew to every spec (a third
slot, a pass before the update: StableAdamW, cautious masking, AdEMAMix, Lion, AMSGrad, SGD,
RMSprop) were recorded then; StableAdamW's had been the torch-ops path's (which agrees with the
fused kernel to float32 rounding, not bit for bit: tests/optim/test_low_memory.py). The arithmetic is IEEE float32 that LLVM does not reorder
(numba's default, no fastmath), so the digests hold on any x86-64 or AArch64 machine.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
import torch

import adamkit

N = 256 * 48 + 77  # a partial last block


def _block_values(rng: np.random.Generator, kind: int) -> np.ndarray:
    """256 float32 values of one regime (``kind``)."""
    sign = rng.choice([-1.0, 1.0], 256)
    if kind == 0:  # ordinary
        return (rng.standard_normal(256) * 1e-2).astype(np.float32)
    if kind == 1:  # one block spanning 1e-30..1e30
        return (sign * 10.0 ** rng.uniform(-30, 30, 256)).astype(np.float32)
    if kind == 2:  # a block scale anywhere in float32's range, subnormal ones included
        top = 2.0 ** rng.integers(-149, 127)
        return (sign * top * rng.uniform(0.001, 1, 256)).astype(np.float32)
    if kind in (3, 4):  # the smallest just above (3) or just below (4) 2^-14 of the largest
        top = 2.0 ** rng.integers(-40, 40)
        out = sign * top * rng.uniform(2.0**-14, 1, 256)
        out[0] = top
        out[1] = sign[1] * top * 2.0**-14 * (1 + 2.0**-10 if kind == 3 else 1 - 2.0**-10)
        return out.astype(np.float32)
    if kind == 5:  # specials
        out = rng.standard_normal(256).astype(np.float32)
        out[rng.integers(0, 256, 6)] = np.array([np.nan, np.inf, -np.inf] * 2, np.float32)
        return out
    if kind == 6:  # exact zeros among ordinary values
        out = rng.standard_normal(256).astype(np.float32)
        out[rng.integers(0, 256, 40)] = 0.0
        return out
    if kind == 7:  # all zero
        return np.zeros(256, np.float32)
    return (sign * 2.0 ** rng.integers(-149, -120, 256)).astype(np.float32)  # subnormals


def _tensor(rng: np.random.Generator) -> torch.Tensor:
    blocks = [_block_values(rng, int(k)) for k in rng.integers(0, 9, N // 256 + 1)]
    return torch.from_numpy(np.concatenate(blocks)[:N].copy())


CASES = {
    "Adam-8bit": (adamkit.Adam, {}, torch.float32),
    "AdamW-8bit": (adamkit.AdamW, {"weight_decay": 0.1}, torch.float32),
    "Adam-8bit-maximize": (adamkit.Adam, {"maximize": True, "weight_decay": 0.1}, torch.float32),
    "NAdam-8bit": (adamkit.NAdam, {}, torch.float32),
    "RAdam-8bit": (adamkit.RAdam, {}, torch.float32),
    "Adamax-8bit": (adamkit.Adamax, {}, torch.float32),
    "ADOPT-8bit": (adamkit.ADOPT, {}, torch.float32),
    "StableAdamW-8bit": (adamkit.StableAdamW, {"lr": 1e-2}, torch.float32),
    "ScheduleFreeAdamW-bf16": (
        adamkit.ScheduleFreeAdamW, {"state_precision": "bf16"}, torch.float32,
    ),
    "AdamW-8bit-bf16-stochastic": (
        adamkit.AdamW, {"param_rounding": "stochastic"}, torch.bfloat16,
    ),
    "AdamW-8bit-bf16-kahan": (adamkit.AdamW, {"param_rounding": "kahan"}, torch.bfloat16),
    "AdamW-8bit-fp16-stochastic": (
        adamkit.AdamW, {"param_rounding": "stochastic"}, torch.float16,
    ),
    "AdamW-bf16": (adamkit.AdamW, {"state_precision": "bf16"}, torch.float32),
    "NAdam-bf16": (adamkit.NAdam, {"state_precision": "bf16"}, torch.float32),
    "AdamW-bf16-bf16-stochastic": (
        adamkit.AdamW, {"state_precision": "bf16", "param_rounding": "stochastic"}, torch.bfloat16,
    ),
    "AdamW-8bit-cautious": (adamkit.AdamW, {"cautious": True}, torch.float32),
    "Adam-8bit-amsgrad": (adamkit.Adam, {"amsgrad": True}, torch.float32),
    "AdEMAMix-8bit": (adamkit.AdEMAMix, {"t_alpha": 3, "t_beta3": 3}, torch.float32),
    "AdEMAMix-8bit-bf16-kahan": (adamkit.AdEMAMix, {"param_rounding": "kahan"}, torch.bfloat16),
    "Lion-8bit-cautious": (adamkit.Lion, {"cautious": True}, torch.float32),
    "SGD-8bit-nesterov": (adamkit.SGD, {"lr": 1e-2, "momentum": 0.9, "nesterov": True}, torch.float32),
    "RMSprop-bf16-centered": (
        adamkit.RMSprop, {"state_precision": "bf16", "centered": True, "momentum": 0.5},
        torch.float32,
    ),
}  # fmt: skip


def digest(case: str) -> str:
    """sha256 of the params and state after four steps of ``case`` on the stress inputs."""
    cls, kwargs, dtype = CASES[case]
    rng = np.random.default_rng(7)
    params = [torch.nn.Parameter(_tensor(rng).to(dtype)) for _ in range(2)]
    options = {"state_precision": "8bit", "min_8bit_size": 0, **kwargs}
    opt = cls(params, **options)
    if hasattr(opt, "train"):
        opt.train()
    for _ in range(4):
        for p in params:
            p.grad = _tensor(rng).to(dtype)
        opt.step()
    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().reshape(-1).view(torch.uint8).numpy().tobytes())
        for key, value in sorted(opt.state[p].items()):
            if isinstance(value, torch.Tensor):
                h.update(key.encode())
                h.update(value.detach().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


DIGESTS = {
    "ADOPT-8bit": "f2e86fd0dd1617b94d5bf84ad622f8fc",
    "AdEMAMix-8bit": "b66e2e75a48b5ef76ce2d7e83a8fd689",
    "AdEMAMix-8bit-bf16-kahan": "8049c4e85e39b1343c12870130f0bb51",
    "Adam-8bit": "82df093e5d1ef6f35c257d6ccd7b70f9",
    "Adam-8bit-amsgrad": "2f2cd3f19c58f4a1212bcd460779e72f",
    "Adam-8bit-maximize": "7e9aa9ecf38d83f55e1f679a8a22896d",
    "AdamW-8bit": "e80f527ef48a162a0c86dc87d1a74892",
    "AdamW-8bit-bf16-kahan": "89ad216453cc599beaed95e9b73c3089",
    "AdamW-8bit-bf16-stochastic": "bae584ef584bcecbf4c9e888ab3233ae",
    "AdamW-8bit-cautious": "e6bacda113f9048d7840987ae56ff1c8",
    "AdamW-8bit-fp16-stochastic": "c0c47a2337b47c7dddc96bf2230456b8",
    "AdamW-bf16": "ab3859b33c06cfdfa4d120c0763bfed4",
    "AdamW-bf16-bf16-stochastic": "5ccb1dcfcb2a0901971943542c57c622",
    "Adamax-8bit": "9080d2f24178ed7b07010b559e97f031",
    "Lion-8bit-cautious": "17a6782ce4b2fa25685d16825958fce4",
    "NAdam-8bit": "217ccf3d1ecafde0f581fc7c7cc5d4a7",
    "NAdam-bf16": "7791f16c2e9eb860ffbf2cc7235f3e30",
    "RAdam-8bit": "5d4b29c9891eb6422433dd05a28fa2cd",
    "RMSprop-bf16-centered": "780ea0ae96f1fc87d93921bbd814ae0e",
    "SGD-8bit-nesterov": "023341bc6d340d3b8e16687d54baa8ba",
    "ScheduleFreeAdamW-bf16": "8c2ba9f4a0ee3c483829b9ca37561dd8",
    "StableAdamW-8bit": "f3cb45e7b50abcfe6cd1feb30e1d37ce",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_low_memory_results_are_bitwise_unchanged(case):
    torch.set_num_threads(1)
    assert digest(case) == DIGESTS[case]


if __name__ == "__main__":
    for name in sorted(CASES) if len(sys.argv) < 2 else sys.argv[1:]:
        print(f'    "{name}": "{digest(name)}",')
