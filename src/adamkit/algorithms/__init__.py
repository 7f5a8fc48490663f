"""One spec per algorithm: the single description every layer of adamkit reads.

See :mod:`adamkit.algorithms._spec` for what a spec holds. The NumPy reference
(:mod:`adamkit.reference`) stays the readable oracle the specs' kernels are tested against.
"""

from __future__ import annotations

import importlib
import pkgutil

from ._spec import AlgorithmSpec, GroupScalars, Hyperparameter


def _discovered() -> dict[str, AlgorithmSpec]:
    """Every module of this package that defines a ``SPEC`` (a new algorithm is a new
    module: nothing to register)."""
    specs = {}
    for module in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            spec = getattr(importlib.import_module(f"{__name__}.{module.name}"), "SPEC", None)
            if spec is not None:
                specs[spec.name] = spec
    return specs


SPECS: dict[str, AlgorithmSpec] = _discovered()
# The algorithms whose kernels are built from their spec: all of them.
SPEC_BUILT = tuple(SPECS)
# The algorithms with Adam's two moments, whose diagnostics show m̂ and the scale √v̂.
ADAM_FAMILY = ("adam", "nadam", "radam", "adamax")

__all__ = [
    "ADAM_FAMILY", "SPECS", "SPEC_BUILT", "AlgorithmSpec", "GroupScalars", "Hyperparameter",
]  # fmt: skip
