"""The fused CPU kernel's reused split (adamkit.kernels._batching.split): after anything that
can change under unchanged tensor objects, it gives what a split from scratch gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import adamkit
from adamkit.kernels import _batching as B


def _tensors(n=4, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(6, 6), (5,), (0,), (3, 4)][:n]
    params = [torch.nn.Parameter(torch.randn(s, generator=gen, dtype=dtype)) for s in shapes]
    grads = [torch.randn(s, generator=gen, dtype=dtype) for s in shapes]
    m = [torch.zeros(s, dtype=dtype) for s in shapes]
    v = [torch.zeros(s, dtype=dtype) for s in shapes]
    steps = [torch.zeros((), dtype=torch.float64) for _ in shapes]
    return params, grads, m, v, steps


def _roles(grads, m, v, steps):
    return [
        (grads, B.READ_ONLY), (m, B.LIKE_PARAM), (v, B.LIKE_PARAM), (None, B.LIKE_PARAM),
        (steps, B.COUNTER), (steps, B.COUNTER),
    ]  # fmt: skip


def _assert_same(got, expected):
    got_batches, got_other, got_empty = got
    batches, other, empty = expected
    assert (got_other, got_empty) == (other, empty)
    assert got_batches.keys() == batches.keys()
    for dtype, batch in batches.items():
        assert got_batches[dtype].idx == batch.idx
        assert got_batches[dtype].numels == batch.numels
        np.testing.assert_array_equal(got_batches[dtype].addresses(), batch.addresses())


def _check(params, roles, reused: bool):
    expected = B._split(params, roles)
    key = (tuple(map(id, params)), *(B._role_ids(ts, kind) for ts, kind in roles))
    cached = B._SPLITS.peek(key)
    got = B.split(params, roles)
    _assert_same(got, expected)
    if reused:
        assert cached is not None and cached.reuse(params, roles) is not None
    return got


def _swap(t: torch.Tensor, new: torch.Tensor) -> None:
    with torch.no_grad():
        t.data = new


MUTATIONS = {
    # what changes under the same tensor objects, and whether the split may still be reused
    "new gradient objects": (lambda ps, gs, m, v: gs.__setitem__(0, gs[0].clone()), True),
    "non-contiguous gradient": (lambda ps, gs, m, v: gs.__setitem__(0, gs[0].t()), False),
    "float64 gradient": (lambda ps, gs, m, v: gs.__setitem__(1, gs[1].double()), False),
    "gradient of another shape": (lambda ps, gs, m, v: gs.__setitem__(0, gs[0].reshape(4, 9)), False),
    "param replaced, same shape": (lambda ps, gs, m, v: _swap(ps[1], ps[1].detach().clone()), False),
    "param transposed in place": (lambda ps, gs, m, v: _swap(ps[0], ps[0].data.t()), False),
    "param reshaped, same memory": (lambda ps, gs, m, v: _swap(ps[0], ps[0].data.view(4, 9)), False),
    "param of another dtype, same memory": (
        lambda ps, gs, m, v: _swap(ps[1], ps[1].data.view(torch.float16)[:5]), False
    ),
    "empty param given elements": (lambda ps, gs, m, v: _swap(ps[2], torch.ones(3)), False),
    "empty param swapped for another": (lambda ps, gs, m, v: _swap(ps[2], torch.ones(0)), True),
    "state tensor's memory replaced": (lambda ps, gs, m, v: _swap(m[3], m[3].clone()), False),
    "state tensor replaced": (lambda ps, gs, m, v: m.__setitem__(3, m[3].clone()), False),
    # in place, at the same address: the loops would write past the memory left
    "state tensor resized in place": (lambda ps, gs, m, v: m[3].resize_(2, 2), False),
    "state tensor set_ to a stride-0 view": (
        lambda ps, gs, m, v: m[1].set_(m[1].untyped_storage(), 0, (5,), (0,)), False
    ),
    "param with a negative bit at its address": (
        lambda ps, gs, m, v: _swap(ps[1], torch._neg_view(ps[1].data)), False
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", MUTATIONS)
def test_reused_split_equals_a_split_from_scratch(name):
    params, grads, m, v, steps = _tensors()
    _check(params, _roles(grads, m, v, steps), reused=False)  # made
    _check(params, _roles(grads, m, v, steps), reused=True)  # reused as it is
    mutate, still_reusable = MUTATIONS[name]
    mutate(params, grads, m, v)
    _check(params, _roles(grads, m, v, steps), reused=still_reusable)


def test_a_param_sent_to_the_for_loop_once_gets_the_loops_back():
    params, grads, m, v, steps = _tensors()
    _check(params, _roles(grads, m, v, steps), reused=False)
    grads[0] = grads[0].t()  # one non-contiguous gradient: the for-loop for that step
    assert B.split(params, _roles(grads, m, v, steps))[1] == [0]
    grads[0] = grads[0].t().contiguous()
    assert B.split(params, _roles(grads, m, v, steps))[1] == []
    _check(params, _roles(grads, m, v, steps), reused=True)


def test_the_cache_keeps_no_tensor_alive():
    # Gradients are not part of what it keeps, and a split leaves the cache when one of its
    # params or state tensors is collected (nothing of a deleted model stays alive).
    import gc
    import weakref

    params, grads, m, v, steps = _tensors()
    B.split(params, _roles(grads, m, v, steps))
    first_grad, param, moment = weakref.ref(grads[0]), weakref.ref(params[0]), weakref.ref(m[0])
    grads[0] = grads[0].clone()
    B.split(params, _roles(grads, m, v, steps))
    key = (
        tuple(map(id, params)),
        *(B._role_ids(ts, kind) for ts, kind in _roles(grads, m, v, steps)),
    )
    assert B._SPLITS.peek(key) is not None
    del params, grads, m, v, steps
    gc.collect()
    assert first_grad() is None and param() is None and moment() is None
    B.split([], [])  # drops the splits noted dead
    assert B._SPLITS.peek(key) is None


def test_complex_param_conjugated_in_place_leaves_the_loops():
    params = [torch.nn.Parameter(torch.randn(8, dtype=torch.complex64)) for _ in range(2)]
    grads = [torch.randn(8, dtype=torch.complex64) for _ in params]
    m, v = ([torch.zeros(8, dtype=torch.complex64) for _ in params] for _ in range(2))
    steps = [torch.zeros((), dtype=torch.float64) for _ in params]
    roles = _roles(grads, m, v, steps)
    _check(params, roles, reused=False)
    _swap(params[0], params[0].data.conj())  # same memory, a lazy conjugate bit
    _, other, _ = _check(params, roles, reused=False)
    assert other == [0]


def test_training_with_replaced_params_matches_a_fresh_optimizer_each_step():
    # End to end: params swapped for other tensors mid-run step as a new optimizer would.
    gen = torch.Generator().manual_seed(1)
    w = [torch.nn.Parameter(torch.randn(33, generator=gen)) for _ in range(3)]
    w_loop = [torch.nn.Parameter(p.detach().clone()) for p in w]
    opt = adamkit.Adam(w, lr=0.1)
    loop = adamkit.Adam(w_loop, lr=0.1, foreach=False)
    for step in range(6):
        if step == 3:  # same shape, new memory
            for a, b in zip(w, w_loop, strict=True):
                _swap(a, a.detach().clone() * 0.5)
                _swap(b, b.detach().clone() * 0.5)
        g = [torch.randn(33, generator=gen) for _ in w]
        for p, q, gi in zip(w, w_loop, g, strict=True):
            p.grad, q.grad = gi.clone(), gi.clone()
        opt.step()
        loop.step()
        for p, q in zip(w, w_loop, strict=True):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7)
