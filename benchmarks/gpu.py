"""GPU benchmark: one Adam step, adamkit's default vs torch fused vs torch foreach, interleaved.

adamkit's default on CUDA is torch's fused kernel until its Triton kernels have passed the
parity suite on a GPU; ``ADAMKIT_CUDA_KERNELS=triton python benchmarks/gpu.py`` times the
Triton kernels (the JSON's ``machine.cuda_kernels`` says which ran).

    python benchmarks/gpu.py                      # on a CUDA machine: the full-size workloads
    python benchmarks/gpu.py --scale 0.25         # smaller, if memory is short
    python benchmarks/gpu.py --device cpu --scale 1e-5 --small-tensors 200   # a smoke run

Workloads: (a) one 1B-parameter fp32 tensor, (b) a transformer-shaped model of 289 tensors
(~335M parameters), (c) 10,000 small tensors (~20M parameters). The ceiling is a
device-to-device copy (read + write). Effective TB/s counts 28 bytes per fp32 parameter (read
p, g, m, v; write p, m, v). Rounds rotate the contenders' order; medians are reported; the
table is printed and the JSON written.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

import adamkit
from adamkit.bench import interleaved

BYTES_PER_PARAM = 28


def workload_shapes(name: str, scale: float, small_tensors: int) -> list[tuple[int, ...]]:
    n = lambda x: max(1, int(x * scale))  # noqa: E731
    if name == "a-one-1B-tensor":
        return [(n(1_000_000_000),)]
    if name == "b-transformer-335M":
        d, layers, vocab = 1024, 24, 32_000
        per_layer = [(3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,),
                     (4 * d, d), (4 * d,), (d, 4 * d), (d,), (d,), (d,)]  # fmt: skip
        return [(n(vocab), d)] + [(n(s[0]), *s[1:]) for s in per_layer] * layers
    if name == "c-10k-small-tensors":
        gen = torch.Generator().manual_seed(0)
        sizes = torch.randint(1000, 3000, (small_tensors,), generator=gen)
        return [(n(int(s)),) for s in sizes]
    raise ValueError(f"unknown workload {name!r}")


WORKLOADS = ["a-one-1B-tensor", "b-transformer-335M", "c-10k-small-tensors"]


class Timer:
    """CUDA events on a GPU (no host round trip inside the timed region), else perf_counter."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn: Callable[[], None]) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        start_s = time.perf_counter()
        fn()
        return time.perf_counter() - start_s


def _contenders(shapes, device) -> dict[str, Callable[[], None]]:
    gen = torch.Generator(device=device).manual_seed(0)
    makers = {
        "adamkit default": lambda ps: adamkit.Adam(ps),
        "torch fused": lambda ps: torch.optim.Adam(ps, fused=True),
        "torch foreach": lambda ps: torch.optim.Adam(ps, foreach=True),
    }
    steps = {}
    for name, make in makers.items():
        params = [torch.nn.Parameter(torch.randn(s, generator=gen, device=device)) for s in shapes]
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, device=device) * 1e-2
        steps[name] = make(params).step
    return steps


def copy_ceiling(n_params: int, device, timer: Timer, rounds: int) -> float:
    """Bytes per second of a device-to-device copy (counting the read and the write)."""
    src = torch.randn(n_params, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    seconds = statistics.median(timer(lambda: dst.copy_(src)) for _ in range(rounds))
    return 2 * src.numel() * src.element_size() / seconds


def run_workload(name: str, args, device, timer: Timer) -> list[dict]:
    shapes = workload_shapes(name, args.scale, args.small_tensors)
    n_params = sum(torch.Size(s).numel() for s in shapes)
    steps = _contenders(shapes, device)
    for step in steps.values():  # warm-up: compile, build launch tables, allocate state
        step()
        step()
    times = interleaved(steps, args.rounds, timer)
    ceiling = copy_ceiling(min(n_params, 250_000_000), device, timer, args.rounds)
    del steps
    fused = statistics.median(times["torch fused"])
    rows = []
    for contender, samples in times.items():
        seconds = statistics.median(samples)
        rate = BYTES_PER_PARAM * n_params / seconds
        rows.append(
            {
                "workload": name,
                "contender": contender,
                "n_params": n_params,
                "n_tensors": len(shapes),
                "median_ms": seconds * 1e3,
                "tb_per_s": rate / 1e12,
                "percent_of_copy": 100 * rate / ceiling,
                "ratio_to_torch_fused": fused / seconds,
                "copy_tb_per_s": ceiling / 1e12,
            }
        )
    return rows


def format_rows(rows: list[dict]) -> str:
    header = (
        f"{'workload':<22} {'contender':<16} {'tensors':>7} {'median ms':>10} {'TB/s':>6} "
        f"{'% copy':>7} {'x torch fused':>13}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['workload']:<22} {r['contender']:<16} {r['n_tensors']:>7} "
            f"{r['median_ms']:>10.3f} {r['tb_per_s']:>6.2f} {r['percent_of_copy']:>6.0f}% "
            f"{r['ratio_to_torch_fused']:>12.2f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke run")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply tensor sizes")
    parser.add_argument("--small-tensors", type=int, default=10_000, help="tensors in (c)")
    parser.add_argument("--workload", action="append", choices=WORKLOADS)
    parser.add_argument("--json", default="bench-gpu.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py: error: no CUDA device; use --device cpu for a smoke run")
        return 2
    timer = Timer(device)
    rows = [row for w in args.workload or WORKLOADS for row in run_workload(w, args, device, timer)]
    machine = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda_kernels": adamkit.kernels.registry.get_default("cuda"),
        "scale": args.scale,
        "rounds": args.rounds,
    }
    with open(args.json, "w") as f:
        json.dump({"machine": machine, "rows": rows}, f, indent=2)
    print(format_rows(rows))
    print(f"\nmachine: {machine}\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
