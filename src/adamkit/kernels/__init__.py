"""Kernels: the update math on torch tensors, built from the algorithm specs for each backend.

Every kernel has the signature of :mod:`.spec_kernels`; kernels never touch param groups,
hooks or optimizer state dicts; :mod:`.registry` picks one.
"""

from . import registry

__all__ = ["registry"]
