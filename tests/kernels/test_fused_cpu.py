"""The fused CPU (numba) kernels against the reference and the for-loop kernel."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch

import adamkit
from adamkit.kernels import _threads, spec_kernels
from harness import (
    assert_all_close_to_scale,
    grad_plan,
    reference_close,
    run_optimizer,
    run_reference,
)
from specs import ALL_CONFIGS, ALL_IDS, SPECS, make_params, to_numpy_real


def _params_with_a_large_one(dtype):
    gen = torch.Generator().manual_seed(17)
    params = make_params(dtype, gen)
    # Odd-sized and long enough to be split across threads.
    params.append(torch.randn(_threads.SPLIT_MIN_ELEMENTS + 3, generator=gen).to(dtype))
    return params


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
def test_fused_matches_reference_float64(spec, config):
    params0 = _params_with_a_large_one(torch.float64)
    plan = grad_plan(params0, 15, seed=12)
    params, opt = run_optimizer(spec.ours, params0, config, plan, **_fused_flag(spec))
    ref_params, ref_states = run_reference(spec, params0, config, plan)
    for i, (p, rp) in enumerate(zip(params, ref_params, strict=True)):
        reference_close(p, rp, rtol=1e-12, atol=1e-12, what=f"param {i}")
        for key, field in spec.state_fields.items():
            if key in opt.state[p]:
                expected = getattr(ref_states[i], field)
                reference_close(opt.state[p][key], expected, rtol=1e-12, atol=1e-12, what=key)


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
def test_fused_matches_forloop_float32(spec, config):
    params0 = _params_with_a_large_one(torch.float32)
    plan = grad_plan(params0, 15, seed=13)
    fused, o_fused = run_optimizer(spec.ours, params0, config, plan, **_fused_flag(spec))
    loop, o_loop = run_optimizer(spec.ours, params0, config, plan, foreach=False)
    if not config.get("centered"):
        assert_all_close_to_scale(fused, loop, o_fused, o_loop, rtol=1e-5)
        return
    # Centered RMSprop divides by √(v - ḡ²), a cancellation that amplifies one-ulp differences
    # (torch's vectorized lerp uses an FMA) far beyond float32 precision. There the check is
    # that the fused kernel is as close to the float64 reference as the for-loop kernel is.
    ref, _ = run_reference(spec, [_to64(p) for p in params0], config, _as_float64(plan))
    for i, (f, lp, r) in enumerate(zip(fused, loop, ref, strict=True)):
        err_fused = _max_abs_error(f, r)
        err_loop = _max_abs_error(lp, r)
        assert err_fused <= 2 * err_loop + 1e-6, (i, err_fused, err_loop)


def _strided_leaf(values: torch.Tensor) -> torch.Tensor:
    """A leaf tensor with the values of ``values`` laid out with gaps (not contiguous)."""
    rows, cols = values.shape
    leaf = torch.empty_strided((rows, cols), (cols * 2 + 1, 2), dtype=values.dtype)
    leaf.copy_(values)
    return leaf.requires_grad_()


@pytest.mark.parametrize(("spec", "config"), ALL_CONFIGS, ids=ALL_IDS)
def test_fused_handles_non_contiguous_tensors(spec, config):
    base = torch.randn(33, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    dense = [base.t().contiguous(), base[::2, 1::3].contiguous()]
    plan = grad_plan(dense, 6, seed=4)
    ref_params, _ = run_reference(spec, dense, config, plan)

    params = [base.t().clone().requires_grad_(), _strided_leaf(dense[1])]
    assert not any(p.is_contiguous() for p in params)
    opt = spec.ours(params, **config, **_fused_flag(spec))
    for grads in plan:
        for p, g in zip(params, grads, strict=True):
            p.grad = None if g is None else g.t().contiguous().t()  # non-contiguous grads too
        opt.step()
    for p, rp in zip(params, ref_params, strict=True):
        reference_close(p.contiguous(), rp, rtol=1e-12, atol=1e-12, what="non-contiguous")


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_nan_and_inf_propagate_like_forloop(spec):
    params0 = [torch.randn(70000, dtype=torch.float32), torch.randn(10, dtype=torch.float32)]
    plan = grad_plan(params0, 3, seed=1)
    plan[1][0][5] = float("nan")
    plan[1][0][6] = float("inf")
    plan[1][1][0] = float("-inf")
    config = {
        "SGD": {"momentum": 0.9},
        "RMSprop": {"momentum": 0.9},
        "Adam": {"amsgrad": True},
        "AdamW": {"amsgrad": True},
    }.get(spec.name, {**spec.configs[0], "weight_decay": 0.1})
    fused, o_fused = run_optimizer(spec.ours, params0, config, plan, **_fused_flag(spec))
    loop, o_loop = run_optimizer(spec.ours, params0, config, plan, foreach=False)
    for a, b in zip(fused, loop, strict=True):
        # (Lion's sign(NaN) = 0 leaves the param finite: its momentum holds the NaN)
        tensors = [(a, b)] + [
            (o_fused.state[a][key], o_loop.state[b][key])
            for key in spec.state_fields
            if key in o_fused.state[a]
        ]
        for x, y in tensors:
            assert torch.equal(x.isnan(), y.isnan())
            assert torch.equal(x.isinf(), y.isinf())
        assert any(x.isnan().any() or x.isinf().any() for x, _ in tensors)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_params_stay_finite_with_zero_gradients(dtype):
    # In float16, ε = 1e-8 underflows to 0, so the for-loop kernel computes 0/0 = NaN.
    w_loop = torch.nn.Parameter(torch.ones(8, dtype=dtype))
    w_fused = torch.nn.Parameter(torch.ones(8, dtype=dtype))
    opt_loop = torch.optim.Adam([w_loop], foreach=False)
    opt_fused = adamkit.Adam([w_fused], fused=True)
    for _ in range(3):
        w_loop.grad = torch.zeros(8, dtype=dtype)
        w_fused.grad = torch.zeros(8, dtype=dtype)
        opt_loop.step()
        opt_fused.step()
    if dtype == torch.float16:
        assert w_loop.isnan().all()  # the problem the fused path avoids
    assert torch.equal(w_fused.detach(), torch.ones(8, dtype=dtype))
    assert opt_fused.state[w_fused]["exp_avg"].dtype == dtype  # state keeps torch's dtype


def test_half_precision_matches_float32_arithmetic():
    gen = torch.Generator().manual_seed(0)
    w0 = torch.randn(100, generator=gen).half()
    grads = [torch.randn(100, generator=gen).half() for _ in range(5)]
    w = torch.nn.Parameter(w0.clone())
    opt = adamkit.Adam([w], lr=1e-2, fused=True)
    w32 = torch.nn.Parameter(w0.float())
    opt32 = torch.optim.Adam([w32], lr=1e-2)
    for g in grads:
        w.grad, w32.grad = g.clone(), g.float()
        opt.step()
        opt32.step()
    torch.testing.assert_close(w.detach().float(), w32.detach(), rtol=2e-3, atol=2e-3)


def _to64(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.complex128 if t.is_complex() else torch.float64)


def _as_float64(plan):
    return [[None if g is None else _to64(g) for g in grads] for grads in plan]


def _max_abs_error(actual: torch.Tensor, expected) -> float:
    got = to_numpy_real(actual)
    want = np.ascontiguousarray(expected)
    want = want.view(np.float64) if np.iscomplexobj(want) else want
    return float(np.max(np.abs(got - want.reshape(-1)), initial=0.0))


def _fused_flag(spec):
    # RMSprop has no `fused` argument in torch.optim; its default backend is the fused one.
    return {} if spec.name == "RMSprop" else {"fused": True}


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_chunk_tables_cover_every_element_once_in_balanced_shares(workers):
    numels = (5, 300_000, 1, 70_001, 0, 200_000)
    tables = _threads.chunk_tables(numels, workers)
    assert len(tables.bounds) == workers + 1
    per_worker = [tables.table(k) for k in range(workers)]
    covered = [np.zeros(n, dtype=np.int64) for n in numels]
    for table in per_worker:
        for t, lo, hi in table:
            covered[t][lo:hi] += 1
    assert all((c == 1).all() for c in covered)
    shares = [int((table[:, 2] - table[:, 1]).sum()) for table in per_worker]
    assert max(shares) - min(shares) <= 2 * 64  # equal up to the cache-line alignment


def test_small_groups_stay_on_one_thread():
    tables = _threads.chunk_tables((1000, 2000), 2)
    assert tables.bounds.tolist() == [0, 2]


ADAM_GROUP = dict(
    lr=1e-2,
    betas=(0.9, 0.999),
    eps=1e-8,
    weight_decay=0.1,
    decoupled_weight_decay=False,
    amsgrad=True,
    maximize=False,
)


def fused_adam(params, grads, m, v, vmax, steps):
    """Adam's fused CPU kernel (the numba driver; the for-loop kernel for what it cannot take)."""
    spec_kernels.kernel("adam", "fused", "cpu")(
        params, grads, m, v, vmax, steps, [], group=ADAM_GROUP
    )


