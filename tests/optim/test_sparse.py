"""Sparse gradients: exact Adam on the densified gradient, or lazy rows as SparseAdam."""

from __future__ import annotations

import pytest
import torch

import adamkit

BATCHES = [[1, 2, 2], [0, 5], [2], [7, 1, 1, 1], [3]]


def _train(make_opt, sparse: bool, dtype=torch.float32):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(8, 3, sparse=sparse).to(dtype)
    opt = make_opt(emb.parameters())
    for rows in BATCHES:
        opt.zero_grad()
        out = emb(torch.tensor(rows))
        (out * torch.arange(1.0, 4.0, dtype=dtype)).pow(2).sum().backward()
        opt.step()
    return emb.weight.detach(), opt.state[emb.weight]


@pytest.mark.parametrize("config", [{}, {"weight_decay": 0.1, "amsgrad": True}, {"maximize": True}])
@pytest.mark.parametrize("kernel", [{"foreach": False}, {"foreach": True}, {}])
def test_exact_mode_equals_adam_on_the_dense_gradient(config, kernel):
    sparse_w, sparse_state = _train(lambda p: adamkit.Adam(p, lr=0.1, **config, **kernel), True)
    dense_w, dense_state = _train(lambda p: adamkit.Adam(p, lr=0.1, **config, **kernel), False)
    assert torch.equal(sparse_w, dense_w)
    for key in dense_state:
        assert torch.equal(sparse_state[key], dense_state[key]), key
    # and rows absent from every batch (4, 6) still moved: their moments decay each step
    torch_w, _ = _train(lambda p: torch.optim.Adam(p, lr=0.1, **config, foreach=False), False)
    torch.testing.assert_close(sparse_w, torch_w, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lazy_mode_equals_torch_sparse_adam(maximize, dtype):
    ours_w, ours_state = _train(
        lambda p: adamkit.Adam(p, lr=0.1, maximize=maximize, lazy_sparse=True), True, dtype
    )
    torch_w, torch_state = _train(
        lambda p: torch.optim.SparseAdam(list(p), lr=0.1, maximize=maximize), True, dtype
    )
    assert torch.equal(ours_w, torch_w)
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.equal(ours_state[key], torch_state[key]), key
    assert ours_state["step"].item() == torch_state["step"]


def test_lazy_mode_touches_only_rows_in_the_gradient():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(6, 2, sparse=True)
    before = emb.weight.detach().clone()
    opt = adamkit.Adam(emb.parameters(), lr=0.1, lazy_sparse=True)
    emb(torch.tensor([1, 4])).sum().backward()
    opt.step()
    untouched = [0, 2, 3, 5]
    assert torch.equal(emb.weight.detach()[untouched], before[untouched])
    assert not torch.equal(emb.weight.detach()[[1, 4]], before[[1, 4]])
    assert torch.count_nonzero(opt.state[emb.weight]["exp_avg"][untouched]) == 0


def test_lazy_mode_takes_dense_gradients_as_plain_adam():
    w_lazy = torch.ones(4, requires_grad=True)
    w_plain = torch.ones(4, requires_grad=True)
    lazy = adamkit.Adam([w_lazy], lazy_sparse=True)
    plain = adamkit.Adam([w_plain])
    for _ in range(3):
        w_lazy.grad = w_plain.grad = torch.tensor([1.0, -2.0, 0.5, 0.0])
        lazy.step()
        plain.step()
    assert torch.equal(w_lazy, w_plain)


def test_lazy_mode_refuses_weight_decay_and_amsgrad():
    w = [torch.zeros(2, requires_grad=True)]
    with pytest.raises(ValueError, match="lazy_sparse=True supports neither weight decay"):
        adamkit.Adam(w, weight_decay=0.1, lazy_sparse=True)
    with pytest.raises(ValueError, match="amsgrad=True"):
        adamkit.AdamW(w, weight_decay=0, amsgrad=True, lazy_sparse=True)
    opt = adamkit.Adam(w, lazy_sparse=True)
    with pytest.raises(ValueError, match="lazy_sparse"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "amsgrad": True})
    assert len(opt.param_groups) == 1
