"""``plot_recording``: a picture of a :class:`~adamkit.diagnostics.Recorder`'s rows, for your
own model.

One panel per quantity the recording has, one line per label (param group or parameter):
the effective learning rate α/(√v̂+ε) with its 10th-90th percentile band, the first moment's
size (RMS of m̂, or of the momentum buffer), the second moment's (RMS of √v̂ or √v) and the
update relative to the parameter.

The effective learning rate is drawn over the elements whose √v̂ is at least ε: the others
(ε-dominated: their gradient has stayed at or near zero) sit near α/ε, up to 10⁶ times the
rest, and would flatten every line on a log axis. The legend gives their share instead.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# (column, axis label), in panel order; a recording has the ones its algorithm has.
PANELS = (
    ("effective_lr.median", "effective lr α: median, 10-90% band"),
    ("m_hat_rms", "first moment: RMS of m̂"),
    ("momentum_rms", "first moment: RMS of the momentum buffer"),
    ("sqrt_v_hat_rms", "second moment: RMS of √v̂"),
    ("sqrt_v_rms", "second moment: RMS of √v"),
    ("update_to_param", "‖update‖ / ‖φ‖"),
)


def _rows(source: str | Path | Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(source, (str, Path)):
        with open(source, newline="") as f:
            return list(csv.DictReader(f))
    return [dict(row) for row in source]


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _root(columns: Iterable[str]) -> str | None:
    """The denominator's root in the recording's algorithm: Adam's √v̂, RMSprop's √v (no
    bias correction), None for SGD (its effective lr is α)."""
    if "sqrt_v_hat_rms" in columns:
        return "√v̂"
    if "sqrt_v_rms" in columns:
        return "√v"
    return None


def effective_lr_series(
    rows: list[dict[str, Any]], columns: Iterable[str]
) -> tuple[list[float], list[float], list[float], str]:
    """The effective-lr panel of one label's rows: (median, p10, p90, legend note).

    Over the elements that are not ε-dominated when the recording has their percentiles
    (``effective_lr_adaptive.*``); the note gives the share of ε-dominated elements at the
    last row (they are not drawn)."""
    columns = set(columns)
    adaptive = "effective_lr_adaptive.median" in columns
    prefix = "effective_lr_adaptive" if adaptive else "effective_lr"
    median = [_number(row[f"{prefix}.median"]) for row in rows]
    band = "p10" if adaptive or "effective_lr.p10" in columns else None
    low = [_number(row[f"{prefix}.p10"]) for row in rows] if band else []
    high = [_number(row[f"{prefix}.p90"]) for row in rows] if band else []
    note = ""
    if "eps_dominated" in columns:
        share = _number(rows[-1]["eps_dominated"])
        root = _root(columns) or "√v"
        note = f" ({root} < ε: {share:.0%} of elements" + (", not drawn)" if adaptive else ")")
    return median, low, high, note


def plot_recording(
    source: str | Path | Iterable[Mapping[str, Any]], out: str | Path, *, title: str | None = None
) -> Path:
    """Draw a Recorder's CSV file (or its ``rows``) into the PNG ``out``; returns its path.

    Raises ValueError naming what is missing if ``source`` holds no rows or none of the
    columns a Recorder writes.

    Example:
        >>> import torch, adamkit, tempfile, pathlib
        >>> from adamkit.diagnostics import Recorder, plot_recording
        >>> w = torch.nn.Parameter(torch.ones(4))
        >>> opt = adamkit.Adam([w], lr=0.1)
        >>> with Recorder(opt) as rec:
        ...     for _ in range(3):
        ...         w.grad = torch.randn(4)
        ...         opt.step()
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "run.png"
        >>> plot_recording(rec.rows, out).stat().st_size > 10_000
        True
    """
    from ..viz.plot import _pyplot

    rows = _rows(source)
    if not rows:
        raise ValueError(f"no rows to plot in {source!r}; record at least one step first")
    columns = rows[0].keys()
    panels = [(key, label) for key, label in PANELS if key in columns]
    if not panels or "label" not in columns:
        raise ValueError(
            f"{source!r} has columns {sorted(columns)}; expected a Recorder's "
            f"('label', 'step' and e.g. {PANELS[0][0]!r})"
        )
    plt = _pyplot()
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.6 * len(panels), 4.2), constrained_layout=True, squeeze=False
    )
    labels = list(dict.fromkeys(row["label"] for row in rows))
    x_key = "step" if "step" in columns else "call"
    root = _root(columns)
    for ax, (key, axis_label) in zip(axes[0], panels, strict=True):
        for label in labels:
            mine = [row for row in rows if row["label"] == label]
            x = [_number(row[x_key]) for row in mine]
            if key != "effective_lr.median":
                ax.plot(x, [_number(row[key]) for row in mine], label=label)
                continue
            median, low, high, note = effective_lr_series(mine, columns)
            (line,) = ax.plot(x, median, label=label + note)
            if low:
                ax.fill_between(x, low, high, color=line.get_color(), alpha=0.12)
        if key == "effective_lr.median" and root is not None:
            where = f" over {root} ≥ ε" if "effective_lr_adaptive.median" in columns else ""
            axis_label = f"effective lr α/({root}+ε){where}: median, 10-90% band"
        ax.set_yscale("log")
        ax.set_xlabel(x_key)
        ax.set_title(axis_label, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title)
    out = Path(out)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
