"""The first ``step()`` of a fresh process (numba's cache warm), with and without keeping SciPy
out of numba's first load (``adamkit.kernels.numba_import.prepare``), fresh processes
alternating. Prints a table and writes JSON.

    python benchmarks/first_step.py [--runs N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

_CHILD = """
import sys, time
import torch, adamkit
from adamkit.kernels import numba_import
if sys.argv[1] == "without":
    numba_import.prepare = lambda: None
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
opt = adamkit.AdamW(m.parameters(), lr=1e-3)
m(torch.randn(8, 64)).sum().backward()
start = time.perf_counter()
opt.step()
print(time.perf_counter() - start, "scipy.linalg" in sys.modules)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    _child("with")  # numba's cache made, if it was not
    times: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(args.runs):
        for mode in times:
            times[mode].append(_child(mode))
    names = {"with": "SciPy kept out", "without": "SciPy imported"}
    print(f"{'first step':16s} {'median s':>9s} {'min s':>7s} {'max s':>7s}")
    for mode, values in times.items():
        median = statistics.median(values)
        print(f"{names[mode]:16s} {median:9.3f} {min(values):7.3f} {max(values):7.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(times, f, indent=1)


def _child(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, check=True
    )
    seconds, scipy_imported = out.stdout.split()
    if mode == "with" and scipy_imported == "True":
        raise RuntimeError("the first step imported scipy.linalg with numba_import.prepare")
    return float(seconds)


if __name__ == "__main__":
    main()
