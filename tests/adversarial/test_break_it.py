"""Trying to break adamkit, with torch.optim as the oracle.

Each case runs adamkit's default (fused) optimizer and its torch.optim namesake from the same
seed and config and expects torch's answer; where torch raises, adamkit must raise a clear error
and leave every parameter and state tensor as it was. Each case has its own time limit, and the
cases that could kill or hang a process (threads, fork) run in a child process with a timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import adamkit
from harness import assert_unchanged, snapshot_params_and_state

pytestmark = pytest.mark.timeout(120)

PAIRS = [
    (adamkit.Adam, torch.optim.Adam, {"lr": 0.1}),
    (adamkit.AdamW, torch.optim.AdamW, {"lr": 0.1, "amsgrad": True}),
    (adamkit.SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    (adamkit.RMSprop, torch.optim.RMSprop, {"lr": 0.01, "centered": True, "momentum": 0.5}),
]
PAIR_IDS = [ours.__name__ for ours, _, _ in PAIRS]
FLOAT32 = {"rtol": 1e-5, "atol": 1e-6}


def _complex_params(seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(n, dtype=torch.complex64, generator=gen) for n in (5, 40_000)]


# ----------------------------------------------------------------- lazy conjugate/negative bits


@pytest.mark.parametrize(("ours", "theirs", "config"), PAIRS, ids=PAIR_IDS)
def test_conjugated_gradients_give_the_resolved_gradients_answer(ours, theirs, config):
    # Autograd makes lazily-conjugated gradients for ordinary complex code; the fused loops
    # read memory by address, which holds the un-conjugated values.
    c = torch.randn(40_000, dtype=torch.complex64, generator=torch.Generator().manual_seed(3))
    results = []
    for cls, resolve in ((ours, False), (theirs, True)):
        params = [torch.nn.Parameter(p) for p in _complex_params()]
        opt = cls(params, **config)
        for _ in range(3):
            opt.zero_grad()
            sum((p.conj() * c[: p.numel()]).real.sum() for p in params).backward()
            assert all(p.grad.is_conj() for p in params)
            if resolve:  # torch's Adam/RMSprop refuse conjugated grads; its SGD resolves them
                for p in params:
                    p.grad = p.grad.resolve_conj()
            opt.step()
        results.append(params)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), **FLOAT32)


def test_sgd_with_conjugated_gradients_equals_torch_as_it_is():
    c = torch.randn(5, dtype=torch.complex64, generator=torch.Generator().manual_seed(4))
    results = []
    for cls in (adamkit.SGD, torch.optim.SGD):
        p = torch.nn.Parameter(_complex_params()[0])
        opt = cls([p], lr=0.1, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            (p.conj() * c).real.sum().backward()
            opt.step()
        results.append(p.detach())
    torch.testing.assert_close(*results, **FLOAT32)


@pytest.mark.parametrize(("ours", "theirs", "config"), PAIRS, ids=PAIR_IDS)
def test_negative_bit_gradients_equal_torch(ours, theirs, config):
    gen = torch.Generator().manual_seed(5)
    params0 = [torch.randn(n, generator=gen) for n in (7, 40_000)]
    grads = [[torch.randn(p.numel() * 2, generator=gen) for p in params0] for _ in range(3)]
    results = []
    for cls in (ours, theirs):
        params = [torch.nn.Parameter(p.clone()) for p in params0]
        opt = cls(params, **config)
        for step_grads in grads:
            for p, g in zip(params, step_grads, strict=True):
                # A real tensor with the negative bit: memory holds -g.
                p.grad = torch.view_as_complex(g.view(-1, 2)).conj().imag
                assert p.grad.is_neg()
            opt.step()
        results.append(params)
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a.detach(), b.detach(), **FLOAT32)


def test_negative_bit_state_is_written_as_torch_writes_it():
    results = []
    for cls in (adamkit.Adam, torch.optim.Adam):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 9))
        opt = cls([p], lr=0.1)
        p.grad = torch.ones(9)
        opt.step()
        m = opt.state[p]["exp_avg"]
        opt.state[p]["exp_avg"] = torch._neg_view(m.neg())  # same values, negative bit
        p.grad = torch.linspace(0, 1, 9)
        opt.step()
        results.append((p.detach().clone(), opt.state[p]["exp_avg"].resolve_neg()))
    torch.testing.assert_close(results[0][0], results[1][0], **FLOAT32)
    torch.testing.assert_close(results[0][1], results[1][1], **FLOAT32)


# ----------------------------------------------------------------- threads, fork, spawn


# A child's time limit bounds a hang (an abort or a crash shows at once); it is no speed test.
# On a busy 2-core machine one child took 19-28 s (importing torch, numba loading its cached
# loops, or compiling them when a source edit made the cache stale), so the limit leaves a
# loaded machine a wide margin, and a test that runs several children gets the sum of their
# limits and some more for itself.
CHILD_TIMEOUT_S = 180


def _children(n: int) -> pytest.MarkDecorator:
    """The time limit of a test that runs ``n`` children one after another."""
    return pytest.mark.timeout(n * CHILD_TIMEOUT_S + 60)


@pytest.fixture(scope="module")
def warm_numba_cache():
    """Compile (or load) the fused loops the children run, serial and parallel, in this process
    once: numba's on-disk cache is shared with the children, which then only load them."""
    p = torch.nn.Parameter(torch.randn(200_000))
    for amsgrad in (False, True):
        opt = adamkit.Adam([p], lr=0.01, amsgrad=amsgrad)
        p.grad = torch.randn(200_000)
        opt.step()


