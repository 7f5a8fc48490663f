"""Low-memory state on params that are not contiguous (channels_last, a transpose, a slice):
the fused kernel steps contiguous copies of what is not contiguous and writes them back
(lowbit._through_contiguous_copies), instead of the torch-ops path at ~100x the time. It reads
elements, 8-bit blocks and random draws in logical order, as the torch-ops path does: the
oracle is that path (``fused=False``), bit for bit."""

from __future__ import annotations

import pytest
import torch

import adamkit
from adamkit.kernels import lowbit

LAYOUTS = ["channels_last", "transposed", "sliced", "grad-only-strided"]
CASES = [  # (state_precision, param dtype, param_rounding)
    ("bf16", torch.float32, "nearest"),
    ("8bit", torch.float32, "nearest"),
    ("8bit", torch.bfloat16, "stochastic"),
    ("fp32", torch.bfloat16, "kahan"),
    ("bf16", torch.float16, "kahan"),
]
CASE_IDS = [f"{p}-{str(d).removeprefix('torch.')}-{r}" for p, d, r in CASES]
CLASSES = [(adamkit.AdamW, {}), (adamkit.AdEMAMix, {}), (adamkit.Lion, {}),
           (adamkit.StableAdamW, {"lr": 1e-3})]  # fmt: skip


def _laid_out(t: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "transposed":
        return t.transpose(0, 3)
    if layout == "sliced":
        return t[:, :, :, 1:]
    return t.clone()


def _run(cls, options, layout, precision, dtype, rounding, fused):
    gen = torch.Generator().manual_seed(3)
    base = torch.randn(24, 20, 6, 7, generator=gen)  # 20,160 elements: 79 blocks of 256
    p = torch.nn.Parameter(_laid_out(base.clone(), layout).to(dtype))
    opt = cls([p], **{"lr": 1e-2, **options}, state_precision=precision,
              param_rounding=rounding, min_8bit_size=0, fused=fused)  # fmt: skip
    for _ in range(3):
        g = torch.randn(base.shape, generator=gen)
        if layout == "grad-only-strided":
            g = g.transpose(0, 3).contiguous().transpose(0, 3)
        else:
            g = _laid_out(g, layout)
        p.grad = (g if layout != "sliced" else g[..., : p.shape[-1]]).to(dtype)
        opt.step()
    return p, opt


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("precision", "dtype", "rounding"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize(("cls", "options"), CLASSES, ids=[c.__name__ for c, _ in CLASSES])
def test_strided_params_take_the_fused_kernel_with_the_torch_ops_paths_bits(
    cls, options, layout, precision, dtype, rounding, torch_ops_in_numba_order, monkeypatch
):
    if precision == "8bit" and cls is adamkit.Lion and dtype != torch.float32:
        pytest.skip("(the same cell as float32's: one row is enough)")
    ours, o_ours = _run(cls, options, layout, precision, dtype, rounding, fused=True)
    calls = []
    step_tensor = lowbit.step_tensor
    monkeypatch.setattr(
        lowbit, "step_tensor", lambda *a, **k: calls.append(1) or step_tensor(*a, **k)
    )
    ours, o_ours = _run(cls, options, layout, precision, dtype, rounding, fused=True)
    assert not calls  # the fused kernel took it
    theirs, o_theirs = _run(cls, options, layout, precision, dtype, rounding, fused=False)
    assert calls  # (the oracle: the torch-ops path)
    assert ours.stride() == theirs.stride()
    assert torch.equal(ours.detach(), theirs.detach())
    assert o_ours.state[ours].keys() == o_theirs.state[theirs].keys()
    for key, value in o_theirs.state[theirs].items():
        assert torch.equal(o_ours.state[ours][key], value), key
        assert o_ours.state[ours][key].stride() == value.stride(), key


@pytest.mark.parametrize("views", [lambda b: [b.t(), b], lambda b: [b[:, ::2], b]],
                         ids=["transpose-and-base", "slice-and-base"])  # fmt: skip
@pytest.mark.parametrize("precision", ["bf16", "8bit"])
def test_params_that_are_views_of_one_storage_step_in_order(
    views, precision, torch_ops_in_numba_order, stepped_views
):
    # The fused kernel ran first on what it took, then the rest: the reverse of torch's order
    # for views of one storage (found by a review; it predates the copies).
    results = [
        stepped_views(
            views,
            lambda ps, fused=fused: adamkit.AdamW(
                ps, lr=0.1, weight_decay=0.5, state_precision=precision, min_8bit_size=0,
                fused=fused,
            ),
            64,
        )
        for fused in (True, False)
    ]  # fmt: skip
    assert torch.equal(*results)
