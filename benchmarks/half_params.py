"""Half-precision params on the CPU: an AdamW step on 4.2M bfloat16 (or float16) params,
adamkit's param roundings against torch's fused and foreach AdamW, interleaved in one run.

    .venv/bin/python benchmarks/half_params.py [--n 4200000] [--rounds 30] [--dtype bfloat16]
        [--json half_params.json] [--no-before]

Rows: adamkit's default (``param_rounding="nearest"``), ``"stochastic"`` and ``"kahan"``
(each stepped in place by the fused low-memory kernel, float32 math, the moments kept in the
param's dtype as torch keeps them); the paths they took before (``--no-before`` drops them:
nearest through float32 copies of every tensor, :func:`adamkit.kernels.wrappers.half_in_float32`,
stochastic and kahan through the torch-ops path, :mod:`adamkit.kernels.lowbit_torch`);
``torch.optim.AdamW(fused=True)`` and ``(foreach=True)`` on the same params; the float32-param
baseline (adamkit default and torch fused on float32 params of the same count); and the floor,
a numba loop that moves the same bytes as the step (read p, g, m, v and, for Kahan, the
compensation; write all but g) with one add per array, on float32 views of the same memory
(two bfloat16 a float32: numba computes int16 arithmetic in 64-bit lanes, which would make the
floor compute-bound) with a zero gradient (the values stay as they are: no denormals, no NaN).

Time: the median of ``--rounds`` rounds of one step each, the contenders in an order that
rotates every round. Memory: what one step adds to the resident set at its peak (Linux:
``/proc/self/clear_refs`` resets VmHWM to the current RSS; ``malloc_trim(0)`` first returns
freed heap memory to the system, so that temporaries cannot hide in pages kept from the last
step), the largest of three steps, in bytes per param. This sees every allocation (torch's,
numba's, NumPy's), which tracemalloc and torch's CPU allocator (it keeps no statistics) do not.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import numba
import numpy as np
import torch

import adamkit
from adamkit.bench import _peak_rss_reset, _rss_kb, interleaved
from adamkit.kernels import half_params, lowbit

LR, WEIGHT_DECAY = 1e-3, 1e-2


def _adamkit(rounding: str) -> Callable:
    return lambda ps: adamkit.AdamW(ps, lr=LR, weight_decay=WEIGHT_DECAY, param_rounding=rounding)


def _torch(**flags) -> Callable:
    return lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=WEIGHT_DECAY, **flags)


def _before(make: Callable) -> Callable:
    """``make``'s optimizer stepping as before half params were stepped in place."""

    def made(ps):
        opt = make(ps)
        step = opt.step

        def old_step():
            in_place, storage = half_params.half_in_place, dict(lowbit._STORAGE)
            half_params.half_in_place = lambda *args: []  # nearest: the float32 copies
            for key in [k for k in lowbit._STORAGE if k[0] == "fp32"]:
                del lowbit._STORAGE[key]  # stochastic, kahan: the torch-ops path
            try:
                step()
            finally:
                half_params.half_in_place = in_place
                lowbit._STORAGE.update(storage)

        opt.step = old_step
        return opt

    return made


@numba.njit(parallel=True, cache=True, nogil=True)
def _move(p, g, m, v, c, bounds):
    """The floor: one pass that reads p, g, m, v (and c, unless empty) and writes all but g,
    one add each; one contiguous range per thread (a prange over the elements does not
    vectorize)."""
    for t in numba.prange(bounds.size - 1):
        lo, hi = bounds[t], bounds[t + 1]
        if c.size:
            for i in range(lo, hi):
                x = g[i]
                p[i] += x
                m[i] += x
                v[i] += x
                c[i] += x
        else:
            for i in range(lo, hi):
                x = g[i]
                p[i] += x
                m[i] += x
                v[i] += x


