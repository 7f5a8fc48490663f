"""``adamkit check``: every case passes on this machine, the table has a row per case, the JSON
holds the results, and a broken kernel is reported as FAIL (exit 1)."""

from __future__ import annotations

import json

import pytest
import torch

from adamkit import check
from adamkit.algorithms import adam as adam_spec
from adamkit.algorithms import sgd as sgd_spec
from adamkit.cli import main
from adamkit.kernels import lowbit, registry
from adamkit.optim import _base

pytestmark = pytest.mark.timeout(300)


def _rows(text: str) -> list[list[str]]:
    """The table's case rows, split on runs of two or more spaces."""
    import re

    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("optimizer"))
    rows = []
    for line in lines[start + 2 :]:
        if not line or line[0].isdigit():
            break
        rows.append(re.split(r"\s{2,}", line.strip()))
    return rows


def _expected_cases() -> set[tuple[str, str, str, str, str]]:
    """(optimizer, options, state, backend, device) of every case on the CPU."""
    cases = set()
    for name, _, option_sets in check.OPTIMIZERS:
        for options in option_sets:
            for backend in ("forloop", "foreach", "fused"):
                cases.add((name, check._describe(options), "fp32", backend, "cpu"))
                if name in check.LOW_MEMORY and backend != "foreach":
                    for precision in ("bf16", "8bit"):
                        cases.add((name, check._describe(options), precision, backend, "cpu"))
    return cases


def test_check_passes_on_the_cpu_with_a_row_per_case(tmp_path, capsys):
    out = tmp_path / "check.json"
    assert main(["check", "--device", "cpu", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    rows = _rows(text)
    assert {tuple(row[:5]) for row in rows} == _expected_cases()
    assert len(rows) == len(_expected_cases())
    assert all(row[-1] == "PASS" for row in rows)
    kernels = {(row[3], row[5]) for row in rows if row[2] == "fp32"}
    assert kernels == {("forloop", "forloop"), ("foreach", "foreach"), ("fused", "numba")}
    assert f"{len(rows)} passed, 0 failed" in text
    data = json.loads(out.read_text())
    assert data["passed"] and len(data["results"]) == len(rows)
    assert data["environment"]["torch"] == torch.__version__
    first = data["results"][0]
    assert set(first) >= {"optimizer", "backend", "device", "param_error", "passed"}
    # torch-order for-loop rows are bitwise
    assert all(r["param_error"] == 0 for r in data["results"] if r["kernel"] == "forloop")


@pytest.fixture
def fresh_kernels():
    """Kernels are looked up once and cached: clear the caches around a patched kernel."""

    def clear():
        registry._made.cache_clear()
        registry.resolve.cache_clear()
        _base._adapted_kernel.cache_clear()

    clear()
    yield
    clear()


def test_a_kernel_with_noise_is_reported_as_fail(monkeypatch, fresh_kernels, capsys):
    original = adam_spec.torch_adam  # Adam's torch-order kernels: torch's functional update

    def noisy(params, *args, **kwargs):
        original(params, *args, **kwargs)
        if kwargs.get("foreach"):  # only the foreach kernel is broken
            for p in params:
                p.add_(torch.randn_like(p) * 1e-3)

    monkeypatch.setattr(adam_spec, "torch_adam", noisy)
    assert main(["check", "--device", "cpu", "--optimizer", "Adam", "--optimizer", "SGD"]) == 1
    rows = _rows(capsys.readouterr().out)
    by_result = {(row[0], row[3], row[-1]) for row in rows}
    assert ("Adam", "foreach", "FAIL") in by_result
    assert ("Adam", "foreach", "PASS") not in by_result
    assert ("Adam", "forloop", "PASS") in by_result and ("Adam", "fused", "PASS") in by_result
    assert all(row[-1] == "PASS" for row in rows if row[0] == "SGD")


def test_low_memory_state_with_noise_is_reported_as_fail(monkeypatch):
    original = lowbit.step_tensor

    def noisy(spec, p, *args, **kwargs):
        original(spec, p, *args, **kwargs)
        p.add_(torch.randn_like(p) * 1e-3)

    monkeypatch.setattr(lowbit, "step_tensor", noisy)
    results = check.run(
        optimizers=["Adam"],
        precisions=["bf16"],
        backends=["forloop", "fused"],
        device_types=["cpu"],
    )
    assert {r.passed for r in results if r.kernel == "torch-ops"} == {False}
    # the numba kernel takes two slots (amsgrad's third goes to the torch ops path)
    assert {r.passed for r in results if r.kernel == "numba" and "amsgrad" not in r.options} == {
        True
    }


def test_a_case_that_raises_fails_with_the_reason(monkeypatch, fresh_kernels):
    def broken(*args, **kwargs):
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(sgd_spec, "torch_sgd", broken)  # SGD's torch-order kernels
    results = check.run(
        optimizers=["SGD"], precisions=["fp32"], backends=["foreach"], device_types=["cpu"]
    )
    assert results and not any(r.passed for r in results)
    assert all("kernel exploded" in r.note for r in results)


@pytest.mark.skipif(not registry.triton_available(), reason="needs triton")
def test_triton_rows_under_the_interpreter_when_asked():
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine the Triton rows run compiled on CUDA")
    assert not check.run(optimizers=["SGD"], backends=["triton"])  # not asked: none
    results = check.run(
        optimizers=["SGD"], precisions=["fp32"], backends=["triton"], triton_interpret=True
    )
    assert results and all(r.kernel == "triton" and r.passed for r in results)
    assert registry.get_default("cpu") == "numba"  # set back


def test_check_bad_arguments_are_one_line_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check", "--backend", "cuda"])
    assert info.value.code == 2
    assert "invalid choice: 'cuda'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit) as info:
            main(["check", "--device", "cuda"])
        assert info.value.code == 2
        assert "no CUDA device" in capsys.readouterr().err
