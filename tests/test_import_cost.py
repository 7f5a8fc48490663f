"""`import adamkit` imports torch and NumPy, not numba (compiled loops load on first use)."""

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
