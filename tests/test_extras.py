"""Optional dependencies: `pip install adamkit` needs torch, NumPy and numba only; a command that
needs an extra says which in one line (exit 2), and importing adamkit imports none of them."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from adamkit import _extras
from adamkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("sklearn", "scipy", "matplotlib", "tqdm")


def test_required_dependencies_are_torch_numpy_numba():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {
        dep.split(">")[0].split("=")[0].split("<")[0].strip() for dep in project["dependencies"]
    }
    assert names == {"torch", "numpy", "numba"}
    extras = project["optional-dependencies"]
    assert {"scikit-learn", "matplotlib", "tqdm"} <= {d.split(">")[0] for d in extras["demo"]}
    assert any(d.startswith("matplotlib") for d in extras["viz"])


def test_importing_adamkit_imports_no_optional_package():
    # torch itself imports tqdm when it is installed (torch.hub): only what adamkit adds counts.
    code = textwrap.dedent(
        f"""
        import sys
        import torch
        before = set(sys.modules)
        import adamkit, adamkit.cli, adamkit.demo, adamkit.diagnostics, adamkit.viz
        import adamkit.explore, adamkit.claims, adamkit.bench
        adamkit.cli.build_parser()
        added = set(sys.modules) - before
        print(sorted(m for m in {OPTIONAL!r} if m in added or m in sys.modules and m != "tqdm"))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def _missing(monkeypatch, *modules: str) -> None:
    """Make ``import module`` fail as if the package were not installed."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def _exit_line(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err  # one line
    return err


@pytest.mark.parametrize(
    ("missing", "argv", "extra", "package"),
    [
        ("sklearn", ["demo", "--epochs", "1", "--no-progress"], "demo", "scikit-learn"),
        ("matplotlib", ["demo", "--epochs", "1", "--out", "{tmp}"], "demo", "matplotlib"),
        ("sklearn", ["claims", "--quick", "--out", "{tmp}"], "demo", "scikit-learn"),
        ("matplotlib", ["claims", "--quick", "--out", "{tmp}"], "demo", "matplotlib"),
        ("matplotlib", ["viz", "saddle", "--out", "{tmp}/s.png"], "viz", "matplotlib"),
    ],
    ids=["demo", "demo-out", "claims-sklearn", "claims-matplotlib", "viz"],
)
def test_a_command_missing_an_extra_names_it_in_one_line(
    missing, argv, extra, package, monkeypatch, capsys, tmp_path
):
    _missing(monkeypatch, missing)
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    err = _exit_line(argv, capsys)
    assert f"pip install 'adamkit[{extra}]'" in err
    assert f"needs {package}, which is not installed" in err
    assert err.startswith(f"adamkit {argv[0]}: error: ")
    assert not any(tmp_path.iterdir())  # it stopped before doing any work


def test_plot_recording_without_matplotlib_names_the_viz_extra(monkeypatch, tmp_path):
    from adamkit.diagnostics import plot_recording

    _missing(monkeypatch, "matplotlib")
    rows = [{"label": "group0", "step": 1, "effective_lr.median": 1e-3}]
    with pytest.raises(ImportError, match=r"pip install 'adamkit\[viz\]'"):
        plot_recording(rows, tmp_path / "x.png")


def test_without_tqdm_progress_bars_are_left_out(monkeypatch):
    _missing(monkeypatch, "tqdm")
    with _extras.progress(total=3, desc="x") as bar:
        bar.update(1)
        bar.set_postfix_str("y")
    assert list(_extras.progress(range(3))) == [0, 1, 2]


def test_the_demo_runs_without_tqdm(monkeypatch, capsys):
    from adamkit.demo import run_demo

    _missing(monkeypatch, "tqdm")
    results = run_demo(epochs=1, progress=True, defaults=False)
    assert len(results) == 4
    assert "training" not in capsys.readouterr().err  # no bar drawn
