"""The Triton kernels compiled for a CUDA GPU (sm_90, ahead of time: no GPU needed) round each
operation once, as the interpreter CI runs them does: no contracted multiply-adds, no
approximate division or square root, no flushed subnormals (tests/kernels/triton_ptx_cells.py).
Without this, the CUDA kernels would differ from the CPU kernels and from what CI tests by a
few ulp per step, invisibly to every other test here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton.backends.nvidia")

SCRIPT = Path(__file__).with_name("triton_ptx_cells.py")


def test_every_spec_compiles_to_ieee_operations_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)  # (compiled here, not read from a cache)
    out = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=600
    )
    lines = out.stdout.splitlines()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert len(lines) > 40 and all(line.startswith("OK ") for line in lines)
    assert "OK totals of a reduction's partial sums" in out.stdout
    from adamkit.algorithms import SPECS

    for name in SPECS:  # a cell of each spec in each kernel
        assert any(line.startswith(f"OK lowbit {name} ") for line in lines), name
        assert any(line.startswith(f"OK driver {name} ") for line in lines), name