def loop_adam(params, grads, m, v, vmax, steps):
    """Adam's for-loop kernel: torch's functional update."""
    kernel = spec_kernels.kernel("adam", "forloop", "cpu")
    kernel(params, grads, m, v, vmax, steps, [], group=ADAM_GROUP)


def _adam_tensors(numels, seed=3, step_dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(n, generator=gen) for n in numels]
    grads = [torch.randn(n, generator=gen) for n in numels]
    state = [[torch.rand(n, generator=gen) for n in numels] for _ in range(3)]
    steps = [torch.tensor(float(k + 1), dtype=step_dtype) for k in range(len(numels))]
    return params, grads, state, steps


def _fused_adam_result(numels, monkeypatch, *, parallel: bool):
    params, grads, (m, v, vmax), steps = _adam_tensors(numels)
    calls = []
    real = spec_kernels.run_loops

    def counted(serial, parallel_loop, *args):
        return real(serial, lambda *a: calls.append(1) or parallel_loop(*a), *args)

    monkeypatch.setattr(spec_kernels, "run_loops", counted)
    monkeypatch.setattr(_threads.Threads, "usable", parallel)
    # not after a slow launch on a busy machine (tests/kernels/test_threads_contention.py)
    monkeypatch.setattr(_threads.Threads, "contended_until", 0.0)
    fused_adam(params, grads, m, v, vmax, steps)
    return [params, m, v, vmax], len(calls)


