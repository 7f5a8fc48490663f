"""``adamkit bench``: time per Adam step against torch.optim on this machine, interleaved.

Workloads: (a) one 50M-parameter tensor, (b) a transformer-shaped model (~145 tensors,
~54M parameters), (c) a tiny MLP (4 tensors, ~50k parameters). Contenders: adamkit's default,
adamkit's default with a diagnostics Recorder sampling every step (its overhead),
torch.optim.Adam's default (the for-loop on CPU), torch foreach, torch fused, and a
"memory-limit" loop that moves exactly an Adam step's bytes (read p, g, m, v; write p, m, v)
with trivial arithmetic: the ceiling for this machine. Rounds rotate the contenders so that
noise from the shared machine falls on all of them alike.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

from .diagnostics import Recorder
from .optim import Adam

BYTES_PER_PARAM = 28  # fp32: read p, g, m, v (16 B) + write p, m, v (12 B)
# Low-memory state moves fewer bytes: bf16 m, v (read 12 B, write 8 B); 8-bit codes plus a
# float32 scale per 256 elements (read 10.03 B, write 6.03 B). docs/low-memory.md.
BYTES_PER_PARAM_OF = {"adamkit bf16": 20, "adamkit 8bit": 16 + 16 / 256}


@dataclass
class Row:
    workload: str
    contender: str
    n_params: int
    n_tensors: int
    median_ms: float
    gb_per_s: float
    ratio_to_torch_fused: float = float("nan")
    percent_of_ceiling: float = float("nan")
    peak_extra_mb: float = float("nan")


def workload_shapes(name: str) -> list[tuple[int, ...]]:
    if name == "a-one-50M-tensor":
        return [(50_000_000,)]
    if name == "b-transformer-54M":
        d, layers, vocab = 576, 12, 10_000
        per_layer = [
            (3 * d, d),
            (3 * d,),
            (d, d),
            (d,),
            (d,),
            (d,),
            (4 * d, d),
            (4 * d,),
            (d, 4 * d),
            (d,),
            (d,),
            (d,),
        ]
        return [(vocab, d)] + per_layer * layers
    if name == "c-tiny-mlp-50k":
        return [(256, 128), (256,), (64, 256), (64,)]
    if name == "d-10k-one-element":  # per-tensor overhead alone (benchmarks/algorithms.py)
        return [(1,)] * 10_000
    raise ValueError(f"unknown workload {name!r}")


WORKLOADS = ["a-one-50M-tensor", "b-transformer-54M", "c-tiny-mlp-50k"]


def _peak_rss_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (peak RSS) to the current RSS
        return True
    except OSError:
        return False


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


Step = Callable[[], None]


def interleaved(
    steps: dict[str, Step], rounds: int, time_one: Callable[[Step], float]
) -> dict[str, list[float]]:
    """``rounds`` timings of every contender, ``time_one(step)`` each, in an order that rotates
    every round so that noise from the shared machine falls on all of them alike."""
    samples: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            samples[name].append(time_one(steps[name]))
    return samples


def mean_seconds(inner: int) -> Callable[[Step], float]:
    """A ``time_one`` for :func:`interleaved`: seconds per call, over ``inner`` calls."""

    def time_one(step: Step) -> float:
        start = time.perf_counter()
        for _ in range(inner):
            step()
        return (time.perf_counter() - start) / inner

    return time_one


def _memory_limit_step(params, grads, states) -> Callable[[], None]:
    """The memory-limit loop's step over these tensors (numba loaded here, once, not in the
    timed step)."""
    from .kernels import numba_import

    numba_import.prepare()  # (before numba's first load, as every fused kernel's import)
    from .kernels import _numba_cpu

    def step() -> None:
        for p, g, (m, v) in zip(params, grads, states, strict=True):
            _numba_cpu.memory_limit_parallel(
                p.view(-1).numpy(), g.view(-1).numpy(), m.view(-1).numpy(), v.view(-1).numpy()
            )

    return step


def _with_recorder(params) -> Adam:
    optimizer = Adam(params)
    optimizer._bench_recorder = Recorder(optimizer, every=1)  # kept alive with the optimizer
    return optimizer


def _contenders(shapes, gen) -> dict[str, Callable[[], None]]:
    grads = [torch.randn(s, generator=gen) * 1e-2 for s in shapes]
    init = [torch.randn(s, generator=gen) for s in shapes]
    steps: dict[str, Callable[[], None]] = {}
    makers = {
        "adamkit default": lambda ps: Adam(ps),
        "adamkit+recorder": _with_recorder,
        "adamkit bf16": lambda ps: Adam(ps, state_precision="bf16"),
        "adamkit 8bit": lambda ps: Adam(ps, state_precision="8bit"),
        "torch default": lambda ps: torch.optim.Adam(ps),
        "torch foreach": lambda ps: torch.optim.Adam(ps, foreach=True),
        "torch fused": lambda ps: torch.optim.Adam(ps, fused=True),
    }
    for name, make in makers.items():
        params = [torch.nn.Parameter(t.clone()) for t in init]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        steps[name] = make(params).step
    params = [t.clone() for t in init]
    states = [(torch.zeros_like(t), torch.zeros_like(t)) for t in init]
    steps["memory-limit"] = _memory_limit_step(params, grads, states)
    return steps


def run_workload(name: str, rounds: int, seed: int = 0) -> list[Row]:
    shapes = workload_shapes(name)
    n_params = sum(torch.Size(s).numel() for s in shapes)
    steps = _contenders(shapes, torch.Generator().manual_seed(seed))
    peak_extra = {}
    can_measure = _peak_rss_reset()
    for contender, step in steps.items():  # warm-up, and the peak memory of one step
        step()
        if can_measure:
            _peak_rss_reset()
            before = _rss_kb("VmRSS")
            step()
            peak_extra[contender] = (_rss_kb("VmHWM") - before) / 1024
    # Tiny models take several hundred steps per sample (~20 ms or more): a sample of a few
    # steps mostly measures the hand-over from the previous contender, whose thread pool (torch
    # and numba each run their own OpenMP pool) still spins on this machine's few cores.
    inner = max(1, int(2e7 // n_params))
    times = interleaved(steps, rounds, mean_seconds(inner))
    rows = []
    for contender, samples in times.items():
        ms = statistics.median(samples) * 1e3
        gbs = BYTES_PER_PARAM_OF.get(contender, BYTES_PER_PARAM) * n_params / (ms * 1e-3) / 1e9
        rows.append(
            Row(
                name,
                contender,
                n_params,
                len(shapes),
                ms,
                gbs,
                peak_extra_mb=peak_extra.get(contender, float("nan")),
            )
        )
    fused_ms = next(r.median_ms for r in rows if r.contender == "torch fused")
    ceiling = next(r.gb_per_s for r in rows if r.contender == "memory-limit")
    for row in rows:
        row.ratio_to_torch_fused = fused_ms / row.median_ms
        row.percent_of_ceiling = 100 * row.gb_per_s / ceiling
    return rows


_FIRST_STEP = (
    "import time, torch, adamkit; p = torch.nn.Parameter(torch.zeros(1000));"
    "p.grad = torch.ones(1000); o = {cls}([p]); t = time.perf_counter(); o.step();"
    "print(time.perf_counter() - t)"
)


def first_step_latency() -> dict[str, float]:
    """Seconds for the first optimizer step in a fresh process: adamkit's fused step with an
    empty numba cache (cold: numba compiles the loop), again with the cache that run left
    (warm: numba loads it), and torch.optim.Adam's for comparison."""
    import tempfile

    def run(cls: str, env: dict[str, str]) -> float:
        code = _FIRST_STEP.format(cls=cls)
        out = subprocess.check_output([sys.executable, "-c", code], text=True, env=env)
        return float(out)

    with tempfile.TemporaryDirectory(prefix="adamkit-numba-cache-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        cold = run("adamkit.Adam", env)
        warm = run("adamkit.Adam", env)
    return {"cold_s": cold, "warm_s": warm, "torch_s": run("torch.optim.Adam", dict(os.environ))}


def format_rows(rows: list[Row]) -> str:
    header = (
        f"{'workload':<20} {'contender':<16} {'median ms':>10} {'GB/s':>7} "
        f"{'x torch fused':>13} {'% ceiling':>9} {'peak extra MB':>13}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r.workload:<20} {r.contender:<16} {r.median_ms:>10.3f} {r.gb_per_s:>7.2f} "
            f"{r.ratio_to_torch_fused:>12.2f}x {r.percent_of_ceiling:>8.0f}% "
            f"{r.peak_extra_mb:>13.1f}"
        )
    return "\n".join(lines)


def run_bench(
    workloads: list[str], rounds: int, json_path: str | None, progress: bool = False
) -> str:
    from ._extras import progress as bar_of

    rows = []
    with bar_of(total=len(workloads) + 1, desc="bench", unit="part", disable=not progress) as bar:
        for name in workloads:
            bar.set_postfix_str(name)
            rows += run_workload(name, rounds)
            bar.update(1)
        bar.set_postfix_str("first step in a new process")
        latency = first_step_latency()
        bar.update(1)
    machine = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if json_path:
        with open(json_path, "w") as f:
            json.dump(
                {
                    "machine": machine,
                    "rows": [asdict(r) for r in rows],
                    "first_step_latency": latency,
                },
                f,
                indent=2,
            )
    text = format_rows(rows)
    for name in workloads:
        ms = {r.contender: r.median_ms for r in rows if r.workload == name}
        overhead = ms["adamkit+recorder"] / ms["adamkit default"] - 1
        text += f"\ndiagnostics Recorder(every=1) overhead on {name}: {overhead:+.0%} of a step"
    text += (
        f"\n\nfirst step in a new process: adamkit {latency['cold_s'] * 1e3:.0f} ms cold "
        f"(empty numba cache: compiles), {latency['warm_s'] * 1e3:.0f} ms warm (loads the "
        f"cache); torch.optim.Adam {latency['torch_s'] * 1e3:.0f} ms"
    )
    text += f"\nmachine: {machine}"
    return text
