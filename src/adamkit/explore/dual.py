"""The test functions' gradients for the explorer: forward-mode dual numbers over a batch of
points (exact, ~6x cheaper than an autograd call on a few points), torch autograd for a function
whose arithmetic they cannot run."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..viz.functions import TestFunction


class Dual:
    """A value and its gradient by (x, y) for a batch of points: forward-mode differentiation
    of the test functions' arithmetic (``v``: shape (n,); ``d``: shape (2, n))."""

    __slots__ = ("d", "v")

    def __init__(self, v: np.ndarray, d: np.ndarray) -> None:
        self.v, self.d = v, d

    def __add__(self, o: Any) -> Dual:
        return Dual(self.v + o.v, self.d + o.d) if isinstance(o, Dual) else Dual(self.v + o, self.d)

    __radd__ = __add__

    def __sub__(self, o: Any) -> Dual:
        return Dual(self.v - o.v, self.d - o.d) if isinstance(o, Dual) else Dual(self.v - o, self.d)

    def __rsub__(self, o: Any) -> Dual:
        return Dual(o - self.v, -self.d)

    def __neg__(self) -> Dual:
        return Dual(-self.v, -self.d)

    def __mul__(self, o: Any) -> Dual:
        if isinstance(o, Dual):
            return Dual(self.v * o.v, self.d * o.v + self.v * o.d)
        return Dual(self.v * o, self.d * o)

    __rmul__ = __mul__

    def __truediv__(self, o: Any) -> Dual:
        if isinstance(o, Dual):
            return Dual(self.v / o.v, (self.d * o.v - self.v * o.d) / (o.v * o.v))
        return Dual(self.v / o, self.d / o)

    def __pow__(self, k: Any) -> Dual:
        if isinstance(k, Dual) or not isinstance(k, (int, float)):
            return NotImplemented
        return Dual(self.v**k, k * self.v ** (k - 1) * self.d)


def gradients(function: TestFunction, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(f, ∇f) at each row of ``xy`` (shape (n, 2)), float64."""
    n = len(xy)
    one, zero = np.ones(n), np.zeros(n)
    try:
        with np.errstate(all="ignore"):  # a diverging path overflows: its end is shown
            out = function.f(
                Dual(xy[:, 0], np.stack([one, zero])), Dual(xy[:, 1], np.stack([zero, one]))
            )
        if isinstance(out, Dual):
            return out.v, out.d.T
    except (TypeError, AttributeError):
        pass  # an operation dual numbers lack: autograd does it
    points = torch.tensor(xy, requires_grad=True)
    f = function(points)
    (grads,) = torch.autograd.grad(f.sum(), points)
    return f.detach().numpy(), grads.numpy()
