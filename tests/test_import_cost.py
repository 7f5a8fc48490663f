"""`import adamkit` imports torch and NumPy, not numba (compiled loops load on first use) nor
torch._dynamo (about 1 s)."""

from __future__ import annotations

import subprocess
import sys


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
