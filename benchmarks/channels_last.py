"""Channels_last params: adamkit's default step (fp32 state: the loops in memory order;
bf16/8-bit state: the fused kernel on contiguous copies) against the same param contiguous,
against the path these params took before (``fused=False``: torch's for-loop for fp32, the
torch-ops path for low-memory state) and against torch's fused AdamW on the channels_last
param; one conv weight, AdamW, interleaved rounds, one thread. Prints a table, writes JSON.

    python benchmarks/channels_last.py [--shape 256,256,3,3] [--rounds 9] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import adamkit


def _optimizer(shape, precision, layout, fused, peer=False):
    p = torch.nn.Parameter(torch.randn(shape))
    g = torch.randn(shape)
    if layout == "channels_last":
        p.data = p.data.contiguous(memory_format=torch.channels_last)
        g = g.contiguous(memory_format=torch.channels_last)
    if peer:
        opt = torch.optim.AdamW([p], lr=1e-3, fused=True)
    else:
        opt = adamkit.AdamW([p], lr=1e-3, state_precision=precision, min_8bit_size=0, fused=fused)
    p.grad = g
    opt.step()  # state made, the loop compiled
    return opt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="256,256,3,3")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    shape = tuple(int(n) for n in args.shape.split(","))
    contenders = {
        "contiguous": ("contiguous", None),
        "channels_last": ("channels_last", None),
        "channels_last, fused=False (before)": ("channels_last", False),
        "channels_last, torch fused fp32": ("channels_last", None, True),
    }
    rows = []
    print(f"{'state':6s} {'contender':36s} {'median ms':>10s} {'x contiguous':>13s}")
    for precision in ("fp32", "bf16", "8bit"):
        optimizers = {name: _optimizer(shape, precision, *how) for name, how in contenders.items()}
        times: dict[str, list[float]] = {name: [] for name in optimizers}
        for _ in range(args.rounds):
            for name, opt in optimizers.items():
                start = time.perf_counter()
                opt.step()
                times[name].append(time.perf_counter() - start)
        median = {name: sorted(t)[len(t) // 2] * 1e3 for name, t in times.items()}
        for name, ms in median.items():
            ratio = ms / median["contiguous"]
            print(f"{precision:6s} {name:36s} {ms:10.2f} {ratio:12.1f}x")
            rows.append({"state": precision, "contender": name, "median_ms": ms, "ratio": ratio})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shape": shape, "rounds": args.rounds, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
