"""A diagnostics snapshot per step (what ``Recorder(every=1)`` takes) on the tiny MLP, on a quiet
machine and with another process busy on one core, with torch's two intra-op threads and on one
thread (what ``snapshot`` now runs on). Interleaved rounds; prints a table, writes JSON.

    .venv/bin/python benchmarks/recorder_under_load.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import time

import torch

import adamkit
from adamkit.diagnostics import snapshot

MODES = {
    "one thread (now)": snapshot,
    "torch's threads (before)": snapshot.__wrapped__,  # the undecorated function
}


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def _model() -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 128), torch.nn.ReLU(),
        torch.nn.Linear(128, 10),
    )  # fmt: skip
    params = list(net.parameters())
    opt = adamkit.AdamW(params, lr=1e-3)
    for p in params:
        p.grad = torch.randn_like(p)
    for _ in range(10):
        opt.step()
    return opt, params


def _round(opt, take, steps: int) -> dict[str, float]:
    """Median and mean ms of one step plus one snapshot."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.step()
        take(opt)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median": statistics.median(times), "mean": statistics.fmean(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--json", default="recorder_under_load.json")
    args = parser.parse_args()
    torch.set_num_threads(2)
    opt, _ = _model()
    for take in MODES.values():
        take(opt)  # warm
    results: dict[str, dict[str, list[dict[str, float]]]] = {
        load: {mode: [] for mode in MODES} for load in ("quiet", "one core busy")
    }
    for _ in range(args.rounds):
        for load in results:
            busy = None
            if load != "quiet":
                busy = multiprocessing.Process(target=_busy, args=(3600.0,), daemon=True)
                busy.start()
                time.sleep(0.2)
            try:
                for mode, take in MODES.items():
                    results[load][mode].append(_round(opt, take, args.steps))
            finally:
                if busy is not None:
                    busy.terminate()
                    busy.join()
    rows = []
    print(f"step + snapshot, ms (median of {args.rounds} rounds of {args.steps} steps)")
    print(f"{'machine':<15} {'snapshot on':<26} {'median':>9} {'mean':>9}")
    for load, modes in results.items():
        for mode, rounds in modes.items():
            median = statistics.median(r["median"] for r in rounds)
            mean = statistics.median(r["mean"] for r in rounds)
            rows.append({"load": load, "mode": mode, "median_ms": median, "mean_ms": mean})
            print(f"{load:<15} {mode:<26} {median:>9.2f} {mean:>9.2f}")
    with open(args.json, "w") as f:
        json.dump({"machine": platform.processor() or platform.machine(), "rows": rows}, f)


if __name__ == "__main__":
    main()
