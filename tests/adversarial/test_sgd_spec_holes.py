"""Holes a review found in SGD on its spec: sparse gradients of half-precision params, and
checkpoints of low-memory SGD (a group mixing formats; torch's format in and out)."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import adamkit


@pytest.mark.parametrize("foreach", [None, True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_sparse_gradients_with_momentum(dtype, foreach):
    results = []
    for cls in (adamkit.SGD, torch.optim.SGD):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(10, 3, sparse=True)
        emb = emb.float() if cls is torch.optim.SGD else emb.to(dtype)
        opt = cls(emb.parameters(), lr=0.1, momentum=0.9, foreach=foreach)
        for _ in range(3):
            opt.zero_grad()
            emb(torch.tensor([1, 2, 2])).sum().backward()
            opt.step()
        results.append(emb.weight.detach().float())
        if cls is adamkit.SGD:
            assert opt.state[emb.weight]["momentum_buffer"].is_sparse  # as torch's
    # float32 math on half params, rounded once per step: within the half dtype's resolution
    torch.testing.assert_close(results[0], results[1], rtol=2e-2, atol=2e-2)


def _trained_sgd(**options):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(10)), torch.nn.Parameter(torch.randn(8192))]
    opt = adamkit.SGD(params, lr=0.1, momentum=0.9, **options)
    for _ in range(2):
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    return params, opt


@pytest.mark.parametrize(
    "options",
    [{"state_precision": "8bit"}, {"state_precision": "bf16"}, {"param_rounding": "stochastic"}],
)
def test_low_memory_sgd_reloads_its_checkpoint_and_resumes_exactly(options):
    # One group, two formats: the small param keeps torch's buffer (no count), the large one
    # a low-memory buffer with its count.
    params, opt = _trained_sgd(**options)
    buffer = io.BytesIO()  # a checkpoint on disk: no tensor shared with the live optimizer
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    twin_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    twin = adamkit.SGD(twin_params, lr=0.1, momentum=0.9, **options)
    twin.load_state_dict(saved)
    for _ in range(2):
        grads = [torch.randn_like(p) for p in params]
        for ps, o in ((params, opt), (twin_params, twin)):
            for p, g in zip(ps, grads, strict=True):
                p.grad = g.clone()
            o.step()
    for a, b in zip(params, twin_params, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("precision", ["bf16", "8bit"])
def test_torch_sgd_checkpoint_loads_into_low_memory_sgd_and_back(precision):
    torch.manual_seed(1)
    p_torch = torch.nn.Parameter(torch.randn(8192))
    p_ours = torch.nn.Parameter(p_torch.detach().clone())
    theirs = torch.optim.SGD([p_torch], lr=0.1, momentum=0.9)
    for _ in range(2):
        p_torch.grad = torch.randn(8192)
        theirs.step()
    ours = adamkit.SGD([p_ours], lr=0.1, momentum=0.9, state_precision=precision)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    p_ours.data.copy_(p_torch.detach())
    g = torch.randn(8192)
    p_torch.grad, p_ours.grad = g.clone(), g.clone()
    theirs.step()
    ours.step()  # the loaded buffer goes on (not restarted as g): close to torch's step
    torch.testing.assert_close(p_ours.detach(), p_torch.detach(), rtol=0, atol=0.02)
    assert ours.state[p_ours]["step"].item() == 2  # the count low-memory state keeps
    # and back: a plain adamkit SGD and torch's SGD take adamkit's low-memory checkpoint as
    # its float32 values
    plain = adamkit.SGD([p_ours], lr=0.1, momentum=0.9)
    plain.load_state_dict(adamkit.optim.dequantized_state_dict(ours.state_dict()))
    torch.optim.SGD([p_ours], lr=0.1, momentum=0.9).load_state_dict(
        adamkit.optim.dequantized_state_dict(ours.state_dict())
    )
    p_ours.grad = torch.randn(8192)
    plain.step()
    assert plain.state[p_ours]["momentum_buffer"].dtype == torch.float32
