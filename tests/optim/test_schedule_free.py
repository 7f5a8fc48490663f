"""adamkit.ScheduleFreeAdamW against schedulefree's AdamWScheduleFree (params, state, group
scalars, checkpoints both ways) and its mode rules: train()/eval(), a step in eval mode,
checkpoints taken in either mode, what it refuses."""

from __future__ import annotations

import copy

import pytest
import torch

import adamkit

schedulefree = pytest.importorskip("schedulefree")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

SHAPES = [(5, 3), (17,), (0,), (2, 3, 2), (1,)]
KERNELS = {"forloop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
CONFIGS = [
    {},
    {"weight_decay": 0.1, "warmup_steps": 5},
    {"betas": (0.5, 0.9), "r": 1.0, "weight_lr_power": 0.5, "eps": 1e-4},
]
# schedulefree's add(alpha=) is a fused multiply-add on the CPU; adamkit rounds each product.
TOLERANCE = {torch.float64: dict(rtol=1e-12, atol=1e-14), torch.float32: dict(rtol=1e-5, atol=1e-6)}
GROUP_STATE = ("k", "train_mode", "weight_sum", "lr_max", "scheduled_lr")


def _params(dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in SHAPES]


def _grads(params, t, gen):
    grads = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    if t % 3 == 2:
        grads[1] = None  # a param without a gradient: the group's count still advances
    return grads


def _run(make, params0, n_steps, *, seed=1, switch_every=4, opt=None, start=0):
    """Steps with eval()/train() in between every ``switch_every`` steps (as an evaluation
    would); returns params, optimizer."""
    params = [torch.nn.Parameter(p.clone()) for p in params0]
    opt = make(params) if opt is None else opt
    opt.train()
    gen = torch.Generator().manual_seed(seed)
    for t in range(start, start + n_steps):
        for p, g in zip(params, _grads(params, t, gen), strict=True):
            p.grad = g
        opt.step()
        if t % switch_every == switch_every - 1:
            opt.eval()
            opt.train()
    return params, opt


def _assert_close(ours, o_ours, theirs, o_theirs, dtype):
    tol = TOLERANCE[dtype]
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), **tol)
        for key in ("z", "exp_avg_sq"):
            if key in o_theirs.state[q] or key in o_ours.state[p]:
                torch.testing.assert_close(o_ours.state[p][key], o_theirs.state[q][key], **tol)
    for g, h in zip(o_ours.param_groups, o_theirs.param_groups, strict=True):
        assert g["k"] == h["k"] and g["train_mode"] == h["train_mode"]
        for key in ("weight_sum", "lr_max", "scheduled_lr"):
            assert g[key] == pytest.approx(h[key], rel=1e-15)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_matches_schedulefree(config, kernel, dtype):
    params0 = _params(dtype)
    ours, o_ours = _run(
        lambda ps: adamkit.ScheduleFreeAdamW(ps, lr=0.05, **config, **KERNELS[kernel]), params0, 12
    )
    theirs, o_theirs = _run(
        lambda ps: schedulefree.AdamWScheduleFree(ps, lr=0.05, foreach=False, **config), params0, 12
    )
    _assert_close(ours, o_ours, theirs, o_theirs, dtype)
    o_ours.eval(), o_theirs.eval()  # x, what one evaluates
    _assert_close(ours, o_ours, theirs, o_theirs, dtype)


def test_param_groups_and_state_keys_are_schedulefrees():
    _, o_ours = _run(lambda ps: adamkit.ScheduleFreeAdamW(ps, lr=0.05), _params(torch.float64), 3)
    _, o_theirs = _run(
        lambda ps: schedulefree.AdamWScheduleFree(ps, lr=0.05), _params(torch.float64), 3
    )
    mine, peer = o_ours.state_dict(), o_theirs.state_dict()
    extra = {"maximize"}  # torch's option, which schedulefree lacks
    assert set(mine["param_groups"][0]) == set(peer["param_groups"][0]) | extra
    assert {k: set(v) for k, v in mine["state"].items()} == {
        k: set(v) for k, v in peer["state"].items()
    }


