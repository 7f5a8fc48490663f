"""Helpers shared by the reference algorithms: float64 arrays and real views of complex ones."""

from __future__ import annotations

import numpy as np


def as_real(array: np.ndarray) -> np.ndarray:
    """Return ``array`` as float64, viewing complex numbers as (real, imag) pairs.

    Complex parameters are optimized as torch does: the real and imaginary parts
    are independent coordinates, so ``g**2`` means squaring each part separately
    (not ``|g|**2``).
    """
    array = np.asarray(array)
    if np.iscomplexobj(array):
        return np.ascontiguousarray(array, dtype=np.complex128).view(np.float64).copy()
    return np.array(array, dtype=np.float64, copy=True)


def like_input(real: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Undo :func:`as_real`: give ``real`` the complex-ness and shape of ``template``."""
    if np.iscomplexobj(template):
        return real.view(np.complex128).reshape(np.shape(template))
    return real.reshape(np.shape(template))
