"""The numba entry points generated per spec and cell (adamkit.kernels._numba_codegen): a spec
registered later gets loops with no edit to a driver, each cell has a file and a cache entry of
its own, and the cells of Adam and RMSprop step as torch.optim does."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import adamkit
from adamkit.algorithms import SPECS, AlgorithmSpec, GroupScalars, Hyperparameter
from adamkit.algorithms._ops import where
from adamkit.algorithms._spec import rounded
from adamkit.kernels import _numba_codegen, _numba_driver, _numba_lowbit, lowbit, spec_kernels
from adamkit.kernels._threads import SPLIT_MIN_ELEMENTS


# A toy spec, heavy-ball SGD with the buffer only when momentum > 0 (flag 0), written here and
# not in adamkit: the drivers must build its loops from the spec alone.
def _toy_element(p, g, s0, s1, s2, h, k, f):
    buf = where(f[0], s0 * h[0] + g, g)
    return p - k[0] * buf, buf, s1, s2, p, k[0] * buf, g


def _toy_element_negated(p, g, s0, s1, s2, h, k, f):
    buf = where(f[0], s0 * h[0] - g, -g)
    return p - k[0] * buf, buf, s1, s2, p, k[0] * buf, g


def _toy_advance(step, aux, b):
    return step + 1.0, aux


def _toy_scalars(step, aux, b):
    return b[0] / step, 0.0, 0.0, 0.0  # lr / t


def _toy_group_scalars(group, dtype):
    momentum = float(group["momentum"])
    return GroupScalars(rounded(dtype, momentum), (float(group["lr"]),), (momentum > 0,))


TOY = AlgorithmSpec(
    name="toy_heavy_ball",
    torch_name="ToyHeavyBall",
    hyperparameters=(Hyperparameter("lr", 0.1), Hyperparameter("momentum", 0.0)),
    tensor_state=("momentum_buffer",),
    slot_flags=(0,),
    element=_toy_element,
    group_scalars=_toy_group_scalars,
    advance=_toy_advance,
    tensor_scalars=_toy_scalars,
)


def _ran(entry_points) -> bool:
    """Whether the serial or the parallel entry point (which a busy machine may skip for
    the serial one) has been compiled or loaded."""
    return any(d.signatures for d in entry_points)


@pytest.fixture
def toy_registered(monkeypatch):
    monkeypatch.setitem(SPECS, TOY.name, TOY)
    return TOY


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_a_spec_registered_later_gets_its_loops_from_the_spec_alone(toy_registered, momentum):
    assert TOY.name in _numba_driver.LOOPS
    kernel = spec_kernels.fused_cpu(TOY)
    gen = torch.Generator().manual_seed(3)
    params = [torch.randn(n, dtype=torch.float64, generator=gen) for n in (5, 1000)]
    buffers = [torch.zeros_like(p) for p in params] if momentum else []
    steps = [torch.tensor(0.0, dtype=torch.float64) for _ in params]
    group = {"lr": 0.1, "momentum": momentum, "maximize": False}
    want = [p.numpy().copy() for p in params]
    want_buf = [np.zeros_like(w) for w in want]
    for t in range(1, 4):
        grads = [torch.randn(p.shape, dtype=torch.float64, generator=gen) for p in params]
        kernel(params, grads, buffers, steps, [], group=group)
        for i, g in enumerate(grads):
            buf = want_buf[i] * momentum + g.numpy() if momentum else g.numpy()
            want[i] = want[i] - (0.1 / t) * buf
            want_buf[i] = buf
    for i, p in enumerate(params):
        np.testing.assert_allclose(p.numpy(), want[i], rtol=1e-12, atol=1e-12)
        if momentum:
            np.testing.assert_allclose(buffers[i].numpy(), want_buf[i], rtol=1e-12, atol=1e-12)
        assert float(steps[i]) == 3.0
    stored = (bool(momentum), False, False)
    assert _ran(_numba_driver.cell(TOY, stored))  # the cell the flags select ran


def test_a_spec_unregistered_again_has_no_loops():
    assert TOY.name not in _numba_driver.LOOPS
    with pytest.raises(KeyError):
        _numba_driver.LOOPS[TOY.name]


def _cache_entry(dispatcher) -> tuple[str, str]:
    return dispatcher._cache._cache_path, dispatcher._cache._cache_file._index_name


def test_each_spec_and_cell_has_a_file_and_a_cache_entry_of_its_own():
    other = dataclasses.replace(TOY, element=_toy_element_negated)
    entries = {
        "adam_s110": _numba_driver.cell(SPECS["adam"], (True, True, False)),
        "adam_s111": _numba_driver.cell(SPECS["adam"], (True, True, True)),
        "toy_s100": _numba_driver.cell(TOY, (True, False, False)),
        "other_s100": _numba_driver.cell(other, (True, False, False)),
    }
    files = {name: pair[0].py_func.__code__.co_filename for name, pair in entries.items()}
    assert len(set(files.values())) == len(files)  # same name, other element: another file
    caches = [_cache_entry(d) for pair in entries.values() for d in pair]
    assert len(set(caches)) == len(caches)
    for serial, parallel in entries.values():
        for d in (serial, parallel):
            locator = d._cache._impl._locator
            assert type(locator).__name__.startswith("Stamped")
    # the file names the spec, the cell and a hash of every source it is built from
    digest = _numba_codegen.sources_hash(SPECS["adam"])
    assert os.path.basename(files["adam_s110"]) == f"loops_adam_s110_{digest[:16]}.py"
    with open(files["adam_s110"]) as source:
        assert digest in source.read()
    assert _numba_codegen.sources_hash(TOY) != _numba_codegen.sources_hash(other)


def test_cells_come_from_slot_flags():
    assert _numba_codegen.cells(SPECS["adam"]) == [(True, True, True), (True, True, False)]
    assert sorted(_numba_codegen.cells(SPECS["rmsprop"])) == [
        (True, a, b) for a in (False, True) for b in (False, True)
    ]
    for name in ("nadam", "radam", "adamax"):
        assert _numba_codegen.cells(SPECS[name]) == [(True, True, False)]
    assert _numba_codegen.cells(TOY) == [(True, False, False), (False, False, False)]
    # RMSprop: grad_avg with centered (flag 0), momentum_buffer with momentum (flag 3)
    flags = np.array([1, 0, 0, 0], np.uint8)
    assert _numba_codegen.stored_slots(SPECS["rmsprop"], flags) == (True, True, False)
    assert _numba_codegen.conditions(SPECS["rmsprop"], (True, True, False)) == (
        "flags[0] != 0 and flags[3] == 0"
    )


def test_the_low_memory_kernel_takes_every_spec_whose_slots_have_a_kind(toy_registered):
    # every spec adamkit has, a registered one too (the toy's momentum_buffer has a kind)
    assert sorted(_numba_lowbit.LOOPS) == sorted(SPECS)
    assert lowbit.fuses(TOY) and lowbit.fuses(SPECS["rmsprop"])
    unknown = dataclasses.replace(TOY, name="toy_unknown_slot", tensor_state=("trace",))
    assert not lowbit.fuses(unknown)  # no low-memory kind: the torch ops


def _run(cls, params0, plan, **config):
    params = [p.clone().requires_grad_(True) for p in params0]
    opt = cls(params, **config)
    for grads in plan:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
    return params, opt


def _params_and_plan(seed):
    gen = torch.Generator().manual_seed(seed)
    sizes = (7, 300, SPLIT_MIN_ELEMENTS + 3)  # the last long enough to be split across threads
    params = [torch.randn(n, dtype=torch.float64, generator=gen) for n in sizes]
    plan = [[torch.randn(n, dtype=torch.float64, generator=gen) for n in sizes] for _ in range(6)]
    return params, plan


def _assert_like_torch(ours, theirs, o_ours, o_theirs):
    # the fused-kernel tolerance of tests/kernels/test_fused_cpu.py in float64
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-12, atol=1e-12)
        for key, value in o_theirs.state[q].items():
            if key != "step":
                torch.testing.assert_close(
                    o_ours.state[p][key], value, rtol=1e-12, atol=1e-12, msg=key
                )


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_cells_step_as_torch_optim(amsgrad):
    params, plan = _params_and_plan(5)
    config = {"lr": 1e-2, "amsgrad": amsgrad, "weight_decay": 0.01}
    ours, o_ours = _run(adamkit.Adam, params, plan, fused=True, **config)
    theirs, o_theirs = _run(torch.optim.Adam, params, plan, foreach=False, **config)
    _assert_like_torch(ours, theirs, o_ours, o_theirs)
    assert ("max_exp_avg_sq" in o_ours.state[ours[0]]) == amsgrad
    assert _ran(_numba_driver.cell(SPECS["adam"], (True, True, amsgrad)))


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_cells_step_as_torch_optim(centered, momentum):
    params, plan = _params_and_plan(6)
    config = {"lr": 1e-2, "centered": centered, "momentum": momentum, "weight_decay": 0.01}
    ours, o_ours = _run(adamkit.RMSprop, params, plan, fused=True, **config)
    theirs, o_theirs = _run(torch.optim.RMSprop, params, plan, foreach=False, **config)
    _assert_like_torch(ours, theirs, o_ours, o_theirs)
    stored = (True, centered, momentum > 0)
    assert _ran(_numba_driver.cell(SPECS["rmsprop"], stored))


def test_a_new_process_loads_the_cells_from_numbas_cache(tmp_path):
    # NUMBA_CACHE_DIR holds the generated files and their compiled loops; a second process
    # compiles nothing. The first says once on stderr that it compiles (and why it waits).
    code = textwrap.dedent(
        """
        import torch, adamkit
        from adamkit.algorithms import SPECS
        from adamkit.kernels import _numba_codegen, _numba_driver
        p = torch.nn.Parameter(torch.ones(10, dtype=torch.float64))
        opt = adamkit.Adam([p], fused=True)
        p.grad = torch.ones(10, dtype=torch.float64)
        opt.step()
        serial = _numba_driver.cell(SPECS["adam"], (True, True, False))[0]
        print(_numba_codegen.directory(), sum(serial.stats.cache_hits.values()),
              sum(serial.stats.cache_misses.values()))
        """
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = [
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        for _ in range(2)
    ]
    runs = [run.stdout.split() for run in done]
    where = str((tmp_path / "adamkit_loops").resolve())
    assert runs[0] == [where, "0", "1"]  # compiled, then cached
    assert runs[1] == [where, "1", "0"]  # loaded from the cache
    notices = [run.stderr.count("adamkit: compiling the fused CPU kernel for Adam") for run in done]
    assert notices == [1, 0], [run.stderr for run in done]
    assert where in done[0].stderr
    assert [f.name for f in (tmp_path / "adamkit_loops").glob("loops_adam_s110_*.py")]


def _adam_kernel_run(kernel, amsgrad):
    params, plan = _params_and_plan(7)
    states = [[torch.zeros_like(p) for p in params] for _ in range(2 + amsgrad)]
    states += [[]] * (3 - len(states))
    steps = [torch.tensor(0.0, dtype=torch.float64) for _ in params]
    group = {
        "lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
        "amsgrad": amsgrad, "decoupled_weight_decay": False, "maximize": False,
    }  # fmt: skip
    for grads in plan:
        kernel(params, grads, *states, steps, [], group=group)
    return [*params, *(t for s in states for t in s)]


@pytest.mark.parametrize("amsgrad", [False, True])
def test_the_flag_dispatching_entry_points_step_as_the_cells_do(monkeypatch, amsgrad):
    # _numba_driver.adam_chunks / adam_parallel: every cell behind one numba entry point (as
    # the hand-written pairs were), picking the cell from the flags inside numba.
    cells = _adam_kernel_run(spec_kernels.fused_cpu(SPECS["adam"]), amsgrad)
    pair = (_numba_driver.adam_chunks, _numba_driver.adam_parallel)
    monkeypatch.setattr(_numba_driver, "LOOPS", {"adam": pair})
    dispatched = _adam_kernel_run(spec_kernels.fused_cpu(SPECS["adam"]), amsgrad)
    assert _ran(pair)
    for a, b in zip(cells, dispatched, strict=True):
        assert torch.equal(a, b)
