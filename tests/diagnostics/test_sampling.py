"""The snapshot's sample: the numba gather reads exactly the elements the torch views do."""

from __future__ import annotations

import pytest
import torch

from adamkit.diagnostics import _sampling
from adamkit.diagnostics.elementwise import _flat
from adamkit.kernels._tensors import real_view


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64])
@pytest.mark.parametrize("max_elements", [10, 3000, 10**7])
def test_numba_gather_equals_the_torch_views(dtype, max_elements):
    gen = torch.Generator().manual_seed(2)
    shapes = [(300, 41), (0,), (7,), (5000,), (3, 3)]
    tensors = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    plan = _sampling.sample([real_view(t).numel() for t in tensors], max_elements)
    got = _sampling.gather_cpu(tensors, plan)
    flats = [_flat(t, share) for t, share in zip(tensors, plan.shares, strict=True)]
    want = torch.cat(flats).double()
    assert got is not None and got.dtype == torch.float64
    assert torch.equal(got, want)
    assert len(got) == sum(plan.lengths)


def test_tensors_the_loop_cannot_read_are_left_to_torch():
    plan = _sampling.sample([20, 20], 10)
    contiguous = torch.zeros(20)
    for other in (torch.zeros(40)[::2], torch.zeros(20, dtype=torch.float16), torch.zeros(21)):
        assert _sampling.gather_cpu([contiguous, other], plan) is None
    assert _sampling.gather_cpu([contiguous, torch.zeros(20, dtype=torch.float64)], plan) is None
