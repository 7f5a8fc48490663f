"""The fused low-memory CPU kernel for every optimizer of the shared table, against the torch-ops
path (``fused=False``), which is checked against the NumPy reference itself
(tests/optim/test_low_memory_table.py).

Every row and configuration of ``tests/specs.py`` (cautious rows too) with each low-memory
precision it takes runs the kernel: a third slot (AdEMAMix's slow EMA, AMSGrad's max in bf16
beside 8-bit m), one slot (Lion, SGD), a pass before the update (StableAdamW's RMS, the cautious
mask's mean). The two paths compute in float32 in different orders, so they agree to float32
rounding: params within 1e-4 relative, 8-bit codes within one code on under 1% of elements,
bf16 slots within bf16 rounding. The torch-ops path is refused during the fused run, so a test
cannot pass by both runs taking it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adamkit.kernels import lowbit
from specs import CAUTIOUS_SPECS, LOW_MEMORY_IDS, LOW_MEMORY_ROWS, SPECS

ROWS, IDS = LOW_MEMORY_ROWS, LOW_MEMORY_IDS


def _forbid_torch_ops(monkeypatch):
    def refused(*args, **kwargs):
        raise AssertionError("a tensor took the torch-ops path, not the fused kernel")

    monkeypatch.setattr(lowbit, "step_tensor", refused)


def _run(cls, config, params0, grads, precision, *, fused, dtype=torch.float32, **options):
    params = [torch.nn.Parameter(p.detach().clone().to(dtype)) for p in params0]
    opt = cls(params, **config, state_precision=precision, min_8bit_size=0, fused=fused, **options)
    if hasattr(opt, "train"):
        opt.train()
    for step in grads:
        for p, g in zip(params, step, strict=True):
            p.grad = g.clone().to(dtype)
        opt.step()
    return params, opt


def _inputs(seed: int, steps: int = 5):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(3 * 256 + 7,), (33, 40), (5,)]
    params = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(steps)]
    return params, grads


def _assert_states_agree(fast, slow, a, b):
    for key, value in fast.state[a].items():
        other = slow.state[b][key]
        assert value.dtype == other.dtype, key
        if value.dtype == torch.uint8:
            off = (value.int() - other.int()).abs()
            assert off.le(1).all() and off.ne(0).float().mean() < 0.01, key
        elif value.is_floating_point():
            torch.testing.assert_close(value.float(), other.float(), rtol=1e-2, atol=1e-6)


@pytest.mark.parametrize(("spec", "config", "precision"), ROWS, ids=IDS)
def test_fused_kernel_agrees_with_the_torch_ops_path(spec, config, precision, monkeypatch):
    params0, grads = _inputs(5)
    slow_params, slow = _run(spec.ours, config, params0, grads, precision, fused=False)
    _forbid_torch_ops(monkeypatch)
    fast_params, fast = _run(spec.ours, config, params0, grads, precision, fused=True)
    for a, b in zip(fast_params, slow_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        _assert_states_agree(fast, slow, a, b)


def _half_ulps(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """How many units in the last place of their half dtype ``a`` and ``b`` lie apart."""
    ints = [t.detach().view(torch.int16).numpy().astype(np.int64) for t in (a, b)]
    # the patterns as a monotonic integer line (negative floats count down from zero)
    line = [np.where(x < 0, -(x & 0x7FFF), x) for x in ints]
    return np.abs(line[0] - line[1])


# Half params with the three roundings, on the cells new to the kernel (three slots, one slot,
# a pass before the update).
HALF_ROWS = [
    (spec, config)
    for spec in [*SPECS, *CAUTIOUS_SPECS]
    for config in spec.configs[:1]
    if spec.name in ("AdEMAMix", "StableAdamW", "Lion", "AdamW-cautious")
] + [
    (spec, config)
    for spec in SPECS
    for config in spec.configs
    if (spec.name, config) in (("SGD", {"momentum": 0.9}), ("RMSprop", {"centered": True}))
]


@pytest.mark.parametrize(
    ("dtype", "rounding"),
    [(torch.bfloat16, "stochastic"), (torch.bfloat16, "kahan"), (torch.float16, "stochastic")],
    ids=["bf16-stochastic", "bf16-kahan", "fp16-stochastic"],
)
@pytest.mark.parametrize(("spec", "config"), HALF_ROWS, ids=[s.name for s, _ in HALF_ROWS])
def test_half_params_with_each_rounding_agree_with_the_torch_ops_path(
    spec, config, dtype, rounding, torch_ops_in_numba_order, monkeypatch
):
    # (The torch-ops path with √ correctly rounded, as the kernel's: torch's vectorized
    # float32 √ is an ulp off in places on some CPUs: on an AVX-512 Xeon, RMSprop's first
    # step at element 198 of the 33x40 param. Kahan's compensation keeps what the bf16 param
    # rounds away, so that ulp of the update is a bf16 ulp of the compensation there
    # (2.110e-5 against 2.122e-5), and 3.8e-6 in an element after five steps, past the
    # states' atol of 1e-6. It passed on the AMD EPYC of earlier sessions.)
    params0, grads = _inputs(6)
    options = {"param_rounding": rounding}
    slow_params, slow = _run(
        spec.ours, config, params0, grads, "8bit", fused=False, dtype=dtype, **options
    )
    _forbid_torch_ops(monkeypatch)
    fast_params, fast = _run(
        spec.ours, config, params0, grads, "8bit", fused=True, dtype=dtype, **options
    )
    for a, b in zip(fast_params, slow_params, strict=True):
        assert a.dtype == dtype
        # the same float32 values but for rounding, so the same half params but where a
        # stochastic rounding draw fell between the two paths' float32 results
        ulps = _half_ulps(a, b)
        assert ulps.max() <= 1 and (ulps > 0).mean() < 0.01
        _assert_states_agree(fast, slow, a, b)


@pytest.mark.parametrize("name", ["StableAdamW", "AdamW-cautious", "AdEMAMix"])
def test_two_threads_agree_with_one(name):
    """The parallel loops (threads over blocks; a pass before the update sums each thread's
    blocks apart and adds them in a fixed order) against the serial ones."""
    spec = next(s for s in [*SPECS, *CAUTIOUS_SPECS] if s.name == name)
    gen = torch.Generator().manual_seed(8)
    params0 = [torch.randn(300_001, generator=gen), torch.randn(70_000, generator=gen)]
    grads = [[torch.randn_like(p) for p in params0] for _ in range(3)]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, one_opt = _run(spec.ours, spec.configs[0], params0, grads, "8bit", fused=True)
        torch.set_num_threads(2)
        two, two_opt = _run(spec.ours, spec.configs[0], params0, grads, "8bit", fused=True)
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(one, two, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        _assert_states_agree(one_opt, two_opt, a, b)
