"""Pictures: a contour plot with the four paths, and Adam's m̂, √v̂, α/(√v̂+ε) per coordinate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .._extras import progress as bar_of
from .._extras import require
from .functions import TestFunction
from .trajectory import Trajectory

COLORS = {"SGD": "#1f77b4", "Momentum": "#2ca02c", "RMSProp": "#ff7f0e", "Adam": "#d62728"}


def _pyplot():
    matplotlib = require("matplotlib", "viz", "drawing pictures")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_contours(ax, function: TestFunction) -> None:
    xs = torch.linspace(*function.x_range, 300, dtype=torch.float64)
    ys = torch.linspace(*function.y_range, 300, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    z = function(torch.stack([gx, gy], dim=-1)).numpy()
    if function.log_levels:
        shifted = z - z.min() + 1e-3
        levels = np.logspace(np.log10(shifted.min()), np.log10(shifted.max()), 30)
        ax.contourf(gx, gy, shifted, levels=levels, cmap="Greys_r", norm="log", alpha=0.45)
        ax.contour(gx, gy, shifted, levels=levels, colors="0.55", linewidths=0.4)
    else:
        ax.contourf(gx, gy, z, levels=30, cmap="Greys_r", alpha=0.45)
        ax.contour(gx, gy, z, levels=30, colors="0.55", linewidths=0.4)
    for i, (mx, my) in enumerate(function.minima):
        ax.plot(
            mx,
            my,
            "*",
            color="gold",
            markersize=14,
            markeredgecolor="k",
            label="minimum" if i == 0 else None,
            zorder=5,
        )
    ax.set_xlim(*function.x_range)
    ax.set_ylim(*function.y_range)
    ax.set_xlabel("x")
    ax.set_ylabel("y")


# What each picture shows, written on it.
LESSONS = {
    "rosenbrock": "a narrow curved valley: the step must be small across it and large along it",
    "beale": "plateaus and steep walls: one fixed lr is too small on the one or too large on "
    "the other; √v̂ rescales each coordinate",
    "himmelblau": "four minima: which one a path reaches depends on the update rule, not only "
    "on the start",
    "saddle": "a saddle: SGD's step is α·|g|, tiny near the ridge; Adam's and RMSProp's are "
    "≈ α whatever |g|, so they leave it far sooner",
    "quadratic": "an ill-conditioned bowl: Adam rescales each axis; rotate it (--rotate) and "
    "the per-coordinate help is gone",
}
# Drawn widest first, so that a path on top of another leaves the one below visible.
_WIDTHS = {"SGD": 4.0, "Momentum": 3.0, "RMSProp": 2.2, "Adam": 1.4}


def _diverged(function: TestFunction, tr: Trajectory) -> int | None:
    """The step at which the path left the finite numbers or the plot, or None."""
    for t, point in enumerate(tr.points):
        if not np.isfinite(point).all() or not function.contains(tuple(point)):
            return t
    return None


def _draw_paths(
    ax,
    trajectories: list[Trajectory],
    upto: int | None = None,
    function: TestFunction | None = None,
) -> None:
    for tr in sorted(trajectories, key=lambda t: -_WIDTHS.get(t.name, 1.0)):
        pts = tr.points[: None if upto is None else upto + 1]
        color = COLORS[tr.name]
        gone = _diverged(function, tr) if function is not None else None
        value = tr.values[min(len(pts), len(tr.values)) - 1]
        label = f"{tr.name} (lr {tr.lr:g}, f={value:.3g})"
        if gone is not None and (upto is None or gone <= upto):
            label = f"{tr.name} (lr {tr.lr:g}) diverged at step {gone}"
            pts = pts[: gone + 1]
        steps = max(max(len(t.points) for t in trajectories) - 1, 1)
        ax.plot(
            pts[:, 0],
            pts[:, 1],
            "-",
            color=color,
            linewidth=_WIDTHS.get(tr.name, 1.6),
            alpha=0.75,
            marker="|",
            markevery=max(1, steps // 10),  # a mark every tenth of the run: step sizes show
            markersize=7,
            label=label,
        )
        finite = pts[np.isfinite(pts).all(axis=1)]
        if gone is not None and (upto is None or gone <= upto) and len(finite):
            ax.plot(*finite[-1], "X", color=color, markersize=11, markeredgecolor="k", zorder=6)
        elif len(finite):
            ax.plot(*finite[-1], "o", color=color, markersize=5)
    start = trajectories[0].points[0]
    ax.plot(
        start[0], start[1], "s", color="k", markersize=6,
        label=f"start ({start[0]:g}, {start[1]:g})", zorder=5,
    )  # fmt: skip


def plot_trajectories(
    function: TestFunction, trajectories: list[Trajectory], out: str | Path, title: str = ""
) -> Path:
    """Write the contour plot with the paths and, below, Adam's per-coordinate state: m̂ on a
    symmetric-log axis (its sign is the direction), √v̂ and α/(√v̂+ε) with ε marked."""
    plt = _pyplot()
    fig = plt.figure(figsize=(11, 11.5), constrained_layout=True)
    grid = fig.add_gridspec(2, 3, height_ratios=[2.3, 1])
    ax = fig.add_subplot(grid[0, :])
    _draw_contours(ax, function)
    _draw_paths(ax, trajectories, function=function)
    ax.set_aspect("equal", adjustable="box")
    ax.legend(loc="best", fontsize=8, framealpha=0.9)
    steps = max(len(t.points) for t in trajectories) - 1
    start = trajectories[0].points[0]
    heading = title or f"{function.name}: f(x, y) = {function.formula} — {steps} steps"
    lesson = LESSONS.get(function.name.split(" ")[0], "")
    ax.set_title(
        f"{heading}\nfrom ({start[0]:g}, {start[1]:g}); marks every {max(1, steps // 10)} "
        f"steps. {lesson}",
        fontsize=9,
        wrap=True,
    )

    adam = next(t for t in trajectories if t.name == "Adam")
    eps = 1e-8
    panels = [
        (adam.m_hat, "Adam m̂ (direction and push; symmetric log)", "symlog"),
        (adam.sqrt_v_hat, "Adam √v̂ (per-coordinate scale)", "log"),
        (adam.effective_lr, "Adam effective lr α/(√v̂+ε)", "log"),
    ]
    for col, (series, label, yscale) in enumerate(panels):
        sub = fig.add_subplot(grid[1, col])
        t = np.arange(1, len(series) + 1)
        sub.plot(t, series[:, 0], color=COLORS["Adam"], label="x coordinate")
        sub.plot(t, series[:, 1], color="#9467bd", linestyle="--", label="y coordinate")
        if yscale == "symlog":
            finite = np.abs(series[np.isfinite(series)])
            small = finite[finite > 0]
            # Linear within a ten-thousandth of the largest |m̂| (or its lower quartile, if
            # larger), logarithmic beyond: small and large pushes both show, and their sign.
            linthresh = max(np.quantile(small, 0.25), small.max() * 1e-4) if small.size else 1.0
            sub.set_yscale("symlog", linthresh=float(linthresh))
            sub.axhline(0, color="0.5", linewidth=0.6)
        else:
            sub.set_yscale("log")
        # Where √v̂ < ε, ε and not v̂ sets the step (the effective lr nears α/ε): the line
        # is drawn when the data come within a factor 100 of it, else the legend says so.
        finite = series[np.isfinite(series)]
        if col == 1 and finite.size:
            near = finite.min() < 100 * eps
            sub.axhline(eps, color="0.3", linestyle=":", linewidth=1, label="ε") if near else None
            sub.plot([], [], " ", label="ε-dominated: none" if not near else "below ε: ε rules")
        if col == 2 and finite.size and finite.max() > adam.lr / eps / 100:
            sub.axhline(adam.lr / eps, color="0.3", linestyle=":", linewidth=1, label="α/ε")
        sub.set_title(label, fontsize=10)
        sub.set_xlabel("step")
        sub.grid(alpha=0.3)
        sub.legend(fontsize=8)
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def animate_trajectories(
    function: TestFunction,
    trajectories: list[Trajectory],
    out: str | Path,
    frames: int = 40,
    progress: bool = False,
) -> Path:
    """An animated GIF of the paths growing step by step (``progress``: a bar per frame)."""
    plt = _pyplot()
    from matplotlib.animation import FuncAnimation, PillowWriter

    steps = max(len(t.points) for t in trajectories) - 1
    marks = np.unique(np.linspace(0, steps, min(frames, steps + 1)).astype(int))
    fig, ax = plt.subplots(figsize=(6, 6), constrained_layout=True)

    def draw(frame: int) -> None:
        ax.clear()
        _draw_contours(ax, function)
        _draw_paths(ax, trajectories, upto=int(marks[frame]), function=function)
        ax.set_title(f"{function.name}, step {marks[frame]}")
        ax.legend(loc="upper left", fontsize=7)

    animation = FuncAnimation(fig, draw, frames=len(marks))
    out = Path(out)
    with bar_of(total=len(marks), desc="gif", unit="frame", disable=not progress) as bar:
        animation.save(
            out,
            writer=PillowWriter(fps=10),
            dpi=80,
            progress_callback=lambda _frame, _total: bar.update(1),
        )
    plt.close(fig)
    return out