def test_parallel_loop_runs_long_groups_and_equals_the_serial_loop(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    numels = (_threads.SPLIT_MIN_ELEMENTS + 5, 3, 1000)
    parallel, launches = _fused_adam_result(numels, monkeypatch, parallel=True)
    serial, no_launches = _fused_adam_result(numels, monkeypatch, parallel=False)
    assert (launches, no_launches) == (1, 0)
    for got, want in zip(parallel, serial, strict=True):
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)


def test_a_child_forked_after_a_parallel_launch_runs_the_serial_loop():
    numels = (_threads.SPLIT_MIN_ELEMENTS * 2 + 1,)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected, grads, (m, v, vmax), steps = _adam_tensors(numels)
        fused_adam(expected, grads, m, v, vmax, steps)  # launches here
    finally:
        torch.set_num_threads(torch_threads)
    if not _threads.Threads.launched:
        pytest.skip("numba's parallel loop was not launched (one thread or workqueue layer)")
    pid = os.fork()
    if pid == 0:  # child: a launch here would abort the process under GNU OpenMP
        signal.alarm(60)  # a hung child fails the test instead of stalling it
        ok = False
        try:
            ok = not _threads.Threads.usable
            params, grads, (m, v, vmax), steps = _adam_tensors(numels)
            fused_adam(params, grads, m, v, vmax, steps)
            # NumPy, not torch: torch's own OpenMP ops can hang in a forked child.
            ok = ok and np.array_equal(params[0].numpy(), expected[0].numpy())
        finally:  # never return into pytest from the child
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), f"forked child died with status {status}"
    assert os.WEXITSTATUS(status) == 0, "forked child got a wrong result or used the pool"


def test_step_counters_other_than_float64_scalars_take_the_forloop_kernel():
    numels = (7, 130)
    params, grads, (m, v, vmax), steps = _adam_tensors(numels, step_dtype=torch.float32)
    fused_adam(params, grads, m, v, vmax, steps)
    expected, eg, (em, ev, evmax), esteps = _adam_tensors(numels, step_dtype=torch.float32)
    loop_adam(expected, eg, em, ev, evmax, esteps)
    for got, want in zip(params + m + v + vmax, expected + em + ev + evmax, strict=True):
        assert torch.equal(got, want)
    assert [s.dtype for s in steps] == [torch.float32] * 2  # counted in place, not replaced
    assert [s.item() for s in steps] == [s.item() for s in esteps] == [2.0, 3.0]


def test_state_on_another_device_never_reaches_the_loops():
    # A meta tensor's data address is 0: the loops writing there would crash the process.
    # It goes to the for-loop kernel, whose torch ops refuse the device mix.
    params, grads, (m, v, vmax), steps = _adam_tensors((5,))
    before = params[0].clone()
    m = [torch.zeros(5, device="meta")]
    with pytest.raises(RuntimeError, match="device"):
        fused_adam(params, grads, m, v, vmax, steps)
    assert torch.equal(params[0], before)


@pytest.mark.parametrize(
    "bad_state",
    [torch.zeros(4), torch.zeros(5, dtype=torch.float64), torch.zeros(10)[::2]],
    ids=["fewer-elements", "other-dtype", "non-contiguous"],
)
def test_state_unlike_its_param_takes_the_forloop_kernel(bad_state):
    # The loops read and write state memory as the param's: a smaller or wider tensor would
    # be read or written past its end. Such tensors go to the for-loop kernel instead.
    params, grads, (m, v, vmax), steps = _adam_tensors((5, 7))
    calls = []
    real = spec_kernels.split

    def spied(*args):
        batches, other, empty = real(*args)
        calls.append(other)
        return batches, other, empty

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(spec_kernels, "split", spied)
        try:
            fused_adam(params, grads, [bad_state, m[1]], v, vmax, steps)
        except RuntimeError:
            pass  # torch's ops may refuse the mismatch: an error, not a wrong read
    assert calls == [[0]]  # only the mismatched tensor left the loops


def test_spec_loops_are_cached_under_a_stamp_of_every_source_they_are_built_from(tmp_path):
    # numba's own stamp is the cached function's file only: an edited spec (another file)
    # would otherwise run its stale compiled loop from the cache.
    from adamkit.kernels import _numba_cache, _numba_driver

    locator = _numba_driver.adam_chunks._cache._impl._locator
    assert type(locator).__name__.startswith("Stamped")
    assert locator.get_source_stamp() == _numba_cache._STAMP
    spec_file = next(p for p in _numba_cache._sources() if p.name == "nadam.py")
    before = _numba_cache._sources_hash()
    copy = tmp_path / "nadam.py"
    copy.write_bytes(spec_file.read_bytes() + b"\n# edited\n")
    assert _numba_cache._sources_hash([*(_numba_cache._sources() - {spec_file}), copy]) != before
