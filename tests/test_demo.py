"""The main job runs end to end and its optimizers learn."""

from __future__ import annotations

import inspect
import subprocess
import sys

import torch

from adamkit.cli import main
from adamkit.demo import (
    DEFAULT_LRS,
    OPTIMIZERS,
    RunResult,
    batch_orders,
    first_step_note,
    format_table,
    run_demo,
    what_it_shows,
)


def test_demo_trains_all_four_optimizers_tuned_and_at_the_default_lr():
    results = run_demo(epochs=3, progress=False)
    assert [(r.name, r.setting) for r in results] == [
        *((name, "tuned") for name in OPTIMIZERS),
        *((name, "default") for name in OPTIMIZERS),
    ]
    for r in results:
        assert r.epoch_losses[-1] < r.epoch_losses[0], r.name  # each one learns
        assert r.seconds > 0 and r.step_ms > 0 and r.first_step_seconds > 0
        expected = OPTIMIZERS[r.name][1] if r.setting == "tuned" else DEFAULT_LRS[r.name]
        assert r.lr == expected
        if r.setting == "tuned":
            assert r.test_accuracy > 0.8, r.name  # 10 classes: chance is 0.1
    table = format_table(results)
    assert all(name in table for name in OPTIMIZERS)
    assert "at the tuned lr" in table and "at torch.optim's default lr" in table


def test_default_lrs_are_torch_optims_defaults():
    torch_default = {
        cls: inspect.signature(cls).parameters["lr"].default
        for cls in (torch.optim.SGD, torch.optim.RMSprop, torch.optim.Adam)
    }
    assert DEFAULT_LRS == {
        "SGD": torch_default[torch.optim.SGD],
        "Momentum": torch_default[torch.optim.SGD],
        "RMSProp": torch_default[torch.optim.RMSprop],
        "Adam": torch_default[torch.optim.Adam],
    }


def _result(name: str, setting: str, accuracy: float) -> RunResult:
    return RunResult(name, 0.1, 0.5, accuracy, 1.0, setting=setting, first_step_seconds=2.0)


def test_what_it_shows_names_the_cost_of_the_default_lr():
    accuracy = {
        "SGD": (0.97, 0.26),
        "Momentum": (0.97, 0.85),
        "RMSProp": (0.97, 0.96),
        "Adam": (0.97, 0.95),
    }
    results = [
        _result(name, setting, acc[i])
        for i, setting in enumerate(("tuned", "default"))
        for name, acc in accuracy.items()
    ]
    line = what_it_shows(results)
    assert "\n" not in line
    assert "SGD -71.0, Momentum -12.0, RMSProp -1.0, Adam -2.0 points" in line
    assert "RMSProp and Adam, which scale each parameter's step, are the least sensitive" in line
    results[-1] = _result("Adam", "default", 0.5)  # Adam now loses more than Momentum
    assert "not the least sensitive" in what_it_shows(results)
    assert "16.0 s" in first_step_note(results)  # the first steps' one-time cost, stated apart


def test_batches_are_shared_and_reproducible():
    a = batch_orders(100, 32, 2, seed=1)
    b = batch_orders(100, 32, 2, seed=1)
    assert all(x.equal(y) for ea, eb in zip(a, b, strict=True) for x, y in zip(ea, eb, strict=True))
    assert sorted(int(i) for batch in a[0] for i in batch) == list(range(100))


def test_cli_demo_prints_table_what_it_shows_and_the_first_steps_apart(capsys):
    assert main(["demo", "--epochs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test acc" in out and "Adam" in out and "ms/step" in out
    assert "What it shows: " in out
    assert "Not in it: the first steps" in out


def test_python_dash_m_rejects_bad_epochs():
    proc = subprocess.run(
        [sys.executable, "-m", "adamkit", "demo", "--epochs", "0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "expected a positive whole number, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_demo_out_writes_loss_and_effective_lr_pictures(tmp_path, capsys, monkeypatch):
    import matplotlib.figure

    figures = []
    savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "savefig",
        lambda f, *a, **k: figures.append(f) or savefig(f, *a, **k),
    )
    assert main(["demo", "--epochs", "2", "--no-progress", "--out", str(tmp_path / "pics")]) == 0
    for name in ("loss_curves.png", "effective_lr.png"):
        data = (tmp_path / "pics" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 30_000, name
    assert "effective_lr.png" in capsys.readouterr().out
    losses, effective = figures
    assert len(losses.legends[0].get_texts()) == 8  # tuned and default, four optimizers
    # RMSprop has no bias correction: its panel says √v, Adam's √v̂.
    labels = {ax.get_title().split(" ")[0]: ax.get_ylabel() for ax in effective.axes[:2]}
    assert labels == {
        "RMSProp": "effective learning rate α/(√v+ε)",
        "Adam": "effective learning rate α/(√v̂+ε)",
    }


def test_recorded_demo_has_per_layer_effective_lr():
    results = run_demo(epochs=1, progress=False, record_every=5, defaults=False)
    adam = next(r for r in results if r.name == "Adam")
    layers = {row["label"] for row in adam.diagnostics}
    assert layers == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert all(row["effective_lr.min"] <= row["effective_lr.median"] for row in adam.diagnostics)
