"""Low-memory state: step time against torch's fused fp32 Adam (interleaved), optimizer state
bytes per parameter and the peak RSS a step adds, on ``adamkit bench``'s workloads (a) one
50M-element tensor, (b) the 54M-parameter transformer's 145 tensors, (c) the 50k MLP.

    .venv/bin/python benchmarks/low_memory.py [--rounds 7] [--threads N] [--json low_memory.json]

``--threads 1`` gives each format's single-thread cost: the "ns/element" column is then per
core (the fused kernels' threads follow torch's thread count).

bitsandbytes' and torchao's 8-bit Adams get rows when they import (neither is installed by
the dev requirements: bitsandbytes' CPU backend and torchao pull torch builds of their own;
``pip install --target DIR --no-deps bitsandbytes torchao`` and ``PYTHONPATH=DIR`` add them).
torchao quantizes only tensors whose size is a multiple of its block (256): (a)'s 50,000,000
elements are not, so its state there is fp32, as its bytes/param column shows.
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np
import torch

import adamkit
from adamkit.bench import _peak_rss_reset, _rss_kb, interleaved, mean_seconds, workload_shapes

WORKLOADS = ["a-one-50M-tensor", "b-transformer-54M", "c-tiny-mlp-50k"]
CONTENDERS = {
    "torch fused fp32": lambda ps: torch.optim.Adam(ps, fused=True),
    "adamkit fp32": lambda ps: adamkit.Adam(ps),
    "adamkit bf16": lambda ps: adamkit.Adam(ps, state_precision="bf16"),
    "adamkit 8bit": lambda ps: adamkit.Adam(ps, state_precision="8bit"),
    "floor: 8-bit bytes only": lambda ps: EightBitBytesFloor(ps),
}


class EightBitBytesFloor:
    """Not an optimizer: a loop that moves the 8-bit step's bytes (read p, g and two codes;
    write p and two codes: 16 B/element) with trivial arithmetic, on the same threads. The
    floor the 8-bit step would reach if its arithmetic were free."""

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.params = params
        self.state = {
            p: {key: torch.zeros(p.numel(), dtype=torch.uint8) for key in ("m", "v")}
            for p in params
        }

    def step(self) -> None:
        for p in self.params:
            codes = self.state[p]
            _move_bytes(
                p.detach().view(-1).numpy(), p.grad.view(-1).numpy(),
                codes["m"].numpy(), codes["v"].numpy(),
            )  # fmt: skip


_FLOOR_LOOP = []  # compiled at first use (numba is imported only then)


def _move_bytes(p, g, m, v) -> None:
    """The floor's loop over torch's threads, as adamkit's loops split their work."""
    if not _FLOOR_LOOP:
        import numba

        @numba.njit(parallel=True, error_model="numpy", nogil=True)
        def loop(p, g, m, v, parts):
            n = p.size
            for k in numba.prange(parts):
                for i in range(k * n // parts, (k + 1) * n // parts):
                    gi = g[i]
                    m[i] = m[i] + np.uint8(1)
                    v[i] = v[i] + np.uint8(1)
                    p[i] = p[i] + gi

        _FLOOR_LOOP.append(loop)
    threads = torch.get_num_threads()
    _FLOOR_LOOP[0](p, g, m, v, threads)
    if torch.get_num_threads() != threads:  # numba's first launch sets OpenMP's count
        torch.set_num_threads(threads)


def _peers() -> dict:
    peers = {}
    try:
        import bitsandbytes as bnb

        peers["bitsandbytes Adam8bit"] = lambda ps: bnb.optim.Adam8bit(ps)
    except Exception:  # not installed, or no backend for this machine
        pass
    try:
        from torchao.optim import AdamW8bit

        peers["torchao AdamW8bit"] = lambda ps: AdamW8bit(ps, weight_decay=0.0)
    except Exception:
        pass
    return peers


def _tensor_bytes(t: torch.Tensor) -> int:
    """Bytes ``t`` holds; a tensor subclass (torchao's quantized state) by its inner tensors,
    as it reports the dtype it stands for."""
    if hasattr(type(t), "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(t, name)) for name in names)
    return t.numel() * t.element_size()


def _state_bytes(opt: torch.optim.Optimizer) -> int:
    return sum(
        _tensor_bytes(t)
        for state in opt.state.values()
        for t in state.values()
        if isinstance(t, torch.Tensor) and t.dim() > 0
    )


def measure(workload: str, rounds: int) -> list[dict]:
    shapes = workload_shapes(workload)
    n_params = sum(torch.Size(s).numel() for s in shapes)
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=gen) for s in shapes]
    grads = [torch.randn(s, generator=gen) * 1e-2 for s in shapes]
    steps, state_bytes, rss = {}, {}, {}
    for name, make in {**CONTENDERS, **_peers()}.items():
        params = [torch.nn.Parameter(t.clone()) for t in init]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt = make(params)
        opt.step()  # state made, kernels compiled or loaded from the cache
        opt.step()
        # what one step adds to the resident set at its peak: its temporaries
        rss[name] = float("nan")
        if _peak_rss_reset():
            before = _rss_kb("VmRSS")
            opt.step()
            rss[name] = (_rss_kb("VmHWM") - before) * 1024
        steps[name] = opt.step
        state_bytes[name] = _state_bytes(opt)
    inner = max(1, int(2e7 // (n_params + 1000 * len(shapes))))
    samples = interleaved(steps, rounds, mean_seconds(inner))
    medians = {name: statistics.median(v) * 1e6 for name, v in samples.items()}
    base = medians["torch fused fp32"]
    return [
        {
            "workload": workload,
            "contender": name,
            "median_us": us,
            "ns_per_element": us * 1e3 / n_params,
            "x_torch_fused": base / us,
            "state_bytes_per_param": state_bytes[name] / n_params,
            "step_peak_rss_bytes_per_param": rss[name] / n_params,
        }
        for name, us in medians.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workload", action="append", choices=WORKLOADS)
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", default="low_memory.json")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [row for w in args.workload or WORKLOADS for row in measure(w, args.rounds)]
    print(
        f"{'workload':18} {'contender':22} {'median us':>10} {'ns/element':>11} "
        f"{'x torch fused':>14} {'state B/param':>14} {'step peak RSS B/param':>22}"
    )
    for r in rows:
        print(
            f"{r['workload']:18} {r['contender']:22} {r['median_us']:>10.1f} "
            f"{r['ns_per_element']:>11.3f} {r['x_torch_fused']:>13.2f}x "
            f"{r['state_bytes_per_param']:>14.3f} {r['step_peak_rss_bytes_per_param']:>22.3f}"
        )
    with open(args.json, "w") as f:
        json.dump({"torch_threads": torch.get_num_threads(), "rows": rows}, f, indent=2)
    print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
