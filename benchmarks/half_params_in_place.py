"""bfloat16 params with torch-format state: the fused kernel stepping them in place against the
path before (float32 copies of p, g and every slot through the fp32 kernel, rounded once),
interleaved in one process, one thread. Prints a table and writes JSON.

    python benchmarks/half_params_in_place.py [--elements N] [--rounds R] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import adamkit
from adamkit.kernels import half_params

CASES = [
    ("AdamW", adamkit.AdamW, {}),
    ("Adam amsgrad", adamkit.Adam, {"amsgrad": True}),
    ("AdEMAMix", adamkit.AdEMAMix, {}),
    ("RMSprop centered, momentum", adamkit.RMSprop, {"centered": True, "momentum": 0.9}),
    ("SGD momentum", adamkit.SGD, {"momentum": 0.9}),
    ("Lion", adamkit.Lion, {}),
    ("ScheduleFreeAdamW", adamkit.ScheduleFreeAdamW, {}),
    ("StableAdamW", adamkit.StableAdamW, {}),
    ("AdamW cautious", adamkit.AdamW, {"cautious": True}),
]


def _copies(*args):
    return []  # half_params.half_in_place taking nothing: every half param goes to the copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=4_200_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    in_place = half_params.half_in_place
    rows = []
    print(f"{'algorithm':28s} {'in place ms':>12s} {'copies ms':>10s} {'speed-up':>9s}")
    for name, cls, options in CASES:
        optimizers = {}
        for path, chooser in (("in place", in_place), ("copies", _copies)):
            half_params.half_in_place = chooser
            p = torch.nn.Parameter(torch.randn(args.elements).bfloat16())
            optimizers[path] = (cls([p], lr=1e-3, **options), chooser)
            if hasattr(optimizers[path][0], "train"):  # Schedule-Free: its train mode
                optimizers[path][0].train()
            p.grad = torch.randn(args.elements).bfloat16()
            optimizers[path][0].step()  # state made, the loop compiled
        times: dict[str, list[float]] = {path: [] for path in optimizers}
        for _ in range(args.rounds):
            for path, (opt, chooser) in optimizers.items():
                half_params.half_in_place = chooser
                start = time.perf_counter()
                opt.step()
                times[path].append(time.perf_counter() - start)
        half_params.half_in_place = in_place
        median = {path: sorted(t)[len(t) // 2] * 1e3 for path, t in times.items()}
        ratio = median["copies"] / median["in place"]
        print(f"{name:28s} {median['in place']:12.2f} {median['copies']:10.2f} {ratio:8.2f}x")
        rows.append({"algorithm": name, "in_place_ms": median["in place"],
                     "copies_ms": median["copies"], "speedup": ratio})  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"elements": args.elements, "rounds": args.rounds, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
