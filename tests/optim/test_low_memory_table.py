"""Low-memory state for every optimizer of the shared table, every configuration: each step,
taken from the stored (decoded) state, matches the NumPy reference's step from that state.

A state slot reaches bf16 or 8-bit through the engine, not by a cell made for it, so each row
of ``tests/specs.py`` whose optimizer takes ``state_precision`` is checked here.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from adamkit.algorithms.state_formats import SLOT_KINDS, slot_precision
from adamkit.kernels import lowbit_torch
from adamkit.reference import lowbit
from specs import SPECS

LOW_MEMORY = [
    (spec, config)
    for spec in SPECS
    if "state_precision" in inspect.signature(spec.ours).parameters
    for config in spec.configs
    if not any(isinstance(v, torch.Tensor) for v in config.values())
]
IDS = [
    f"{spec.name}-{i}"
    for spec, i in ((s, s.config_ids()[s.configs.index(c)]) for s, c in LOW_MEMORY)
]


def _decoded(state: dict, keys: list[str]) -> dict[str, np.ndarray]:
    full = lowbit_torch.dequantized_entry(state)
    return {k: full[k].numpy().astype(np.float64) for k in keys if k in full}


def _reference_state(previous, state_fields, decoded):
    """The reference's running state with its slots replaced by the decoded ones (its step
    and scalars, e.g. NAdam's mu_product, are the reference's own)."""
    values = {f: decoded[k] for k, f in state_fields.items() if k in decoded}
    return previous._replace(**values)


def _within_one_code(got: np.ndarray, want: np.ndarray, kind: str) -> np.ndarray:
    """Whether each 8-bit value is the reference's, rounded down or up, give or take one code
    (float32 against float64 arithmetic may cross a rounding boundary)."""
    down = lowbit.quantize(want.astype(np.float32), kind, np.zeros(want.size, np.int64))
    up = lowbit.quantize(want.astype(np.float32), kind, np.full(want.size, 0xFFFF, np.int64))
    lo = lowbit.dequantize(*down, kind).astype(np.float64)
    hi = lowbit.dequantize(*up, kind).astype(np.float64)
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    code_step = np.abs(hi - lo) + 2.0 ** -(lowbit.MANTISSA_BITS[kind]) * np.abs(want) * 1.01
    return (got >= lo - code_step) & (got <= hi + code_step)


@pytest.mark.parametrize("precision", ["bf16", "8bit"])
@pytest.mark.parametrize(("spec", "config"), LOW_MEMORY, ids=IDS)
def test_step_from_stored_state_matches_reference(spec, config, precision):
    n = 3 * 256 + 7  # several 8-bit blocks and a partial one
    gen = torch.Generator().manual_seed(11)
    w = torch.nn.Parameter(torch.randn(n, generator=gen))
    if precision not in spec.low_memory:
        pytest.skip(f"{spec.name} refuses {precision} state (tested with it)")
    opt = spec.ours([w], **config, state_precision=precision, min_8bit_size=0)
    if not opt.tensor_slots(opt.param_groups[0]):
        pytest.skip("no state slot in this configuration (SGD without momentum)")
    hyper = spec.make_hyper(config)
    slots = [k for k in spec.state_fields if k in SLOT_KINDS]
    ref_state = spec.reference.init(w.detach().numpy().astype(np.float64))  # (z starts as φ)
    for step in range(1, 5):
        g = torch.randn(n, generator=gen)
        state = opt.state[w]
        if state:
            decoded = _decoded(state, slots)
            ref_state = _reference_state(ref_state, spec.state_fields, decoded)
        p0 = w.detach().numpy().astype(np.float64)
        w.grad = g
        opt.step()
        p_ref, ref_state, _ = spec.reference.step(
            p0, g.numpy().astype(np.float64), ref_state, hyper
        )
        got = w.detach().numpy().astype(np.float64)
        size = np.abs(p0) + np.abs(p_ref - p0)
        assert np.all(np.abs(got - p_ref) <= 1e-5 * size), f"step {step}"
        decoded = _decoded(opt.state[w], slots)
        assert decoded, "no low-memory slot was stored"
        for key, value in decoded.items():
            want = np.asarray(getattr(ref_state, spec.state_fields[key]), dtype=np.float64)
            # (with 8-bit state, AMSGrad's v and max are bf16: slot_precision)
            stored_in = slot_precision(precision, key, opt.state[w])
            if stored_in == "bf16":
                ok = np.isclose(value, want, rtol=2.0**-7, atol=1e-30)
            else:
                ok = _within_one_code(value, want, SLOT_KINDS[key])
            assert ok.all(), f"{key} at step {step}: {np.flatnonzero(~ok)[:5]}"
            stored = opt.state[w][key]
            assert stored.dtype == (torch.bfloat16 if stored_in == "bf16" else torch.uint8), key
