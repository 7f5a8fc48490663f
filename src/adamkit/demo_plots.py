"""The demo's pictures: loss curves, and the effective learning rate of each layer over training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .demo import RunResult
from .viz.plot import COLORS, _pyplot

LAYER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def plot_losses(results: list[RunResult], out: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    for r in results:
        epochs = np.arange(1, len(r.epoch_losses) + 1)
        ax.plot(
            epochs,
            r.epoch_losses,
            "-o",
            markersize=3,
            color=COLORS[r.name],
            label=f"{r.name} (test acc {r.test_accuracy:.1%})",
        )
    ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training cross-entropy (log scale)")
    ax.set_title("Digits MLP 64-64-10: same init, same batches, four update rules")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_effective_lr(results: list[RunResult], out: Path) -> Path:
    """Per layer: median α/(√v̂+ε) over the layer's elements, with its 10-90% band."""
    plt = _pyplot()
    adaptive = [r for r in results if r.name in ("RMSProp", "Adam") and r.diagnostics]
    fig, axes = plt.subplots(
        1, len(adaptive), figsize=(6 * len(adaptive), 4.8), constrained_layout=True, squeeze=False
    )
    for ax, r in zip(axes[0], adaptive, strict=True):
        layers = list(dict.fromkeys(row["label"] for row in r.diagnostics))
        for color, layer in zip(LAYER_COLORS, layers, strict=False):
            rows = [row for row in r.diagnostics if row["label"] == layer]
            calls = [row["call"] for row in rows]
            dominated = rows[-1]["eps_dominated"]
            label = f"{layer} (√v̂ < ε: {dominated:.0%} of elements)"
            ax.plot(calls, [row["effective_lr.median"] for row in rows], color=color, label=label)
            ax.fill_between(
                calls,
                [row["effective_lr.p10"] for row in rows],
                [row["effective_lr.p90"] for row in rows],
                color=color,
                alpha=0.12,
            )
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("effective learning rate α/(√v̂+ε)")
        ax.set_title(f"{r.name}: median per layer, band = 10th..90th percentile")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(
        "Where gradients were large the step shrinks; where small, it grows "
        "(elements with √v̂ < ε reach α/ε)"
    )
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_demo_plots(results: list[RunResult], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        plot_losses(results, folder / "loss_curves.png"),
        plot_effective_lr(results, folder / "effective_lr.png"),
    ]