class _Floor:
    """Stands in for an optimizer: ``step`` moves the bytes of a step over ``tensors`` (p, g,
    m, v and perhaps Kahan's compensation; an even number of elements), as float32 pairs."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        # the arrays keep their tensors alive (numpy() shares the memory)
        arrays = [t.view(torch.float32).numpy() for t in tensors]
        self.arrays = (*arrays, *[np.empty(0, np.float32)] * (5 - len(arrays)))
        n, threads = arrays[0].size, torch.get_num_threads()
        self.bounds = np.linspace(0, n, threads + 1).astype(np.int64)

    def step(self) -> None:
        _move(*self.arrays, self.bounds)


def _contenders(before: bool) -> dict[str, tuple[str, Callable]]:
    """name -> (param dtype: "half" or "float32", factory of an optimizer-like object)."""
    rows = {
        "adamkit default (nearest)": ("half", _adamkit("nearest")),
        "adamkit stochastic": ("half", _adamkit("stochastic")),
        "adamkit kahan": ("half", _adamkit("kahan")),
        "torch fused": ("half", _torch(fused=True)),
        "torch foreach": ("half", _torch(foreach=True)),
        "fp32 params: adamkit default": ("float32", _adamkit("nearest")),
        "fp32 params: torch fused": ("float32", _torch(fused=True)),
    }
    if before:
        rows["before: nearest (float32 copies)"] = ("half", _before(_adamkit("nearest")))
        rows["before: stochastic (torch ops)"] = ("half", _before(_adamkit("stochastic")))
        rows["before: kahan (torch ops)"] = ("half", _before(_adamkit("kahan")))
    return rows


def _peak_bytes(step: Callable[[], None], libc) -> float:
    """The most one of three steps adds to the resident set at its peak (NaN off Linux)."""
    peaks = []
    for _ in range(3):
        if libc is not None:
            libc.malloc_trim(0)
        if not _peak_rss_reset():
            return float("nan")
        before = _rss_kb("VmRSS")
        step()
        peaks.append((_rss_kb("VmHWM") - before) * 1024)
    return float(max(peaks))


def measure(n: int, dtype: torch.dtype, rounds: int, before: bool) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    init = torch.randn(n, generator=gen).to(dtype)
    grad = (torch.randn(n, generator=gen) * 1e-2).to(dtype)
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        libc = None
    steps, peaks, roles = {}, {}, {}
    for name, (kind, make) in _contenders(before).items():
        p = torch.nn.Parameter(init.clone() if kind == "half" else init.float())
        p.grad = grad.clone() if kind == "half" else grad.float()
        opt = make([p])
        for _ in range(3):  # state made, kernels compiled or loaded from numba's cache
            opt.step()
        peaks[name] = _peak_bytes(opt.step, libc)
        steps[name], roles[name] = opt.step, kind
    for name, count in (("floor: bytes of a step", 4), ("floor: bytes of a kahan step", 5)):
        tensors = [init[: n - n % 2].clone() for _ in range(count)]
        tensors[1].zero_()  # the gradient
        floor = _Floor(tensors)
        floor.step()  # compiled, or loaded from numba's cache
        steps[name], roles[name], peaks[name] = floor.step, "half", float("nan")

    def time_one(step: Callable[[], None]) -> float:
        start = time.perf_counter()
        step()
        return time.perf_counter() - start

    samples = interleaved(steps, rounds, time_one)
    medians = {name: statistics.median(v) * 1e3 for name, v in samples.items()}
    fused = medians["torch fused"]
    return [
        {
            "contender": name,
            "params": str(dtype if roles[name] == "half" else torch.float32).split(".")[-1],
            "median_ms": ms,
            "x_torch_fused": fused / ms,
            "step_peak_extra_bytes_per_param": peaks[name] / n,
        }
        for name, ms in medians.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4_200_000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--dtype", choices=["bfloat16", "float16"], default="bfloat16")
    parser.add_argument("--json", default="half_params.json")
    parser.add_argument("--no-before", action="store_true", help="leave out the old paths")
    args = parser.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    rows = measure(args.n, dtype, args.rounds, not args.no_before)
    print(f"AdamW step, {args.n:,} params, {torch.get_num_threads()} torch threads")
    print(
        f"{'contender':34} {'params':9} {'median ms':>10} {'x torch fused':>14} "
        f"{'peak extra B/param':>19}"
    )
    for r in rows:
        print(
            f"{r['contender']:34} {r['params']:9} {r['median_ms']:>10.2f} "
            f"{r['x_torch_fused']:>13.2f}x {r['step_peak_extra_bytes_per_param']:>19.3f}"
        )
    machine = {
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "numba": numba.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    with open(args.json, "w") as f:
        json.dump({"n": args.n, "dtype": args.dtype, "machine": machine, "rows": rows}, f, indent=2)
    print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
