"""`import adamkit` imports torch and NumPy, not numba (compiled loops load on first use) nor
torch._dynamo (about 1 s)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_import_adamkit_does_not_import_numba():
    code = (
        "import sys, adamkit; "
        "print(sorted(m for m in ('numba', 'llvmlite', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_import_adamkit_does_not_import_dynamo():
    """``torch.compiler.disable`` as a decorator imports torch._dynamo: Schedule-Free's step
    was decorated at import and every ``import adamkit`` paid 1.1 s for it."""
    code = (
        "import sys, adamkit; print('torch._dynamo' in sys.modules); "
        "import torch; w = torch.nn.Parameter(torch.zeros(2)); "
        "adamkit.ScheduleFreeAdamW([w]); print('torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]  # made eager-under-compile at construction


_FIRST_STEP = """
import importlib.util, sys
import numpy as np, torch, adamkit
w = torch.nn.Parameter(torch.randn(300))
opt = {make}
w.grad = torch.randn(300)
opt.step()
import numba, numba.np.arraymath as registry
print("scipy.linalg" in sys.modules)
print(registry._HAVE_BLAS == (importlib.util.find_spec("scipy.linalg") is not None))
# numba code that needs BLAS still gets it (and imports SciPy then)
dot = numba.njit(lambda a, b: np.dot(a, b))
a = np.arange(6.0).reshape(2, 3)
print(np.array_equal(dot(a, a.T), a @ a.T))
"""


@pytest.mark.parametrize(
    "make",
    [
        "adamkit.AdamW([w])",  # the fp32 driver
        "adamkit.AdamW([w], state_precision='8bit', min_8bit_size=0)",  # the low-memory kernel
        "adamkit.Adafactor([w])",
    ],
)
def test_the_first_fused_step_does_not_import_scipy_linalg(make):
    """numba's BLAS check imports scipy.linalg (0.1-0.5 s of the first step); adamkit's
    kernels call no BLAS, so it is skipped, and numba's flag still says whether SciPy is
    there (``adamkit.kernels.numba_import``)."""
    code = _FIRST_STEP.format(make=make)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True", "True"], out.stderr[-2000:]
