"""Fixtures of the kernel tests."""

from __future__ import annotations

import pytest
import torch

from adamkit.algorithms import _torch_ops
from adamkit.algorithms._spec import recompiled
from adamkit.kernels import _whole_tensor


def _lerp(start, end, weight, one_minus_weight):
    diff = end - start  # as adamkit.kernels._numba_cpu._lerp: two roundings, no FMA
    return start + weight * diff if weight < 0.5 else end - diff * one_minus_weight


def _sqrt(x):
    return torch.as_tensor(x).double().sqrt().float()  # correctly rounded, as LLVM's


_NUMBA_ORDER = {**_torch_ops.OPS, "lerp": _lerp, "sqrt": _sqrt}


@pytest.fixture
def torch_ops_in_numba_order(monkeypatch):
    """The torch-ops path (lowbit_torch) evaluating lerp and √ as the numba kernel does (each
    operation rounded once: torch's lerp is one FMA, its vectorized float32 √ can be an ulp
    off): then the two paths give the same bits."""
    monkeypatch.setattr(
        _whole_tensor,
        "_compiled",
        lambda function: recompiled(function, _NUMBA_ORDER, helpers=lambda helper: helper),
    )


@pytest.fixture
def stepped_views():
    """``run(views, make, n)``: the storage of an n×n base after three steps of the optimizer
    ``make(params)`` over params that are ``views(base)`` of it (views of one storage)."""

    def run(views, make, n):
        gen = torch.Generator().manual_seed(0)
        base = torch.randn(n, n, generator=gen)
        params = [torch.nn.Parameter(v) for v in views(base)]
        opt = make(params)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen)
            opt.step()
        return base

    return run