def _python(args: list[str], env) -> str:
    """Run Python in a child process (which may abort or hang: bounded by its timeout) and
    return its standard output; a non-zero exit fails with its standard error."""
    run = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


_THREADS_SCRIPT = textwrap.dedent(
    """
    import sys, threading, torch, adamkit
    results = {}
    N = 200_000  # several chunks of 16,384 elements: the parallel loop runs
    def work(k):
        gen = torch.Generator().manual_seed(k)
        p = torch.nn.Parameter(torch.randn(N, generator=gen))
        opt = adamkit.Adam([p], lr=0.01)
        for _ in range(3):
            p.grad = torch.randn(N, generator=gen)
            opt.step()
        results[k] = p.detach().clone()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads: t.start()
    for t in threads: t.join()
    serial = {}
    for k in range(2):
        gen = torch.Generator().manual_seed(k)
        p = torch.nn.Parameter(torch.randn(N, generator=gen))
        opt = torch.optim.Adam([p], lr=0.01, foreach=False)
        for _ in range(3):
            p.grad = torch.randn(N, generator=gen)
            opt.step()
        serial[k] = p.detach()
    for k in range(2):
        torch.testing.assert_close(results[k], serial[k], rtol=1e-5, atol=1e-6)
    import numba
    print("layer", numba.threading_layer())
    """
)


def _loadable_threading_layers() -> list[str]:
    layers = ["workqueue"]
    for layer, module in (("omp", "numba.np.ufunc.omppool"), ("tbb", "numba.np.ufunc.tbbpool")):
        probe = subprocess.run(
            [sys.executable, "-c", f"import {module}"], capture_output=True, timeout=60
        )
        if probe.returncode == 0:
            layers.append(layer)
    return layers


@_children(3)
@pytest.mark.parametrize("layer", _loadable_threading_layers())
def test_two_threads_first_stepping_at_once_under_each_threading_layer(warm_numba_cache, layer):
    # Under workqueue two threads entering numba's parallel region at once abort the process
    # (SIGABRT); the first launch is serialised and later ones run serially under workqueue.
    env = {**os.environ, "NUMBA_THREADING_LAYER": layer}
    for _ in range(3):  # the abort was a race: 5 of 6 runs before the fix
        assert f"layer {layer}" in _python(["-c", _THREADS_SCRIPT], env)


