"""Kernels: the update math on torch tensors, one module per backend, one function per algorithm.

Every backend module defines ``adam``, ``sgd`` and ``rmsprop`` with the same signatures.
Kernels never touch param groups, hooks or optimizer state dicts; :mod:`.registry` picks one.
"""

from . import foreach, forloop, registry

__all__ = ["foreach", "forloop", "registry"]
