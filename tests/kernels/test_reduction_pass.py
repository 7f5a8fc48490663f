"""The fused CPU kernel's pass before the update (StableAdamW's per-tensor sum) sums the
spec's terms, each computed by the spec's arithmetic: only the sum may be reassociated.

It was once compiled with the element inlined into a function under ``fastmath={"reassoc"}``,
and LLVM evaluated the spec's ``k2 * g * g`` as ``k2 * (g * g)``: 16950 of these 200000
float32 terms were an ulp off, and the sum 7.7e-11 off the spec's (a float64 sum in any
order is ~1e-15 off), which moved StableAdamW's clipped lr in a rare tensor-step."""

from __future__ import annotations

import itertools
import math

import numpy as np

from adamkit.algorithms import SPECS
from adamkit.kernels import _numba_codegen, _numba_driver
from adamkit.kernels._numba_cpu import _block_total


def _sum_function(spec, stored):
    """The cell's generated pass (``{name}_sum_{cell}r1``), from its serial entry point's
    module."""
    mode = spec.reduction_mode(False)
    serial, _ = _numba_driver.cell(spec, stored, mode)
    code = _numba_codegen.cell_code(stored) + f"r{mode}"
    return serial.py_func.__globals__[f"{_numba_codegen.identifier(spec)}_sum_{code}"]


def test_stable_adamws_sum_is_the_spec_terms_sum_in_float32():
    spec = SPECS["stable_adamw"]
    chunk_sum = _sum_function(spec, (True, True, False))
    rng = np.random.default_rng(0)
    n, f32 = 200_000, np.float32
    p = rng.standard_normal(n).astype(f32)
    g = (rng.standard_normal(n) * 10.0 ** rng.uniform(-3, 3, n)).astype(f32)
    m = rng.standard_normal(n).astype(f32)
    v = (rng.random(n) * 10.0 ** rng.uniform(-4, 4, n)).astype(f32)
    unused = np.zeros(n, f32)
    # h: lr, weight decay, ε, ε², 1, max lr; k: 1-β̂1, β̂2, 1-β̂2, β̂1 (then the sum's columns)
    h = tuple(f32(x) for x in (0.01, 0.0, 1e-6, 1e-12, 1.0, 0.01, 0.0, 0.0))
    k = tuple(f32(x) for x in (0.1, 0.999, 0.001, 0.9, 0.0, 0.0))
    got = chunk_sum(p, g, m, v, unused, h, k, (False,) * 4, 0, 0.0)

    v_new = v * k[1] + k[2] * g * g  # numpy: left to right, each product rounded
    terms = g * g / np.maximum(v_new, h[3])
    want = math.fsum(terms.astype(np.float64))
    reassociated = g * g / np.maximum(v * k[1] + k[2] * (g * g), h[3])
    assert (reassociated != terms).sum() > 1000  # the inputs tell the two apart
    assert abs(math.fsum(reassociated.astype(np.float64)) - want) > 1e-11 * want
    assert abs(got - want) <= 1e-13 * want


def test_a_chunks_sum_continues_the_running_total_by_the_tensors_blocks():
    """A chunk adds each of the tensor's 256-element blocks (cut at the chunk's edges) to the
    total it is given, in order, as the low-memory kernel adds its blocks: chunks split on
    block edges give the whole tensor's sum bit for bit."""
    spec = SPECS["stable_adamw"]
    chunk_sum = _sum_function(spec, (True, True, False))
    rng = np.random.default_rng(1)
    n, f32 = 1000, np.float32
    p, m = (rng.standard_normal(n).astype(f32) for _ in range(2))
    # terms over many binades, so that a float64 sum of them rounds and its grouping shows
    g = (rng.standard_normal(n) * 10.0 ** rng.uniform(-12, 12, n)).astype(f32)
    v = (rng.random(n) * 10.0 ** rng.uniform(-4, 24, n)).astype(f32)
    unused = np.zeros(n, f32)
    h = tuple(f32(x) for x in (0.01, 0.0, 1e-6, 1e-12, 1.0, 0.01, 0.0, 0.0))
    k = tuple(f32(x) for x in (0.1, 0.999, 0.001, 0.9, 0.0, 0.0))
    f = (False,) * 4

    def part(lo, hi, total):
        return chunk_sum(p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi], unused[lo:hi], h, k, f, lo, total)

    terms = g * g / np.maximum(v * k[1] + k[2] * g * g, h[3])

    def serial(edges):  # 2.5, then each [edges[i], edges[i + 1]) summed and added in order
        total = 2.5
        for lo, hi in itertools.pairwise(edges):
            total += _block_total(terms[lo:hi])
        return total

    blocks = [0, 256, 512, 768, n]
    assert part(0, n, 2.5) == serial(blocks)
    assert part(512, n, part(0, 512, 2.5)) == serial(blocks)  # chunks on a block's edge
    # a chunk edge inside a block (300) splits that block; the next chunk's blocks keep the
    # tensor's edges (512, 768), not edges counted from the chunk's start (556, 812)
    split = part(300, n, part(0, 300, 2.5))
    assert split == serial([0, 256, 300, 512, 768, n])
    assert split != serial([0, 256, 300, 556, 812, n])  # the data tell the two apart
