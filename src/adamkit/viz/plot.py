"""Pictures: a contour plot with the four paths, and Adam's m̂, √v̂, α/(√v̂+ε) per coordinate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .functions import TestFunction
from .trajectory import Trajectory

COLORS = {"SGD": "#1f77b4", "Momentum": "#2ca02c", "RMSProp": "#ff7f0e", "Adam": "#d62728"}


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError("pictures need matplotlib: pip install 'adamkit[viz]'") from error
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


def _draw_paths(ax, trajectories: list[Trajectory], upto: int | None = None) -> None:
    for tr in trajectories:
        pts = tr.points[: None if upto is None else upto + 1]
        ax.plot(
            pts[:, 0],
            pts[:, 1],
            "-",
            color=COLORS[tr.name],
            linewidth=1.6,
            label=f"{tr.name} (lr {tr.lr:g}, f={tr.values[min(len(pts), len(tr.values)) - 1]:.3g})",
        )
        ax.plot(pts[-1, 0], pts[-1, 1], "o", color=COLORS[tr.name], markersize=5)
    start = trajectories[0].points[0]
    ax.plot(start[0], start[1], "s", color="k", markersize=6, label="start", zorder=5)


def plot_trajectories(
    function: TestFunction, trajectories: list[Trajectory], out: str | Path, title: str = ""
) -> Path:
    """Write the contour plot with the paths and, below, Adam's per-coordinate state."""
    plt = _pyplot()
    fig = plt.figure(figsize=(11, 11), constrained_layout=True)
    grid = fig.add_gridspec(2, 3, height_ratios=[2.3, 1])
    ax = fig.add_subplot(grid[0, :])
    _draw_contours(ax, function)
    _draw_paths(ax, trajectories)
    ax.set_aspect("equal", adjustable="box")
    ax.legend(loc="best", fontsize=9, framealpha=0.9)
    steps = len(trajectories[0].points) - 1
    ax.set_title(title or f"{function.name}: f(x, y) = {function.formula} — {steps} steps")

    adam = next(t for t in trajectories if t.name == "Adam")
    panels = [
        (adam.m_hat, "Adam m̂ (direction and push)", "linear"),
        (adam.sqrt_v_hat, "Adam √v̂ (per-coordinate scale)", "log"),
        (adam.effective_lr, "Adam effective lr α/(√v̂+ε)", "log"),
    ]
    for col, (series, label, yscale) in enumerate(panels):
        sub = fig.add_subplot(grid[1, col])
        t = np.arange(1, len(series) + 1)
        sub.plot(t, series[:, 0], color=COLORS["Adam"], label="x coordinate")
        sub.plot(t, series[:, 1], color="#9467bd", linestyle="--", label="y coordinate")
        if yscale == "log":
            sub.set_yscale("log")
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
    from tqdm import tqdm

    plt = _pyplot()
    from matplotlib.animation import FuncAnimation, PillowWriter

    steps = max(len(t.points) for t in trajectories) - 1
    marks = np.unique(np.linspace(0, steps, min(frames, steps + 1)).astype(int))
    fig, ax = plt.subplots(figsize=(6, 6), constrained_layout=True)

    def draw(frame: int) -> None:
        ax.clear()
        _draw_contours(ax, function)
        _draw_paths(ax, trajectories, upto=int(marks[frame]))
        ax.set_title(f"{function.name}, step {marks[frame]}")
        ax.legend(loc="upper left", fontsize=7)

    animation = FuncAnimation(fig, draw, frames=len(marks))
    out = Path(out)
    with tqdm(total=len(marks), desc="gif", unit="frame", disable=not progress) as bar:
        animation.save(
            out,
            writer=PillowWriter(fps=10),
            dpi=80,
            progress_callback=lambda _frame, _total: bar.update(1),
        )
    plt.close(fig)
    return out
