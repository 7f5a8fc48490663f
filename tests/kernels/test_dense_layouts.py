"""Params in a dense layout other than contiguous (channels_last, a transpose of a contiguous
tensor) with fp32 (torch-format) state: the fused loops walk their memory in memory order when
the param, its gradient and its state share its strides (kernels._batching.dense_strides): an
elementwise step pairs the same elements there. They took torch's for-loop before, 5x torch's
fused step on a channels_last conv weight. The oracle: the same run on contiguous tensors, bit
for bit, and the split taking the tensor (not the for-loop)."""

from __future__ import annotations

import pytest
import torch

import adamkit
from adamkit.kernels import spec_kernels

SPECS = [
    (adamkit.Adam, {"amsgrad": True}),
    (adamkit.AdamW, {}),
    (adamkit.NAdam, {}),
    (adamkit.RAdam, {}),
    (adamkit.Adamax, {}),
    (adamkit.SGD, {"momentum": 0.9, "nesterov": True}),
    (adamkit.RMSprop, {"centered": True, "momentum": 0.5}),
    (adamkit.Lion, {}),
    (adamkit.AdEMAMix, {}),
    (adamkit.ADOPT, {}),
    (adamkit.ScheduleFreeAdamW, {}),
]
IDS = [cls.__name__ + ("-amsgrad" if "amsgrad" in o else "") for cls, o in SPECS]
LAYOUTS = {
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "transposed": lambda t: t.transpose(1, 3).contiguous().transpose(1, 3),
}


@pytest.fixture
def splits(monkeypatch):
    """The indices each step's split sent elsewhere than the loops."""
    others = []
    split = spec_kernels.split

    def recorded(params, roles):
        result = split(params, roles)
        others.append(list(result[1]))
        return result

    monkeypatch.setattr(spec_kernels, "split", recorded)
    return others


def _run(cls, options, layout, dtype=torch.float32, grad_layout=None):
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(6, 10, 4, 3, generator=gen).to(dtype)
    p = torch.nn.Parameter(LAYOUTS[layout](base) if layout else base.clone())
    opt = cls([p], lr=1e-2, **options)
    if hasattr(opt, "train"):
        opt.train()
    for _ in range(4):  # (the later steps replay a step plan)
        g = torch.randn(base.shape, generator=gen).to(dtype)
        lay = grad_layout if grad_layout is not None else layout
        p.grad = LAYOUTS[lay](g) if lay else g
        opt.step()
    return p, opt


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("cls", "options"), SPECS, ids=IDS)
def test_a_dense_layout_steps_in_the_loops_as_the_contiguous_tensor_does(
    cls, options, layout, splits
):
    ours, o_ours = _run(cls, options, layout)
    assert splits and not any(splits)  # every split took the param into the loops
    assert not ours.is_contiguous()
    theirs, o_theirs = _run(cls, options, None)
    assert torch.equal(ours.detach(), theirs.detach())
    for key, value in o_theirs.state[theirs].items():
        assert torch.equal(o_ours.state[ours][key], value), key


@pytest.mark.parametrize("dtype", [torch.complex64, torch.float64], ids=str)
def test_complex_and_float64_dense_layouts_too(dtype, splits):
    ours, _ = _run(adamkit.AdamW, {}, "channels_last", dtype)
    assert not any(splits)
    theirs, _ = _run(adamkit.AdamW, {}, None, dtype)
    assert torch.equal(ours.detach(), theirs.detach())


def test_a_gradient_in_another_layout_takes_the_for_loop_and_gives_torchs_answer(splits):
    ours, _ = _run(adamkit.AdamW, {}, "channels_last", grad_layout="transposed")
    assert all(others == [0] for others in splits)
    gen = torch.Generator().manual_seed(5)
    base = torch.randn(6, 10, 4, 3, generator=gen)
    theirs = torch.nn.Parameter(LAYOUTS["channels_last"](base))
    opt = torch.optim.AdamW([theirs], lr=1e-2, foreach=False)
    for _ in range(4):
        theirs.grad = LAYOUTS["transposed"](torch.randn(base.shape, generator=gen))
        opt.step()
    assert torch.equal(ours.detach(), theirs.detach())


def test_a_plan_notices_a_state_tensor_relaid_and_steps_it_correctly(splits):
    ours, opt = _run(adamkit.AdamW, {}, "channels_last")
    state = opt.state[ours]
    state["exp_avg"] = state["exp_avg"].contiguous()  # same values, another layout
    before = len(splits)
    ours.grad = torch.ones(ours.shape)
    opt.step()
    assert len(splits) == before + 1 and splits[-1] == [0]  # not replayed: the for-loop
    theirs, t_opt = _run(adamkit.AdamW, {}, None)
    theirs.grad = torch.ones(theirs.shape)
    t_opt.step()
    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "views",
    [
        lambda b: [b.t(), b],  # the loops took the transpose, the for-loop the other
        lambda b: [b.t(), b[:, ::2]],
        lambda b: [b, b[:, ::2]],
    ],
    ids=["transpose-and-base", "transpose-and-slice", "base-and-slice"],
)
def test_params_that_are_views_of_one_storage_step_in_torchs_order(views, stepped_views):
    # Found by a review: a dense view went to the loops and another view of the same memory to
    # the for-loop, which ran first: the reverse of torch's order.
    ours = stepped_views(views, lambda ps: adamkit.AdamW(ps, lr=0.1, weight_decay=0.5), 8)
    theirs = stepped_views(
        views, lambda ps: torch.optim.AdamW(ps, lr=0.1, weight_decay=0.5, foreach=False), 8
    )
    assert torch.equal(ours, theirs)
