"""One spec per algorithm: the single description every layer of adamkit reads.

See :mod:`adamkit.algorithms._spec` for what a spec holds. The NumPy reference
(:mod:`adamkit.reference`) stays the readable oracle the specs' kernels are tested against.
"""

from __future__ import annotations

from . import adamax, nadam, radam
from ._spec import AlgorithmSpec, GroupScalars, Hyperparameter

SPECS: dict[str, AlgorithmSpec] = {s.name: s for s in (nadam.SPEC, radam.SPEC, adamax.SPEC)}

__all__ = ["SPECS", "AlgorithmSpec", "GroupScalars", "Hyperparameter"]