@pytest.mark.parametrize("direction", ["schedulefree->adamkit", "adamkit->schedulefree"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_checkpoints_load_both_ways(direction, mode):
    params0 = _params(torch.float64)
    make_ours = lambda ps: adamkit.ScheduleFreeAdamW(ps, lr=0.05, weight_decay=0.1)  # noqa: E731
    make_theirs = lambda ps: schedulefree.AdamWScheduleFree(ps, lr=0.05, weight_decay=0.1)  # noqa: E731
    first, second = (make_theirs, make_ours) if direction[0] == "s" else (make_ours, make_theirs)
    params, opt = _run(first, params0, 7)
    if mode == "eval":
        opt.eval()
    saved_params = [p.detach().clone() for p in params]
    saved = copy.deepcopy(opt.state_dict())
    # the uninterrupted run of the second, and the second resumed from the first's checkpoint
    expected, o_expected = _run(second, params0, 7)
    if mode == "eval":
        o_expected.eval()
    resumed = [torch.nn.Parameter(p.clone()) for p in saved_params]
    o_resumed = second(resumed)
    o_resumed.load_state_dict(saved)
    assert all(g["train_mode"] == (mode == "train") for g in o_resumed.param_groups)
    for o, ps in ((o_expected, expected), (o_resumed, resumed)):
        o.train()
        gen = torch.Generator().manual_seed(9)
        for t in range(5):
            for p, g in zip(ps, _grads(ps, t, gen), strict=True):
                p.grad = g
            o.step()
    _assert_close(resumed, o_resumed, expected, o_expected, torch.float64)


def test_checkpoint_in_eval_mode_resumes_exactly():
    # Evaluate at step 6, save model (x) and optimizer, load both into new objects, train on:
    # the same bits as the run that went on without saving.
    params0 = _params(torch.float32)
    make = lambda ps: adamkit.ScheduleFreeAdamW(ps, lr=0.05, warmup_steps=3)  # noqa: E731
    expected, _ = _run(make, params0, 12, switch_every=6)  # evaluates after steps 6 and 12
    params, opt = _run(make, params0, 6, switch_every=100)
    opt.eval()
    model, saved = [p.detach().clone() for p in params], copy.deepcopy(opt.state_dict())
    resumed = [torch.nn.Parameter(p) for p in model]
    o_resumed = adamkit.ScheduleFreeAdamW(resumed, lr=0.05, warmup_steps=3)
    o_resumed.load_state_dict(saved)
    assert not o_resumed.param_groups[0]["train_mode"]
    o_resumed.train()
    gen = torch.Generator().manual_seed(1)
    for t in range(12):
        grads = _grads(resumed, t, gen)  # the same draws as _run's
        if t < 6:
            continue
        for p, g in zip(resumed, grads, strict=True):
            p.grad = g
        o_resumed.step()
    o_resumed.eval()  # the evaluation after step 12
    o_resumed.train()
    for p, q in zip(resumed, expected, strict=True):
        assert torch.equal(p, q)


def test_step_in_eval_mode_raises_and_changes_nothing():
    w = torch.nn.Parameter(torch.ones(3))
    opt = adamkit.ScheduleFreeAdamW([w], lr=0.1)
    w.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match=r"needs train mode: call optimizer\.train\(\)"):
        opt.step()
    assert torch.equal(w, torch.ones(3)) and not opt.state and opt.param_groups[0]["k"] == 0
    opt.train()
    opt.step()
    assert opt.param_groups[0]["k"] == 1 and torch.equal(w.grad, torch.ones(3))  # grad untouched


def test_eval_and_train_are_inverse_and_noops_twice():
    params, opt = _run(lambda ps: adamkit.ScheduleFreeAdamW(ps, lr=0.05), _params(torch.float64), 5)
    y = [p.detach().clone() for p in params]
    opt.eval()
    x = [p.detach().clone() for p in params]
    opt.eval()  # already in eval mode: nothing moves
    assert all(torch.equal(p, q) for p, q in zip(params, x, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(x, y, strict=True))
    opt.train()
    for p, q in zip(params, y, strict=True):
        torch.testing.assert_close(p.detach(), q, rtol=1e-14, atol=1e-14)


def test_eval_with_beta1_zero_after_a_step_is_refused_before_anything_moves():
    w = torch.nn.Parameter(torch.ones(3))
    opt = adamkit.ScheduleFreeAdamW([w], lr=0.1, betas=(0.0, 0.999))
    opt.eval()  # no z yet: nothing to move
    opt.train()
    w.grad = torch.ones(3)
    opt.step()
    before = w.detach().clone()
    with pytest.raises(ValueError, match=r"betas\[0\] = 0"):
        opt.eval()
    assert torch.equal(w, before) and opt.param_groups[0]["train_mode"]


def test_8bit_state_is_refused_everywhere_it_can_be_asked_for():
    w = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="state_precision='8bit' is not supported"):
        adamkit.ScheduleFreeAdamW([w], state_precision="8bit")
    with pytest.raises(ValueError, match="state_precision='8bit' is not supported"):
        adamkit.ScheduleFreeAdamW([{"params": [w], "state_precision": "8bit"}])
    opt = adamkit.ScheduleFreeAdamW([w])
    with pytest.raises(ValueError, match="state_precision='8bit' is not supported"):
        opt.state_precision = "8bit"
    assert opt.state_precision == "fp32"


def test_bf16_state_follows_fp32_state():
    params0 = _params(torch.float32)
    fp32, _ = _run(lambda ps: adamkit.ScheduleFreeAdamW(ps, lr=0.05), params0, 10)
    bf16, o_bf16 = _run(
        lambda ps: adamkit.ScheduleFreeAdamW(ps, lr=0.05, state_precision="bf16"), params0, 10
    )
    assert o_bf16.state[bf16[0]]["z"].dtype == torch.bfloat16
    for p, q in zip(bf16, fp32, strict=True):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=2e-2, atol=2e-2)


