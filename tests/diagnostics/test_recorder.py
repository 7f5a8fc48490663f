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
