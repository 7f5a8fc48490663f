"""The demo's pictures: loss curves, and the effective learning rate of each layer over training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .demo import RunResult
from .viz.plot import COLORS, _pyplot

LAYER_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def plot_losses(results: list[RunResult], out: Path) -> Path:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 6), layout="constrained")
    for r in results:  # tuned: solid; torch.optim's default lr: dashed
        epochs = np.arange(1, len(r.epoch_losses) + 1)
        ax.plot(
            epochs,
            r.epoch_losses,
            "-o" if r.setting == "tuned" else "--",
            markersize=3,
            color=COLORS[r.name],
            label=f"{r.name}, {r.setting} α={r.lr:g} (test acc {r.test_accuracy:.1%})",
        )
    ax.set_yscale("log")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training cross-entropy (log scale)")
    ax.set_title(
        "Digits MLP 64-64-10: same init, same batches; tuned lr (solid), torch's default (dashed)",
        fontsize=10,
    )
    ax.grid(alpha=0.3, which="both")
    fig.legend(loc="outside lower center", ncol=2, fontsize=8)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_effective_lr(results: list[RunResult], out: Path) -> Path:
    """Per layer, for the adaptive optimizers: top, the median effective learning rate with
    its 10-90% band (one y-axis for both, so they compare); bottom, the first moment's size
    beside the gradient's (Adam: RMS of m̂ and of g; RMSProp, which has no first moment: RMS of
    √v and of g)."""
    plt = _pyplot()
    # The tuned runs: the ones the demo records diagnostics of.
    adaptive = [r for r in results if r.name in ("RMSProp", "Adam") and r.diagnostics]
    fig, axes = plt.subplots(
        2, len(adaptive), figsize=(6 * len(adaptive), 8.4), constrained_layout=True,
        squeeze=False, sharey="row",
    )  # fmt: skip
    for col, r in enumerate(adaptive):
        top, bottom = axes[0][col], axes[1][col]
        # RMSProp's denominator is √v: it has no bias correction, so no v̂.
        root = "√v̂" if r.name == "Adam" else "√v"
        layers = list(dict.fromkeys(row["label"] for row in r.diagnostics))
        for color, layer in zip(LAYER_COLORS, layers, strict=False):
            rows = [row for row in r.diagnostics if row["label"] == layer]
            calls = [row["call"] for row in rows]
            dominated = rows[-1]["eps_dominated"]
            label = f"{layer} ({root} < ε: {dominated:.0%} of elements)"
            top.plot(calls, [row["effective_lr.median"] for row in rows], color=color, label=label)
            top.fill_between(
                calls,
                [row["effective_lr.p10"] for row in rows],
                [row["effective_lr.p90"] for row in rows],
                color=color,
                alpha=0.12,
            )
            moment = "m_hat_rms" if r.name == "Adam" else "sqrt_v_rms"
            bottom.plot(calls, [row[moment] for row in rows], color=color, label=layer)
            bottom.plot(
                calls, [row["grad_rms"] for row in rows], color=color, linestyle=":", alpha=0.8
            )
        top.set_yscale("log")
        top.set_ylabel(f"effective learning rate α/({root}+ε)")
        top.set_title(f"{r.name} (α={r.lr:g}): median per layer, band = 10th..90th percentile")
        top.legend(fontsize=8)
        bottom.set_yscale("log")
        bottom.set_xlabel("step")
        first = "RMS of m̂ (solid)" if r.name == "Adam" else "RMS of √v (solid)"
        bottom.set_ylabel(f"{first}, RMS of g (dotted)")
        bottom.set_title(
            "m̂ smooths g: its size against the gradient's"
            if r.name == "Adam"
            else "√v tracks |g|: the scale the step is divided by"
        )
        bottom.legend(fontsize=8)
        for ax in (top, bottom):
            ax.grid(alpha=0.3, which="both")
    fig.suptitle(
        "Where gradients were large the step shrinks; where small, it grows "
        "(elements whose √v̂ or √v is below ε reach α/ε)"
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
