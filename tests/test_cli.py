"""The command line's own surface: --version, defaults in --help, demo learning rates."""

from __future__ import annotations

import pytest

import adamkit
from adamkit import demo
from adamkit.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"adamkit {adamkit.__version__}"


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        ("demo", ["--epochs EPOCHS       epochs (default: 20)", "(default: 64)", "Adam=0.003"]),
        ("bench", ["timed rounds (default: 15)", "(default: bench-results.json)"]),
        ("viz", ["steps (default: 500)", "(default: (0.9, 0.999))"]),
    ],
)
def test_help_shows_defaults(command, shown, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    for piece in shown:
        assert piece in text, piece
    assert "(default: None)" not in text and "(default: False)" not in text


def test_demo_lr_override_shows_in_the_table(capsys):
    assert main(["demo", "--epochs", "1", "--no-progress", "--lr", "Adam=0.01"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.strip()]
    rows = {words[0]: words for words in lines}
    assert rows["Adam"][1] == "0.01"
    assert rows["SGD"][1] == "0.3" and rows["Momentum"][1] == "0.03"  # the tuned ones
    assert rows["Adam"][4] == "0.001" and rows["SGD"][4] == "0.001"  # torch.optim's defaults


def test_demo_timing_leaves_out_the_first_step(monkeypatch):
    # A throwaway optimizer takes one step before the timed run (numba's start-up cost).
    made = []
    factory, lr = demo.OPTIMIZERS["Adam"]
    monkeypatch.setitem(
        demo.OPTIMIZERS, "Adam", (lambda params, lr: made.append(1) or factory(params, lr), lr)
    )
    data = demo.load_digits(0)
    batches = demo.batch_orders(len(data.y_train), 64, 1, 0)
    result = demo.train_one("Adam", demo.OPTIMIZERS["Adam"][0], data, batches, 0)
    assert len(made) == 2  # the warm-up's and the timed run's
    assert result.lr == lr and result.seconds > 0 and result.first_step_seconds > 0
