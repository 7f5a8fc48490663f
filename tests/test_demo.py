"""The main job runs end to end and its optimizers learn."""

from __future__ import annotations

import subprocess
import sys

from adamkit.cli import main
from adamkit.demo import OPTIMIZERS, batch_orders, format_table, run_demo


def test_demo_trains_all_four_optimizers():
    results = run_demo(epochs=3, progress=False)
    assert [r.name for r in results] == list(OPTIMIZERS)
    for r in results:
        assert r.epoch_losses[-1] < r.epoch_losses[0], r.name  # each one learns
        assert r.test_accuracy > 0.8, r.name  # 10 classes: chance is 0.1
        assert r.seconds > 0
    table = format_table(results)
    assert all(name in table for name in OPTIMIZERS)


def test_batches_are_shared_and_reproducible():
    a = batch_orders(100, 32, 2, seed=1)
    b = batch_orders(100, 32, 2, seed=1)
    assert all(x.equal(y) for ea, eb in zip(a, b, strict=True) for x, y in zip(ea, eb, strict=True))
    assert sorted(int(i) for batch in a[0] for i in batch) == list(range(100))


def test_cli_demo_prints_table(capsys):
    assert main(["demo", "--epochs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "test acc" in out and "Adam" in out


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


def test_cli_demo_out_writes_loss_and_effective_lr_pictures(tmp_path, capsys):
    assert main(["demo", "--epochs", "2", "--no-progress", "--out", str(tmp_path / "pics")]) == 0
    for name in ("loss_curves.png", "effective_lr.png"):
        data = (tmp_path / "pics" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 30_000, name
    assert "effective_lr.png" in capsys.readouterr().out


def test_recorded_demo_has_per_layer_effective_lr():
    results = run_demo(epochs=1, progress=False, record_every=5)
    adam = next(r for r in results if r.name == "Adam")
    layers = {row["label"] for row in adam.diagnostics}
    assert layers == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert all(row["effective_lr.min"] <= row["effective_lr.median"] for row in adam.diagnostics)
