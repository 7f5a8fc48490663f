"""One command for a GPU machine: the CUDA tests, ``adamkit check`` and benchmarks/gpu.py, with
every result written to one folder (each step has a time limit; all of them together stay
under 8 minutes).

    python benchmarks/gpu_check.py OUTDIR          # or: make gpu-check OUT=OUTDIR
    python benchmarks/gpu_check.py OUTDIR --smoke  # on a machine without a GPU: the same steps,
                                                   # CPU-sized, to check the runner itself

OUTDIR gets ``summary.txt``/``summary.json`` (each step: command, exit status, seconds, files),
``environment.txt`` (nvidia-smi, versions), ``pytest-cuda.txt``/``.xml``, ``check.txt``/
``.json`` and ``bench-gpu-{default,triton}.txt``/``.json``. The exit status is 0 only when
every step passed. The Triton kernels become CUDA's default only after ``check`` passes here
(docs/triton.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BUDGET_S = 480  # all steps together
CUDA_TESTS = [
    "tests/adversarial/test_cuda_default.py",
    "tests/kernels/test_triton.py",
    "tests/kernels/test_triton_lowbit.py",
]


def steps(out: Path, smoke: bool) -> list[tuple[str, list[str], dict[str, str], int]]:
    """(name, command, extra environment, time limit in seconds) of each step."""
    py = sys.executable
    tests = CUDA_TESTS[:1] if smoke else CUDA_TESTS  # the interpreter runs test_triton slowly
    # Compiled Triton kernels on CUDA tensors; the low-memory CUDA test on the Triton pass.
    test_env = {"ADAMKIT_CUDA_KERNELS": "triton"}
    if not smoke:
        test_env["ADAMKIT_TRITON_COMPILED"] = "1"
    bench = ["--device", "cpu", "--scale", "1e-5", "--small-tensors", "50", "--rounds", "2"]
    bench = bench if smoke else ["--rounds", "10"]
    return [
        # CUDA only: the CPU rows are CI's (and would wait for numba to compile on a fresh
        # checkout); every backend, the Triton kernels compiled. First: it decides the default.
        ("check", [py, "-m", "adamkit", "check", "--device", "cpu" if smoke else "cuda",
                   "--json", str(out / "check.json")], {}, 150),
        ("pytest-cuda", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests,
                         f"--junitxml={out / 'pytest-cuda.xml'}"], test_env, 210),
        ("bench-gpu-default", [py, "benchmarks/gpu.py", *bench,
                               "--json", str(out / "bench-gpu-default.json")], {}, 60),
        ("bench-gpu-triton", [py, "benchmarks/gpu.py", *bench,
                              "--json", str(out / "bench-gpu-triton.json")],
         {"ADAMKIT_CUDA_KERNELS": "triton"}, 60),
    ]  # fmt: skip


def environment(out: Path) -> None:
    lines = []
    for command in (["nvidia-smi"], [sys.executable, "-c", _VERSIONS]):
        try:
            run = subprocess.run(command, capture_output=True, text=True, timeout=60)
            lines.append(f"$ {' '.join(command[:2])}\n{run.stdout}{run.stderr}")
        except (OSError, subprocess.TimeoutExpired) as error:
            lines.append(f"$ {command[0]}: {error}")
    (out / "environment.txt").write_text("\n".join(lines))


_VERSIONS = """
import platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda)
print("gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None)
try:
    import triton; print("triton", triton.__version__)
except ImportError:
    print("triton: not installed")
"""


def run_step(name, command, extra_env, limit, out: Path) -> dict:
    env = {**os.environ, **extra_env}
    start = time.perf_counter()
    with open(out / f"{name}.txt", "w") as log:
        log.write(f"$ {' '.join(f'{k}={v}' for k, v in extra_env.items())} {' '.join(command)}\n")
        log.flush()
        try:
            rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                timeout=limit).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            rc = 124
            log.write(f"\n[gpu_check] stopped after {limit} s\n")
    return {"step": name, "rc": rc, "seconds": round(time.perf_counter() - start, 1),
            "limit_s": limit, "command": command, "env": extra_env}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for the results")
    parser.add_argument("--smoke", action="store_true", help="CPU-sized, without a GPU")
    args = parser.parse_args(argv)
    os.chdir(Path(__file__).resolve().parents[1])  # the repository: tests/, benchmarks/
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.smoke:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: error: no CUDA device (use --smoke to try the runner on a CPU)")
            return 2
    environment(out)
    deadline = time.monotonic() + BUDGET_S
    results = []
    for name, command, extra_env, limit in steps(out, args.smoke):
        left = int(deadline - time.monotonic())
        if left < 10:
            results.append({"step": name, "rc": 124, "seconds": 0, "note": "no time left"})
            continue
        results.append(run_step(name, command, extra_env, min(limit, left), out))
        print(f"{name:<20} rc={results[-1]['rc']:<4} {results[-1]['seconds']:>6} s", flush=True)
    passed = all(r["rc"] == 0 for r in results)
    (out / "summary.json").write_text(json.dumps({"passed": passed, "steps": results}, indent=1))
    summary = [f"{r['step']:<20} rc={r['rc']:<4} {r['seconds']:>6} s" for r in results]
    summary.append("PASSED" if passed else "FAILED (see the step's .txt)")
    (out / "summary.txt").write_text("\n".join(summary) + "\n")
    print(summary[-1], f"- results in {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
