"""numba for adamkit's fused CPU kernels, without the SciPy import of its BLAS check.

numba's first compile or cache load in a process imports its NumPy registry
(``numba.np.arraymath``), which checks at import whether BLAS is available by importing
``scipy.linalg``: 0.07-0.2 s of a fresh process's first fused step, for a check adamkit's
kernels never need (they call no BLAS). :func:`prepare`, called before adamkit first imports
its numba kernels, imports that registry with ``scipy.linalg`` hidden, then sets numba's flag
to whether ``scipy.linalg`` is installed (found, not imported): numba code that uses
``np.dot`` later in the process sees what it would have seen, and imports SciPy then, when it
needs it. (numba's own check also imports ``scipy.linalg.cython_blas``: where that alone
fails, numba's float ``np.correlate`` raises instead of using its own loop. ``scipy.linalg``
is hidden from every thread for the ~50 ms of that import: a thread importing it for the
first time at that moment would get an ImportError.)
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

_HIDDEN = "scipy.linalg"
_REGISTRY = "numba.np.arraymath"


class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == _HIDDEN:
            raise ModuleNotFoundError(f"{_HIDDEN} is hidden while numba's registry imports")
        return None


def prepare() -> None:
    """Import numba's NumPy registry without ``scipy.linalg`` (once; nothing to do where
    either is imported already)."""
    if _REGISTRY in sys.modules or _HIDDEN in sys.modules:
        return
    hide = _Hide()
    sys.meta_path.insert(0, hide)
    try:
        import numba.np.arraymath as registry
    except ImportError:  # (not expected: numba then imports it itself, with SciPy)
        return
    finally:
        sys.meta_path.remove(hide)
    registry._HAVE_BLAS = _installed(_HIDDEN)


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # its package is not installed
        return False
