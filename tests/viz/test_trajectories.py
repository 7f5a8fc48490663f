"""Trajectories on the test functions: qualitative behaviour, pictures and the CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adamkit import viz
from adamkit.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _escape_step(name: str) -> int:
    # Same learning rate for all: SGD's step is α·|g| with |g| ≈ 1e-4 near the ridge, while
    # Adam's and RMSProp's are ≈ α per coordinate whatever the gradient's size.
    path = viz.run(viz.get("saddle"), name, steps=1000, lr=0.05)
    step = path.steps_until(lambda x, y: abs(y) > 0.5)
    assert step is not None, f"{name} never left the ridge"
    return step


def test_adam_and_rmsprop_escape_the_saddle_far_sooner_than_sgd():
    sgd = _escape_step("SGD")
    for name in ("Adam", "RMSProp"):
        assert _escape_step(name) * 5 < sgd, name


def test_rotation_changes_adam_but_not_sgd_or_momentum():
    theta = 30.0
    c, s = math.cos(math.radians(theta)), math.sin(math.radians(theta))
    rotation = np.array([[c, -s], [s, c]])
    plain, rotated = viz.get("quadratic"), viz.get("quadratic", theta)
    start = np.array(plain.start)
    for name in viz.OPTIMIZERS:
        a = viz.run(plain, name, steps=100)
        b = viz.run(rotated, name, steps=100, start=tuple(rotation @ start))
        gap = np.abs(b.points @ rotation - a.points).max()  # b rotated back into a's frame
        if name in ("SGD", "Momentum"):
            assert gap < 1e-9, name  # rotation-equivariant: same path, turned
        else:
            assert gap > 0.1, name  # per-coordinate scaling depends on the axes


def test_adam_loses_its_help_when_the_quadratic_is_rotated():
    plain, rotated = viz.get("quadratic"), viz.get("quadratic", 45)
    near = lambda f: viz.run(f, "Adam", steps=150).values[-1]  # noqa: E731
    assert near(plain) * 10 < near(rotated)


@pytest.mark.parametrize("name", list(viz.FUNCTIONS))
def test_every_function_draws_a_real_png(name, tmp_path):
    function = viz.get(name)
    paths = viz.run_all(function, steps=40)
    out = viz.plot_trajectories(function, paths, tmp_path / f"{name}.png")
    data = out.read_bytes()
    assert data.startswith(PNG_MAGIC) and 50_000 < len(data) < 2_000_000
    assert all(p.points.shape == (41, 2) for p in paths)


def test_cli_writes_png_and_gif(tmp_path, capsys):
    code = main(
        [
            "viz", "quadratic", "--rotate", "30", "--steps", "20", "--lr", "Adam=0.2",
            "--start", "1,2", "--betas", "0.8,0.99",
            "--out", str(tmp_path / "q.png"), "--gif", str(tmp_path / "q.gif"),
        ]
    )  # fmt: skip
    assert code == 0
    assert (tmp_path / "q.png").read_bytes().startswith(PNG_MAGIC)
    assert (tmp_path / "q.gif").read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    captured = capsys.readouterr()
    assert "Adam      lr 0.2" in captured.out
    assert "gif: 100%" in captured.err  # the GIF's progress bar, frame by frame


def test_a_diverged_path_is_marked_and_every_picture_states_its_lesson(tmp_path):
    from adamkit.viz import plot

    function = viz.get("beale")
    paths = viz.run_all(function, steps=30, lrs={"SGD": 0.05})
    sgd = next(p for p in paths if p.name == "SGD")
    gone = plot._diverged(function, sgd)
    assert gone is not None and gone < 30  # lr 0.05 throws SGD off the plot
    assert plot._diverged(function, next(p for p in paths if p.name == "Adam")) is None
    out = viz.plot_trajectories(function, paths, tmp_path / "b.png")
    assert out.read_bytes().startswith(PNG_MAGIC)
    assert set(plot.LESSONS) == set(viz.FUNCTIONS)


BAD = {
    "unknown function": (["viz", "sphere", "--out", "x.png"], "invalid choice: 'sphere'"),
    "unknown optimizer": (
        ["viz", "beale", "--lr", "Adagrad=0.1", "--out", "{tmp}/x.png"],
        "unknown optimizer 'Adagrad' in --lr; choose from SGD, Momentum, RMSProp, Adam",
    ),
    "start outside": (
        ["viz", "rosenbrock", "--start", "9,9", "--out", "{tmp}/x.png"],
        "start (9.0, 9.0) is outside the rosenbrock plot: x in (-2.0, 2.0)",
    ),
    "zero steps": (["viz", "beale", "--steps", "0", "--out", "{tmp}/x.png"], "positive whole"),
    "negative lr": (["viz", "beale", "--lr", "Adam=-1", "--out", "{tmp}/x.png"], "> 0"),
    "unwritable": (
        ["viz", "beale", "--out", "/nonexistent-dir/x.png"],
        "cannot write /nonexistent-dir/x.png: No such file or directory",
    ),
    "rotate non-quadratic": (
        ["viz", "beale", "--rotate", "10", "--out", "{tmp}/x.png"],
        "--rotate applies to the quadratic only",
    ),
    "betas out of range": (
        ["viz", "beale", "--betas", "1.0,0.5", "--out", "{tmp}/x.png"],
        "betas must both lie in [0, 1); got 1,0.5. For example: --betas 0.9,0.999",
    ),
    "demo unknown optimizer": (
        ["demo", "--lr", "Adagrad=0.1"],
        "unknown optimizer 'Adagrad' in --lr; choose from SGD, Momentum, RMSProp, Adam",
    ),
    "demo unwritable": (
        ["demo", "--out", "/proc/adamkit-demo"],
        "cannot write to folder /proc/adamkit-demo",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_with_one_clear_line(case, tmp_path, capsys):
    argv, message = BAD[case]
    with pytest.raises(SystemExit) as info:
        main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
