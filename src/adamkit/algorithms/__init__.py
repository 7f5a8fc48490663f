"""One spec per algorithm: the single description every layer of adamkit reads.

See :mod:`adamkit.algorithms._spec` for what a spec holds. The NumPy reference
(:mod:`adamkit.reference`) stays the readable oracle the specs' kernels are tested against.
"""

from __future__ import annotations

from . import adam, adamax, nadam, radam, rmsprop
from ._spec import AlgorithmSpec, GroupScalars, Hyperparameter

SPECS: dict[str, AlgorithmSpec] = {
    s.name: s for s in (adam.SPEC, rmsprop.SPEC, nadam.SPEC, radam.SPEC, adamax.SPEC)
}
# The algorithms whose every kernel is built from the spec (adamkit.kernels.spec_kernels).
# SGD has no spec yet (its buffer starts as the first gradient, a per-tensor choice the
# drivers do not express).
SPEC_BUILT = ("adam", "rmsprop", "nadam", "radam", "adamax")
# The algorithms with Adam's two moments, whose diagnostics show m̂ and the scale √v̂.
ADAM_FAMILY = ("adam", "nadam", "radam", "adamax")

__all__ = [
    "ADAM_FAMILY", "SPECS", "SPEC_BUILT", "AlgorithmSpec", "GroupScalars", "Hyperparameter",
]  # fmt: skip