def test_a_group_added_later_joins_the_current_mode():
    w, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = adamkit.ScheduleFreeAdamW([w], lr=0.1)
    opt.train()
    opt.add_param_group({"params": [b]})
    assert opt.param_groups[1]["train_mode"] and opt.param_groups[1]["k"] == 0
    w.grad, b.grad = torch.ones(3), torch.ones(2)
    opt.step()
    opt.eval()
    assert not opt.param_groups[1]["train_mode"]


def test_a_skipped_step_leaves_the_group_scalars_alone():
    w = torch.nn.Parameter(torch.ones(3))
    opt = adamkit.ScheduleFreeAdamW([w], lr=0.1, on_nonfinite="skip")
    opt.train()
    w.grad = torch.ones(3)
    opt.step()
    group = dict(opt.param_groups[0])
    w.grad = torch.tensor([1.0, float("nan"), 1.0])
    opt.step()
    assert {k: opt.param_groups[0][k] for k in GROUP_STATE} == {k: group[k] for k in GROUP_STATE}


def test_a_refused_step_leaves_the_group_scalars_alone():
    # A state tensor of the wrong size is refused before any kernel runs ("nothing was
    # updated"): the group's count and average must not have moved either.
    w = torch.nn.Parameter(torch.ones(3))
    opt = adamkit.ScheduleFreeAdamW([w], lr=0.1)
    opt.train()
    w.grad = torch.ones(3)
    opt.step()
    group = {k: opt.param_groups[0][k] for k in GROUP_STATE}
    opt.state[w]["exp_avg_sq"] = torch.zeros(5)
    with pytest.raises(RuntimeError, match="nothing was updated"):
        opt.step()
    assert {k: opt.param_groups[0][k] for k in GROUP_STATE} == group


def test_a_switch_with_a_mismatched_z_moves_nothing():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))
    opt = adamkit.ScheduleFreeAdamW([a, b], lr=0.1)
    opt.train()
    a.grad, b.grad = torch.ones(3), torch.ones(2)
    opt.step()
    opt.state[b]["z"] = torch.zeros(4)
    before = [a.detach().clone(), b.detach().clone()]
    with pytest.raises(ValueError, match="nothing was moved"):
        opt.eval()
    assert torch.equal(a, before[0]) and torch.equal(b, before[1])
    assert opt.param_groups[0]["train_mode"]


def test_a_stepped_checkpoint_without_group_state_is_refused():
    w = torch.nn.Parameter(torch.ones(3))
    opt = adamkit.ScheduleFreeAdamW([w], lr=0.1)
    opt.train()
    w.grad = torch.ones(3)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    for key in ("k", "weight_sum"):
        del saved["param_groups"][0][key]
    fresh = adamkit.ScheduleFreeAdamW([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    with pytest.raises(adamkit.StateDictError, match=r"has no \['k', 'weight_sum'\]"):
        fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["k"] == 0 and not fresh.state
    # a checkpoint taken before any step has no state to go with: the defaults are right
    unstepped = adamkit.ScheduleFreeAdamW([torch.nn.Parameter(torch.ones(3))]).state_dict()
    del unstepped["param_groups"][0]["k"]
    fresh.load_state_dict(unstepped)
    assert fresh.param_groups[0]["k"] == 0


def test_compiled_step_runs_eagerly_with_the_same_numbers():
    params0 = _params(torch.float32)
    make = lambda ps: adamkit.ScheduleFreeAdamW(ps, lr=0.05, warmup_steps=2)  # noqa: E731
    eager, _ = _run(make, params0, 6)
    torch._dynamo.reset()
    params = [torch.nn.Parameter(p.clone()) for p in params0]
    opt = make(params)
    opt.train()
    step = torch.compile(opt.step)
    gen = torch.Generator().manual_seed(1)
    for t in range(6):
        for p, g in zip(params, _grads(params, t, gen), strict=True):
            p.grad = g
        step()
        if t % 4 == 3:
            opt.eval()
            opt.train()
    assert opt.param_groups[0]["k"] == 6
    for p, q in zip(params, eager, strict=True):
        assert torch.equal(p, q)


def test_a_value_written_into_the_group_between_steps_is_still_checked():
    # The optimizer's own advance of the group state is not a change to validate, but a user's
    # write between steps still is.
    w = torch.nn.Parameter(torch.ones(3))
    opt = adamkit.ScheduleFreeAdamW([w], lr=0.1)
    opt.train()
    for _ in range(2):
        w.grad = torch.ones(3)
        opt.step()
    opt.param_groups[0]["eps"] = -1.0
    w.grad = torch.ones(3)
    with pytest.raises(ValueError, match="eps"):
        opt.step()
