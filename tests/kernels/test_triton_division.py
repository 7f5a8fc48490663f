"""The rewrite that makes an element's divisions correctly rounded when it is compiled for
Triton (``triton_driver._exact_division``; tests/kernels/test_triton_ptx.py checks the PTX):
what it rewrites, what it leaves, and that two elements of one name each keep their own."""

from __future__ import annotations

import inspect
import os

import pytest
import torch

pytest.importorskip("triton")
if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("set TRITON_INTERPRET=1 (tests/conftest.py does)", allow_module_level=True)

from adamkit.algorithms import SPECS, AlgorithmSpec, GroupScalars, Hyperparameter
from adamkit.algorithms._spec import rounded
from adamkit.kernels import triton_driver


def _sample(p, g, s0, s1, s2, h, k, f):
    u = g / (s1 + h[0])
    u /= k[1]
    half = 1 / 2
    return p - u * half, s0, s1, s2, p, u, g


def test_each_division_but_a_literal_ones_calls_the_correctly_rounded_divide():
    rebuilt = triton_driver._exact_division(_sample)
    source = inspect.getsource(rebuilt)
    assert "/" not in source.replace("1 / 2", "")  # `/` and `/=` rewritten
    assert "1 / 2" in source  # two literals: Triton folds them (1 // 2 would not be 0.5)
    assert source.count(triton_driver._DIVIDE) == 2


def test_a_function_without_source_is_left_as_it_is():
    namespace: dict = {}
    exec("def element(p, g, s0, s1, s2, h, k, f):\n    return p / g", namespace)
    element = namespace["element"]
    assert triton_driver._exact_division(element) is element


def _toy(name, ascent):
    """A spec without tensor state whose element is named ``element`` either way (two specs
    of one notebook: one module, one name)."""
    if ascent:

        def element(p, g, s0, s1, s2, h, k, f):
            return p + k[0] * g / 1.0, s0, s1, s2, p, -k[0] * g, g

    else:

        def element(p, g, s0, s1, s2, h, k, f):
            return p - k[0] * g / 1.0, s0, s1, s2, p, k[0] * g, g

    return AlgorithmSpec(
        name=name, torch_name=name, hyperparameters=(Hyperparameter("lr", 0.1),),
        tensor_state=(), element=element,
        group_scalars=lambda group, dtype: GroupScalars(
            rounded(dtype, 0.0), (float(group["lr"]),), (False,)
        ),
        advance=lambda step, aux, b: (step + 1.0, aux),
        tensor_scalars=lambda step, aux, b: (b[0], 0.0, 0.0, 0.0),
    )  # fmt: skip


def test_two_elements_of_one_name_each_run_their_own(monkeypatch):
    # Their rebuilt sources shared a linecache name, and the interpreter reads a kernel's
    # source at its first run: the first kernel ran the second's element.
    descent, ascent = _toy("toy_descent", False), _toy("toy_ascent", True)
    monkeypatch.setitem(SPECS, descent.name, descent)
    monkeypatch.setitem(SPECS, ascent.name, ascent)
    run_descent = triton_driver.kernel(descent)
    run_ascent = triton_driver.kernel(ascent)  # made before the first runs
    for run, want in ((run_descent, 0.5), (run_ascent, 1.5)):
        p = torch.ones(8)
        run([p], [torch.ones(8)], [torch.zeros((), dtype=torch.float64)], [], group={"lr": 0.5})
        assert torch.equal(p, torch.full((8,), want))
