"""Recorder: samples every N steps, writes CSV and TensorBoard, detaches cleanly."""

from __future__ import annotations

import csv

import pytest
import torch

import adamkit
from adamkit.diagnostics import QUANTITIES, Recorder, plot_recording, snapshot


def _train(opt, w, steps):
    for i in range(steps):
        w.grad = torch.tensor([1.0, -2.0, 0.5 * i])
        opt.step()


def test_csv_has_one_row_per_sample_with_fixed_columns(tmp_path):
    w = torch.zeros(3, requires_grad=True)
    opt = adamkit.Adam([w], lr=0.1)
    path = tmp_path / "diag.csv"
    with Recorder(opt, every=3, csv=path):
        _train(opt, w, 10)
    rows = list(csv.DictReader(path.open()))
    assert [int(r["step"]) for r in rows] == [3, 6, 9]
    assert list(rows[0]) == ["call", "label", "step", *QUANTITIES["adam"]]
    assert float(rows[0]["effective_lr.max"]) > 0


def test_close_detaches_the_hook():
    w = torch.zeros(3, requires_grad=True)
    opt = adamkit.SGD([w], lr=0.1, momentum=0.9)
    rec = Recorder(opt)
    _train(opt, w, 2)
    rec.close()
    _train(opt, w, 2)
    assert len(rec.rows) == 2 and not opt._optimizer_step_post_hooks


def test_tensorboard_event_file_is_written(tmp_path):
    pytest.importorskip("tensorboard")
    w = torch.zeros(3, requires_grad=True)
    opt = adamkit.RMSprop([w], lr=0.01)
    with Recorder(opt, tensorboard=tmp_path / "tb"):
        _train(opt, w, 3)
    events = list((tmp_path / "tb").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 100
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert "group0/effective_lr.max" in acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("group0/update_rms")] == [1, 2, 3]


def test_bad_every_is_refused():
    opt = adamkit.Adam([torch.zeros(1, requires_grad=True)])
    with pytest.raises(ValueError, match="Invalid every: 0; expected a whole number >= 1"):
        Recorder(opt, every=0)


class _Wrapper(torch.optim.Optimizer):
    """Like accelerate's AcceleratedOptimizer: a torch Optimizer holding the real one as
    ``.optimizer`` and stepping it."""

    def __init__(self, optimizer):  # no super().__init__, as accelerate's
        self.optimizer = optimizer

    @property
    def param_groups(self):
        return self.optimizer.param_groups

    def step(self, closure=None):
        return self.optimizer.step(closure)


def test_snapshot_and_recorder_unwrap_wrapped_optimizers():
    w = torch.nn.Parameter(torch.ones(5))
    inner = adamkit.Adam([w], lr=0.1)
    wrapped = _Wrapper(_Wrapper(inner))  # wrappers of wrappers too
    with Recorder(wrapped) as rec:
        for _ in range(2):
            w.grad = torch.ones(5)
            wrapped.step()
    assert [row["step"] for row in rec.rows] == [1, 2]
    assert snapshot(wrapped)[0]["step"] == 2


@pytest.mark.parametrize("cls", [adamkit.SGD, torch.optim.SGD])
def test_sgd_rows_carry_the_step_count(cls):
    w = torch.nn.Parameter(torch.ones(3))
    opt = cls([w], lr=0.1, momentum=0.9)
    with Recorder(opt) as rec:
        for _ in range(3):
            w.grad = torch.ones(3)
            opt.step()
    assert [row["step"] for row in rec.rows] == [1, 2, 3]
    # adamkit's SGD counts its steps itself; torch's keeps no count (the Recorder's calls).
    assert snapshot(opt)[0]["step"] == (3 if cls is adamkit.SGD else None)


def test_plot_recording_from_csv_and_rows(tmp_path):
    w = torch.nn.Parameter(torch.randn(20))
    opt = adamkit.Adam([("w", w)], lr=0.01)
    csv_path = tmp_path / "run.csv"
    with Recorder(opt, csv=csv_path, per_param=True):
        for _ in range(4):
            w.grad = torch.randn(20)
            opt.step()
    out = plot_recording(csv_path, tmp_path / "run.png", title="mine")
    assert out.read_bytes().startswith(b"\x89PNG") and out.stat().st_size > 20_000
    with pytest.raises(ValueError, match="no rows to plot"):
        plot_recording([], tmp_path / "empty.png")
    with pytest.raises(ValueError, match="expected a Recorder's"):
        plot_recording([{"a": 1}], tmp_path / "bad.png")


def _figures(monkeypatch) -> list:
    """The figures plot functions save, kept for a look at their axes."""
    import matplotlib.figure

    saved = []
    original = matplotlib.figure.Figure.savefig

    def savefig(fig, *args, **kwargs):
        saved.append(fig)
        return original(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return saved


def _half_without_gradient(cls, steps=20, **kwargs):
    """A recording where 60 of 100 elements never get a gradient (ε-dominated, at α/ε)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.nn.Parameter(torch.randn(100, generator=gen))
    opt = cls([("w", w)], lr=0.01, **kwargs)
    with Recorder(opt, per_param=True) as rec:
        for _ in range(steps):
            g = torch.randn(100, generator=gen)
            g[:60] = 0
            w.grad = g
            opt.step()
    return rec.rows


@pytest.mark.parametrize(
    ("cls", "root"), [(adamkit.Adam, "√v̂"), (adamkit.RMSprop, "√v")], ids=["Adam", "RMSprop"]
)
def test_plot_recording_leaves_eps_dominated_elements_out_of_the_band(
    cls, root, tmp_path, monkeypatch
):
    from adamkit.diagnostics.plot import effective_lr_series

    rows = _half_without_gradient(cls)
    assert rows[-1]["effective_lr.median"] == pytest.approx(0.01 / 1e-8)  # the old band: α/ε
    median, low, high, note = effective_lr_series(rows, rows[0].keys())
    assert (
        max(high) < 1
        and min(low) > 0
        and all(lo <= m <= hi for lo, m, hi in zip(low, median, high, strict=True))
    )
    assert note == f" ({root} < ε: 60% of elements, not drawn)"
    figures = _figures(monkeypatch)
    plot_recording(rows, tmp_path / "run.png")
    ax = figures[0].axes[0]
    assert ax.get_title() == f"effective lr α/({root}+ε) over {root} ≥ ε: median, 10-90% band"
    assert ax.get_ylim()[1] < 10  # not stretched up to α/ε = 1e6
    assert "60% of elements" in ax.get_legend().get_texts()[0].get_text()


def test_plot_recording_of_an_older_csv_without_the_adaptive_columns(tmp_path):
    rows = _half_without_gradient(adamkit.Adam, steps=3)
    old = [{k: v for k, v in row.items() if "adaptive" not in k} for row in rows]
    assert plot_recording(old, tmp_path / "old.png").stat().st_size > 10_000


def test_a_recorder_on_a_compiled_step_records_eagerly():
    """torch.compile(opt.step) traced the post-hook into the snapshot's numba and NumPy code
    and failed; the hook runs eagerly."""
    torch._dynamo.reset()
    w = torch.nn.Parameter(torch.randn(100))
    opt = adamkit.Adam([w], lr=1e-2)
    rec = Recorder(opt, every=1)
    step = torch.compile(opt.step)
    for _ in range(3):
        w.grad = torch.randn(100)
        step()
    assert [row["step"] for row in rec.rows] == [1, 2, 3]
    assert all(row["effective_lr.max"] > 0 for row in rec.rows)
