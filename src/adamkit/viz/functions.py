"""Classic 2-D test functions for watching optimizers move, written on torch tensors."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor

Range = tuple[float, float]


@dataclass(frozen=True)
class TestFunction:
    """A function of (x, y), where to look at it, where to start and what learning rates suit it."""

    name: str
    formula: str
    f: Callable[[Tensor, Tensor], Tensor]
    x_range: Range
    y_range: Range
    start: tuple[float, float]
    minima: list[tuple[float, float]]
    lrs: dict[str, float] = field(default_factory=dict)
    log_levels: bool = True  # contour levels spaced in log(f - f_min)

    def __call__(self, xy: Tensor) -> Tensor:
        return self.f(xy[..., 0], xy[..., 1])

    def contains(self, point: tuple[float, float]) -> bool:
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        return x0 <= point[0] <= x1 and y0 <= point[1] <= y1


def rosenbrock() -> TestFunction:
    return TestFunction(
        "rosenbrock",
        "(1-x)² + 100(y-x²)²",
        lambda x, y: (1 - x) ** 2 + 100 * (y - x**2) ** 2,
        (-2.0, 2.0),
        (-1.0, 3.0),
        (-1.2, 1.0),
        [(1.0, 1.0)],
        {"SGD": 1e-3, "Momentum": 2e-4, "RMSProp": 1e-2, "Adam": 5e-2},
    )


def beale() -> TestFunction:
    return TestFunction(
        "beale",
        "(1.5-x+xy)² + (2.25-x+xy²)² + (2.625-x+xy³)²",
        lambda x, y: (
            (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2
        ),
        (-4.5, 4.5),
        (-4.5, 4.5),
        (1.0, 1.5),
        [(3.0, 0.5)],
        {"SGD": 1e-3, "Momentum": 5e-4, "RMSProp": 1e-2, "Adam": 5e-2},
    )


def himmelblau() -> TestFunction:
    return TestFunction(
        "himmelblau",
        "(x²+y-11)² + (x+y²-7)²",
        lambda x, y: (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2,
        (-5.0, 5.0),
        (-5.0, 5.0),
        (-0.5, -0.5),
        [(3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)],
        {"SGD": 5e-3, "Momentum": 2e-3, "RMSProp": 2e-2, "Adam": 1e-1},
    )


def saddle() -> TestFunction:
    return TestFunction(
        "saddle",
        "x² + y⁴/4 - y²/2   (saddle at 0, minima at (0, ±1))",
        lambda x, y: x**2 + y**4 / 4 - y**2 / 2,
        (-2.0, 2.0),
        (-2.0, 2.0),
        (1.5, 1e-4),
        [(0.0, 1.0), (0.0, -1.0)],
        {"SGD": 5e-2, "Momentum": 1e-2, "RMSProp": 2e-2, "Adam": 5e-2},
        log_levels=False,
    )


CONDITION = 25.0


def quadratic(rotate_degrees: float = 0.0) -> TestFunction:
    """½(u² + κ·w²) with κ = 25, where (u, w) are (x, y) rotated by ``rotate_degrees``."""
    c, s = math.cos(math.radians(rotate_degrees)), math.sin(math.radians(rotate_degrees))

    def f(x: Tensor, y: Tensor) -> Tensor:
        u, w = c * x + s * y, -s * x + c * y
        return 0.5 * (u**2 + CONDITION * w**2)

    rotated = f", axes rotated {rotate_degrees:g}°" if rotate_degrees else ""
    return TestFunction(
        "quadratic",
        f"½(u² + {CONDITION:g}w²){rotated}",
        f,
        (-3.0, 3.0),
        (-3.0, 3.0),
        (-2.5, 2.0),
        [(0.0, 0.0)],
        {"SGD": 0.03, "Momentum": 0.01, "RMSProp": 0.05, "Adam": 0.1},
    )


FUNCTIONS: dict[str, Callable[[], TestFunction]] = {
    "rosenbrock": rosenbrock,
    "beale": beale,
    "himmelblau": himmelblau,
    "saddle": saddle,
    "quadratic": quadratic,
}


def get(name: str, rotate_degrees: float = 0.0) -> TestFunction:
    """The function ``name``; ``rotate_degrees`` applies to the quadratic only."""
    if name not in FUNCTIONS:
        raise ValueError(f"unknown function {name!r}; choose from {', '.join(FUNCTIONS)}")
    if name == "quadratic":
        return quadratic(rotate_degrees)
    if rotate_degrees:
        raise ValueError(f"--rotate applies to the quadratic only, not to {name!r}")
    return FUNCTIONS[name]()
