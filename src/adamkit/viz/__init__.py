"""Trajectory pictures: SGD, Momentum, RMSProp and Adam on classic 2-D test functions.

    >>> from adamkit import viz
    >>> f = viz.get("saddle")
    >>> paths = viz.run_all(f, steps=5)
    >>> [p.name for p in paths], paths[-1].points.shape
    (['SGD', 'Momentum', 'RMSProp', 'Adam'], (6, 2))

``viz.plot_trajectories(f, paths, "saddle.png")`` draws them (needs matplotlib).
"""

from .functions import FUNCTIONS, TestFunction, get
from .plot import animate_trajectories, plot_trajectories
from .trajectory import OPTIMIZERS, Trajectory, run, run_all

__all__ = [
    "FUNCTIONS",
    "OPTIMIZERS",
    "TestFunction",
    "Trajectory",
    "animate_trajectories",
    "get",
    "plot_trajectories",
    "run",
    "run_all",
]