_FORK_SPAWN_SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp, sys, torch, adamkit

    def train(p0, n):
        p = torch.nn.Parameter(p0.clone())
        opt = adamkit.Adam([p], lr=0.01)
        gen = torch.Generator().manual_seed(7)
        for _ in range(n):
            p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        return p.detach()

    def child(queue):
        # As a DataLoader worker does: torch's own OpenMP pool hangs a forked child that
        # uses it after the parent did (torch alone, with or without adamkit).
        torch.set_num_threads(1)
        queue.put(train(torch.ones(100_000), 3).numpy().tobytes())

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return torch.full((4,), float(i))

    if __name__ == "__main__":
        train(torch.ones(100_000), 1)  # the parent has launched numba's threads
        expected = train(torch.ones(100_000), 3).numpy().tobytes()
        for method in ("fork", "spawn"):
            ctx = mp.get_context(method)
            queue = ctx.Queue()
            proc = ctx.Process(target=child, args=(queue,))
            proc.start()
            got = queue.get(timeout=120)
            proc.join(timeout=30)
            assert proc.exitcode == 0, (method, proc.exitcode)
            assert got == expected, method  # bit for bit
        # The parent steps on between DataLoader workers forked after its first steps.
        loader = torch.utils.data.DataLoader(Data(), batch_size=2, num_workers=2)
        p = torch.nn.Parameter(torch.ones(100_000))
        opt = adamkit.Adam([p], lr=0.01)
        for batch in loader:
            p.grad = torch.full_like(p, batch.sum().item())
            opt.step()
        assert torch.isfinite(p).all() and p[0].item() < 1.0
        print("ok")
    """
)


@_children(1)
def test_fork_and_spawn_after_a_step(warm_numba_cache, tmp_path):
    script = tmp_path / "fork_spawn.py"
    script.write_text(_FORK_SPAWN_SCRIPT)
    assert "ok" in _python([str(script)], os.environ)


_DIGEST_SCRIPT = textwrap.dedent(
    """
    import hashlib, torch, adamkit
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(n)) for n in (3, 1000, 70_001, 300_000)]
    opts = [adamkit.Adam(params, lr=0.01, amsgrad=True)]
    gen = torch.Generator().manual_seed(1)
    for _ in range(20):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        opts[0].step()
    digest = hashlib.sha256()
    for p in params:
        digest.update(p.detach().numpy().tobytes())
    print(digest.hexdigest())
    """
)


@_children(3)
def test_bit_identical_across_runs_and_thread_counts(warm_numba_cache):
    digests = set()
    for threads in ("1", "2", "2"):
        env = {**os.environ, "NUMBA_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        digests.add(_python(["-c", _DIGEST_SCRIPT], env).strip())
    assert len(digests) == 1, digests


# ----------------------------------------------------------------- params replaced or resized


def _two_param_optimizer(cls, config):
    gen = torch.Generator().manual_seed(8)
    params = [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in (6, 40_000)]
    opt = cls(params, **config)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    return params, opt


@pytest.mark.parametrize(("ours", "theirs", "config"), PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("how", ["data-replaced", "resize_"])
def test_a_param_of_another_size_after_its_first_step_is_refused_and_nothing_changes(
    ours, theirs, config, how
):
    params, opt = _two_param_optimizer(ours, config)
    if how == "data-replaced":
        params[0].data = torch.randn(9)
    else:  # resize_ (torch refuses it on a tensor that requires grad)
        params[0].requires_grad_(False)
        params[0].resize_(9)
        params[0][6:] = 1.0  # resize_ leaves the new elements uninitialised (maybe NaN)
        params[0].requires_grad_(True)
    assert params[0].shape == (9,)
    for p in params:
        p.grad = torch.ones(p.shape)
    before = snapshot_params_and_state(params, opt)
    with pytest.raises(RuntimeError, match=r"has shape \(6,\).*p\.data = "):
        opt.step()
    assert_unchanged(params, opt, before)
    # torch refuses it too (its own error, after changing what it reached first).
    t_params, t_opt = _two_param_optimizer(theirs, config)
    t_params[0].data = torch.randn(9)
    for p in t_params:
        p.grad = torch.ones(p.shape)
    with pytest.raises(RuntimeError):
        t_opt.step()


@pytest.mark.parametrize("layout", ["non-contiguous", "channels_last", "expanded-grad"])
@pytest.mark.parametrize(("ours", "theirs", "config"), PAIRS, ids=PAIR_IDS)
def test_strided_params_and_grads_equal_torch(ours, theirs, config, layout):
    gen = torch.Generator().manual_seed(9)
    base = torch.randn(4, 6, 5, 3, generator=gen)
    grads = [torch.randn(base.shape, generator=gen) for _ in range(3)]
    results = []
    for cls in (ours, theirs):
        if layout == "non-contiguous":
            p = torch.nn.Parameter(base.clone().transpose(0, 2))
        elif layout == "channels_last":
            p = torch.nn.Parameter(base.clone().to(memory_format=torch.channels_last))
        else:
            p = torch.nn.Parameter(base.clone())
        opt = cls([p], **config)
        for g in grads:
            if layout == "non-contiguous":
                p.grad = g.transpose(0, 2)
            elif layout == "channels_last":
                p.grad = g.to(memory_format=torch.channels_last)
            else:
                p.grad = g[:1, :1].expand(p.shape)  # stride 0: one element read many times
            opt.step()
        results.append(p.detach())
    torch.testing.assert_close(*results, **FLOAT32)


def test_a_grad_of_another_dtype_gets_torchs_error_and_changes_nothing():
    p = torch.nn.Parameter(torch.randn(5))
    q = torch.nn.Parameter(torch.randn(5))
    opt = adamkit.Adam([p, q], lr=0.1)
    p.grad, q.grad = torch.ones(5), torch.ones(5)
    opt.step()
    q.grad_dtype = None  # torch refuses a grad of another dtype unless told to allow it
    q.grad = torch.ones(5, dtype=torch.float64)
    before = snapshot_params_and_state([p, q], opt)
    t_p = torch.nn.Parameter(q.detach().clone())
    t_opt = torch.optim.Adam([t_p], lr=0.1)
    t_p.grad = torch.ones(5)
    t_opt.step()
    t_p.grad_dtype = None
    t_p.grad = torch.ones(5, dtype=torch.float64)
    with pytest.raises(RuntimeError) as theirs:
        t_opt.step()
    with pytest.raises(RuntimeError) as ours:
        opt.step()
    assert str(ours.value).split("\n")[0] == str(theirs.value).split("\n")[0]
    assert_unchanged([p, q], opt, before)


# ----------------------------------------------------------------- aliasing


@pytest.mark.parametrize(("ours", "theirs", "config"), PAIRS, ids=PAIR_IDS)
def test_the_same_tensor_twice_in_a_group_is_updated_as_torch_does(ours, theirs, config):
    gen = torch.Generator().manual_seed(10)
    base = torch.randn(40_000, generator=gen)
    grads = [torch.randn(40_000, generator=gen) for _ in range(3)]
    results = []
    for cls in (ours, theirs):
        p = torch.nn.Parameter(base.clone())
        q = torch.nn.Parameter(base[:7].clone())
        with pytest.warns(UserWarning, match="duplicate parameters"):
            opt = cls([p, q, p], **config)
        for g in grads:
            p.grad, q.grad = g.clone(), g[:7].clone()
            opt.step()
        results.append((p.detach(), q.detach()))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, **FLOAT32)


@pytest.mark.parametrize(("ours", "theirs", "config"), PAIRS, ids=PAIR_IDS)
def test_a_param_in_two_groups_is_refused_as_torch_refuses_it(ours, theirs, config):
    p = torch.nn.Parameter(torch.randn(3))
    for cls in (theirs, ours):
        with pytest.raises(ValueError, match="more than one parameter group"):
            cls([{"params": [p]}, {"params": [p]}], **config)


@pytest.mark.parametrize(("ours", "theirs", "config"), PAIRS, ids=PAIR_IDS)
def test_a_new_tensor_at_a_freed_address_with_another_size(ours, theirs, config):
    # Cached tables are keyed by sizes and addresses: a new tensor at an old address with
    # another size must not be updated with the old plan (out of bounds, or the wrong tensor).
    gen = torch.Generator().manual_seed(11)
    for n_old, n_new in ((50_000, 20_001), (20_001, 50_000), (3, 70_000)):
        p = torch.nn.Parameter(torch.randn(n_old, generator=gen))
        opt = ours([p], **config)
        p.grad = torch.randn(n_old, generator=gen)
        opt.step()
        del opt, p
        base = torch.randn(n_new, generator=gen)
        grads = [torch.randn(n_new, generator=gen) for _ in range(2)]
        results = []
        for cls in (ours, theirs):
            q = torch.nn.Parameter(base.clone())
            opt = cls([q], **config)
            for g in grads:
                q.grad = g.clone()
                opt.step()
            results.append(q.detach())
            del opt, q
        torch.testing.assert_close(*results, **FLOAT32)


# ----------------------------------------------------------------- many params, long runs


@pytest.mark.parametrize(("ours", "theirs", "config"), PAIRS, ids=PAIR_IDS)
def test_ten_thousand_one_element_params(ours, theirs, config):
    gen = torch.Generator().manual_seed(12)
    base = torch.randn(10_000, generator=gen)
    grads = [torch.randn(10_000, generator=gen) for _ in range(2)]
    results = []
    for cls in (ours, theirs):
        params = [torch.nn.Parameter(base[i : i + 1].clone()) for i in range(10_000)]
        opt = cls(params, **config)
        for g in grads:
            for i, p in enumerate(params):
                p.grad = g[i : i + 1].clone()
            opt.step()
        results.append(torch.cat([p.detach() for p in params]))
    torch.testing.assert_close(*results, **FLOAT32)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
@pytest.mark.parametrize("cls", [adamkit.Adam, adamkit.SGD, adamkit.RMSprop])
def test_rss_stays_flat_over_20000_steps_of_a_small_model(cls):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 8))
    opt = cls(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    for _ in range(2000):  # warm-up: caches, allocator pools
        opt.step()
    start = _rss_bytes()
    for _ in range(20_000):
        opt.step()
    grown = _rss_bytes() - start
    # A leak of even 100 bytes a step would be 2 MB here.
    assert grown < 1_000_000, f"RSS grew by {grown} bytes over 20,000 steps"


@pytest.mark.parametrize(("ours", "theirs", "config"), PAIRS, ids=PAIR_IDS)
def test_params_over_overlapping_memory_are_updated_one_after_another_as_torch(
    ours, theirs, config
):
    # Two params that are overlapping views of one storage: torch updates one, then the other
    # (which then reads the first one's result). Split across threads, the loops would race.
    gen = torch.Generator().manual_seed(13)
    base = torch.randn(60_000, generator=gen)
    grads = [(torch.randn(50_000, generator=gen), torch.randn(50_000, generator=gen))]
    results = []
    for cls in (ours, theirs):
        storage = base.clone()
        first = torch.nn.Parameter(storage[:50_000])
        second = torch.nn.Parameter(storage[10_000:])
        alone = torch.nn.Parameter(base[:7].clone())
        assert first.data_ptr() + 10_000 * 4 == second.data_ptr()  # they overlap
        opt = cls([first, alone, second], **config)
        for g1, g2 in grads * 3:
            first.grad, second.grad, alone.grad = g1.clone(), g2.clone(), g1[:7].clone()
            opt.step()
        results.append((storage, alone.detach()))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, **FLOAT32)
