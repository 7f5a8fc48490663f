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
fused kernel to float32 rounding, not bit for bit: tests/optim/test_low_memory.py).

The digests were re-recorded once (19 of 22 moved), when the kernel began to store one NaN
(0x7FC00000) for every NaN: which of two NaN operands an operation returns is the compiler's
choice, and a cell's entry point and the copy of its loop inlined into its parallel entry point
chose differently, so a NaN's sign depended on whether the cell came from numba's cache (the
test below). Digests taken with every NaN, and every 8-bit NaN code, made positive were checked
unchanged by that change: only NaNs moved. The arithmetic is IEEE float32 that LLVM does not
reorder (numba's default, no fastmath), so the digests hold on any x86-64 or AArch64 machine.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

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
    "ADOPT-8bit": "d93d26c2b9a068a2645f8641e05abf83",
    "AdEMAMix-8bit": "56b8f5087143f191eea78741998a5bdc",
    "AdEMAMix-8bit-bf16-kahan": "077a334d1de9dda242c612873174a797",
    "Adam-8bit": "704c9e561d971691c0c65a3b1d58d7e9",
    "Adam-8bit-amsgrad": "9f8f9c30726d068084d19490565a99fc",
    "Adam-8bit-maximize": "e6326b1a34dec91cb7418db968128ac9",
    "AdamW-8bit": "62d98cf6b08f89cbf8121dcae714b517",
    "AdamW-8bit-bf16-kahan": "f5356b3e4424054256bbb6ecb340dbb0",
    "AdamW-8bit-bf16-stochastic": "b0cc8dedd5d15e66e568e3d6d1f7e421",
    "AdamW-8bit-cautious": "cac419a5d5fc77735bfe89373cbf10f5",
    "AdamW-8bit-fp16-stochastic": "8ada8b7d94fa5e6e07bedadbb1d21c21",
    "AdamW-bf16": "6fb1a1754f90b6307d1be4feba7aaf49",
    "AdamW-bf16-bf16-stochastic": "5ccb1dcfcb2a0901971943542c57c622",
    "Adamax-8bit": "350ead9671ea89c7523d8fbeecaf6605",
    "Lion-8bit-cautious": "17a6782ce4b2fa25685d16825958fce4",
    "NAdam-8bit": "d559bb58df264ae317b48b564401f61e",
    "NAdam-bf16": "a4efb37663cc5bf76e67101550419430",
    "RAdam-8bit": "465e3862cb8e0fb27d97aa5af5b87b28",
    "RMSprop-bf16-centered": "d7d87430d55c7f727936d42e69fd9741",
    "SGD-8bit-nesterov": "023341bc6d340d3b8e16687d54baa8ba",
    "ScheduleFreeAdamW-bf16": "46e996d50d4a6d9d06d5e71359666223",
    "StableAdamW-8bit": "73284d712a04af15903ba002da5b583b",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_low_memory_results_are_bitwise_unchanged(case):
    torch.set_num_threads(1)
    assert digest(case) == DIGESTS[case]


@pytest.mark.parametrize("case", ["NAdam-bf16", "ScheduleFreeAdamW-bf16"])
def test_a_cell_loaded_from_numbas_cache_gives_the_bits_of_a_fresh_compile(case, tmp_path):
    # The first process compiles the cell; the second loads it from numba's cache, where the
    # parallel entry point runs its own inlined copy of the loop, not the one compiled
    # beside it. Where two NaNs met, the two copies returned different ones (x86 keeps the
    # first operand's, and LLVM ordered the operands differently): the kernel stores one NaN.
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    script = [sys.executable, str(Path(__file__).resolve()), case]
    runs = [subprocess.run(script, env=env, capture_output=True, text=True) for _ in range(2)]
    assert all(run.returncode == 0 for run in runs), [run.stderr[-2000:] for run in runs]
    assert "compiling" in runs[0].stderr and "compiling" not in runs[1].stderr
    assert runs[0].stdout == runs[1].stdout == f'    "{case}": "{DIGESTS[case]}",\n'


if __name__ == "__main__":
    for name in sorted(CASES) if len(sys.argv) < 2 else sys.argv[1:]:
        print(f'    "{name}": "{digest(name)}",')
