"""A group's replayed fused step (adamkit.optim._step_plan) against the full path: after each
change a training loop or a user can make between steps, an optimizer that replays its plan
ends bit for bit where a twin that never keeps one does."""

from __future__ import annotations

import copy
import io

import pytest
import torch

import adamkit
from adamkit.kernels import lowbit_replay, spec_kernels


def _twins(cls, **options):
    gen = torch.Generator().manual_seed(0)
    shapes = [(7, 5), (33,), (1,), (4, 4)]
    init = [torch.randn(s, generator=gen) for s in shapes]
    made = []
    for _ in range(2):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        made.append((params, cls(params, **options)))
    return made


def _step_both(twins, gen):
    """One step of each twin with the same gradients; an error must be the same in both."""
    (params, planned), (twin_params, twin) = twins
    grads = [torch.randn(p.shape, generator=gen).to(p.dtype) for p in params]
    for p, q, g in zip(params, twin_params, grads, strict=True):
        p.grad, q.grad = g.clone(), g.clone()
    errors = []
    for opt in (planned, twin):
        if opt is twin:
            twin.__dict__.pop("_step_plans", None)  # the twin never replays
        try:
            opt.step()
            errors.append(None)
        except Exception as error:  # e.g. amsgrad switched on mid-run: torch's KeyError too
            errors.append((type(error), str(error)))
    assert errors[0] == errors[1]


def _equal(a, b):
    """Bit for bit, NaN where NaN (a param reinterpreted in another dtype holds NaN bits)."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def _assert_same(twins):
    (params, planned), (twin_params, twin) = twins
    for p, q in zip(params, twin_params, strict=True):
        _equal(p.detach(), q.detach())
    for p, q in zip(params, twin_params, strict=True):
        a, b = planned.state.get(p, {}), twin.state.get(q, {})
        assert a.keys() == b.keys()
        for key in a:
            _equal(a[key], b[key])


def _swap_data(params, i, new):
    with torch.no_grad():
        params[i].data = new


def _reload(params, opt):
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    opt.load_state_dict(torch.load(buffer, weights_only=True))


CHANGES = {
    "nothing": lambda params, opt: None,
    "lr as a scheduler sets it": lambda params, opt: opt.param_groups[0].update(lr=0.05),
    "betas": lambda params, opt: opt.param_groups[0].update(betas=(0.5, 0.9)),
    "weight decay": lambda params, opt: opt.param_groups[0].update(weight_decay=0.3),
    "maximize": lambda params, opt: opt.param_groups[0].update(maximize=True),
    "amsgrad switched on": lambda params, opt: opt.param_groups[0].update(amsgrad=True),
    "a param's memory replaced": lambda params, opt: _swap_data(params, 1, params[1] * 0.5),
    "a param cast to float64": lambda params, opt: _swap_data(params, 2, params[2].double()),
    "a param transposed in place": lambda params, opt: _swap_data(params, 3, params[3].data.t()),
    # the same address, another dtype (as the allocator may hand out a freed param's memory)
    "a param of another dtype at its address": lambda params, opt: _swap_data(
        params, 1, params[1].data.view(torch.float16)[:33]
    ),
    "lr as an equal float32 tensor": lambda params, opt: opt.param_groups[0].update(
        lr=torch.tensor(0.01)
    ),
    "state reloaded": _reload,
    "state dropped": lambda params, opt: opt.state.pop(params[0]),
    "bf16 state from now on": lambda params, opt: setattr(opt, "state_precision", "bf16"),
    "a state tensor replaced": lambda params, opt: opt.state[params[1]].update(
        exp_avg=opt.state[params[1]]["exp_avg"].clone()
    ),
    "a param group added": lambda params, opt: opt.add_param_group(
        {"params": [torch.nn.Parameter(torch.ones(3))]}
    ),
    "fused=False": lambda params, opt: opt.param_groups[0].update(fused=False),
    "8-bit state from now on": lambda params, opt: setattr(opt, "state_precision", "8bit"),
    "fp32 state from now on": lambda params, opt: setattr(opt, "state_precision", "fp32"),
    "min_8bit_size raised": lambda params, opt: setattr(opt, "min_8bit_size", 34),
    "an absmax tensor replaced": lambda params, opt: _replace_first(
        opt.state[params[0]], "exp_avg_absmax"
    ),
    "a param cast to bfloat16": lambda params, opt: _swap_data(params, 0, params[0].bfloat16()),
    "a group inserted before": lambda params, opt: opt.param_groups.insert(
        0, {**opt.param_groups[0], "params": [torch.nn.Parameter(torch.ones(3))]}
    ),
    # the group's values are other objects than at the last replay, or its keys others
    "eps as an equal float": lambda params, opt: opt.param_groups[0].update(
        eps=float(str(opt.param_groups[0]["eps"]))
    ),
    "a key of the user's added": lambda params, opt: opt.param_groups[0].update(note="warmup"),
    "a flag key removed": lambda params, opt: opt.param_groups[0].pop("differentiable"),
    "betas as a list": lambda params, opt: opt.param_groups[0].update(betas=[0.8, 0.99]),
}


def _replace_first(state, key):
    if key in state:
        state[key] = state[key].clone()


# fp32 state; bf16 state; 8-bit state on the two larger params beside fp32 on the others
# (one plan replays both kernels' calls)
LOW_MEMORY = {
    "fp32": {},
    "bf16": {"state_precision": "bf16"},
    "8bit": {"state_precision": "8bit", "min_8bit_size": 20},
}


@pytest.mark.parametrize("state", LOW_MEMORY)
@pytest.mark.parametrize("change", CHANGES)
def test_a_change_between_steps_steps_as_the_full_path(change, state):
    twins = _twins(adamkit.Adam, lr=0.01, **LOW_MEMORY[state])
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):  # the first step keeps a plan, the next replay it
        _step_both(twins, gen)
    assert twins[0][1]._step_plans, "no plan was kept"
    for params, opt in twins:
        CHANGES[change](params, opt)
        for p in opt.param_groups[-1]["params"]:  # a group added has grads too
            if not any(p is q for q in params):
                p.grad = torch.ones_like(p)
    for _ in range(3):
        _step_both(twins, gen)
    _assert_same(twins)


@pytest.mark.parametrize("state", LOW_MEMORY)
def test_the_plan_is_what_runs_once_kept(monkeypatch, state):
    (params, opt), _ = _twins(adamkit.Adam, **LOW_MEMORY[state])
    runs = []
    replay = lowbit_replay.LowMemoryReplay if state != "fp32" else spec_kernels.Replay
    original = replay.run
    monkeypatch.setattr(
        replay, "run", lambda self, *a, **k: runs.append(1) or original(self, *a, **k)
    )
    collects = []
    original_collect = type(opt)._collect
    monkeypatch.setattr(
        type(opt), "_collect", lambda self, g: collects.append(1) or original_collect(self, g)
    )
    for _ in range(5):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    # one full step, then four replays (the low-memory kernel's first call runs it too)
    assert (len(collects), len(runs)) == (1, 4 + (state != "fp32"))


def test_a_missing_gradient_takes_the_full_path():
    twins = _twins(adamkit.AdamW)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        _step_both(twins, gen)
    for params, opt in twins:
        opt.zero_grad()
        params[0].grad = torch.ones_like(params[0])
        opt.step()  # only params[0] moves
    _assert_same(twins)


@pytest.mark.parametrize(
    ("cls", "options"),
    [(adamkit.SGD, {"momentum": 0.9, "lr": 0.1}), (adamkit.SGD, {"lr": 0.1}),
     (adamkit.Lion, {"lr": 0.01}),
     (adamkit.NAdam, {}), (adamkit.RMSprop, {"centered": True}),
     (adamkit.RAdam, {"state_precision": "8bit", "min_8bit_size": 0}),
     (adamkit.Adamax, {"state_precision": "bf16"}),
     (adamkit.ADOPT, {"state_precision": "8bit", "min_8bit_size": 20}),
     (adamkit.ScheduleFreeAdamW, {"state_precision": "bf16"})],
)  # fmt: skip
def test_every_spec_replays_as_it_steps(cls, options):
    twins = _twins(cls, **options)
    for _, opt in twins:
        if isinstance(opt, adamkit.ScheduleFreeAdamW):
            opt.train()
    gen = torch.Generator().manual_seed(3)
    for _ in range(6):
        _step_both(twins, gen)
    assert twins[0][1]._step_plans
    _assert_same(twins)


def test_plans_are_not_pickled_and_copies_replay_their_own():
    (params, opt), _ = _twins(adamkit.Adam)
    for _ in range(3):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    assert opt._step_plans
    clone = copy.deepcopy(opt)
    assert not clone.__dict__.get("_step_plans")


def test_tensor_betas_changed_in_place_are_read_each_step():
    # float64 tensors: torch's arithmetic is then the loops' (a float32 one takes the full path)
    betas = [torch.tensor(b, dtype=torch.float64) for b in (0.9, 0.999)]
    twins = _twins(adamkit.Adam, betas=tuple(betas))
    gen = torch.Generator().manual_seed(5)
    for _ in range(3):
        _step_both(twins, gen)
    for _, opt in twins:
        opt.param_groups[0]["betas"][0].fill_(0.0)
    for _ in range(2):
        _step_both(twins, gen)
    _assert_same(twins)


def test_float64_params_with_an_equal_float32_lr_take_torchs_arithmetic():
    # lr=0.01 then tensor(0.01) (float32): equal values, but the full path then computes the
    # float64 params' step in float32 scalars as torch does; the plan must not keep its own.
    gen = torch.Generator().manual_seed(6)
    init = [torch.randn(9, generator=gen, dtype=torch.float64) for _ in range(2)]
    twins = []
    for _ in range(2):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        twins.append((params, adamkit.Adam(params, lr=0.01)))
    for step in range(5):
        if step == 2:
            for _, opt in twins:
                opt.param_groups[0]["lr"] = torch.tensor(0.01)
        _step_both(twins, gen)
    _assert_same(twins)


def test_a_tensor_lr_changed_in_place_is_read_each_step():
    # A scheduler's in-place change keeps the tensor object: the plan must not keep its value.
    twins = _twins(adamkit.Adam, lr=torch.tensor(0.01))
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        _step_both(twins, gen)
    for _, opt in twins:
        opt.param_groups[0]["lr"].fill_(0.5)
    for _ in range(2):
        _step_both(twins, gen)
    _assert_same(twins)
    (params, opt), _ = twins
    before = [p.detach().clone() for p in params]
    opt.param_groups[0]["lr"].fill_(0.0)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p.detach(), b)  # lr 0: nothing moves


def test_a_state_tensor_shrunk_in_place_is_not_written_past():
    # resize_ keeps the object and the address; the loops must not write the old size there
    twins = _twins(adamkit.Adam)
    gen = torch.Generator().manual_seed(7)
    for _ in range(3):
        _step_both(twins, gen)
    for params, opt in twins:
        opt.state[params[1]]["exp_avg"].resize_(3)
    _step_both(twins, gen)  # both refuse it the same way (a size error, nothing written)
    _assert_same(twins)


def test_a_removed_group_leaves_nothing_behind():
    import gc
    import weakref

    (params, opt), _ = _twins(adamkit.Adam)
    extra = torch.nn.Parameter(torch.ones(5))
    opt.add_param_group({"params": [extra]})
    for _ in range(3):
        for p in [*params, extra]:
            p.grad = torch.ones_like(p)
        opt.step()
    assert len(opt._step_plans) == 2
    removed = weakref.ref(extra)
    opt.param_groups.pop()
    del opt.state[extra], extra, p
    opt.step()
    gc.collect()
    assert len(opt._step_plans) == 1 and removed() is None


@pytest.mark.parametrize("rounding", ["stochastic", "kahan"])
def test_bfloat16_params_with_low_memory_state_replay_as_they_step(rounding):
    gen = torch.Generator().manual_seed(8)
    init = [torch.randn(s, generator=gen).bfloat16() for s in [(40, 3), (300,)]]
    twins = []
    for _ in range(2):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = adamkit.AdamW(
            params, state_precision="8bit", min_8bit_size=0, param_rounding=rounding
        )
        twins.append((params, opt))
    for _ in range(5):
        _step_both(twins, gen)
    assert twins[0][1]._step_plans
    _assert_same(twins)


def test_a_removed_earlier_group_moves_the_random_streams_of_the_later_ones():
    (params, opt), (twin_params, twin) = _twins(adamkit.Adam, state_precision="bf16")
    for o in (opt, twin):
        o.add_param_group({"params": [torch.nn.Parameter(torch.ones(300))]})
    twins = ((params, opt), (twin_params, twin))
    gen = torch.Generator().manual_seed(9)
    for _ in range(3):
        for o in (opt, twin):
            o.param_groups[1]["params"][0].grad = torch.ones(300)
        _step_both(twins, gen)
    for o in (opt, twin):  # the streams of the group left count from 0 now
        for p in o.param_groups.pop(0)["params"]:
            o.state.pop(p, None)
    for _ in range(2):
        for o in (opt, twin):
            o.param_groups[0]["params"][0].grad = torch.full((300,), 0.5)
        opt.step()
        twin.__dict__.pop("_step_plans", None)
        twin.step()
    a, b = opt.param_groups[0]["params"][0], twin.param_groups[0]["params"][0]
    _equal(a.detach(), b.detach())
    for key, value in opt.state[a].items():
        _equal(value, twin.state[b][key])


@pytest.mark.parametrize("state", LOW_MEMORY)
def test_an_empty_group_or_a_group_emptied_later_steps_as_the_full_path(state):
    twins = []
    for params, opt in _twins(adamkit.Adam, **LOW_MEMORY[state]):
        opt.add_param_group({"params": []})  # a no-decay group that matched nothing
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(40))]})
        twins.append((params, opt))
    gen = torch.Generator().manual_seed(10)
    for step in range(6):
        if step == 3:  # every param taken out of the last group
            for _, opt in twins:
                opt.param_groups[-1]["params"] = []
        for _, opt in twins:
            for p in opt.param_groups[-1]["params"]:
                p.grad = torch.ones_like(p)
        _step_both(twins, gen)
    _assert_same(twins)


@pytest.mark.parametrize(
    "change",
    [
        "momentum switched on",
        "a buffer given by hand",
        "nesterov with momentum",
        "nothing",
        "an empty entry read into the state",
    ],
)
def test_sgd_without_state_replays_until_it_gets_some(change):
    # Without momentum torch's SGD keeps no state entry at all; the plan keeps that absence.
    twins = _twins(adamkit.SGD, lr=0.1)
    gen = torch.Generator().manual_seed(11)
    for _ in range(3):
        _step_both(twins, gen)
    assert twins[0][1]._step_plans and not twins[0][1].state
    for params, opt in twins:
        group = opt.param_groups[0]
        if change == "momentum switched on":
            group["momentum"] = 0.9
        elif change == "a buffer given by hand":
            group["momentum"] = 0.5
            opt.state[params[0]]["momentum_buffer"] = torch.ones_like(params[0])
        elif change == "nesterov with momentum":
            group.update(momentum=0.9, nesterov=True)
        elif change == "an empty entry read into the state":
            assert opt.state[params[1]] == {}  # (a defaultdict: reading it stores {})
    for _ in range(3):
        _step_both(twins, gen)
    _assert_same(twins)
    if change in ("nothing", "an empty entry read into the state"):
        assert twins[0][1]._step_plans  # still replayed


SCHEDULED = [
    (adamkit.Adam, {}),
    (adamkit.AdamW, {"state_precision": "8bit", "min_8bit_size": 20}),
    (adamkit.NAdam, {"state_precision": "bf16"}),
    (adamkit.SGD, {"momentum": 0.9, "lr": 0.1}),
    (adamkit.AdEMAMix, {}),
    (adamkit.ScheduleFreeAdamW, {}),
    (adamkit.ScheduleFreeAdamW, {"state_precision": "bf16"}),
]


@pytest.mark.parametrize(("cls", "options"), SCHEDULED, ids=lambda v: getattr(v, "__name__", v))
def test_a_scheduler_moving_lr_and_betas_every_step_replays_as_it_steps(cls, options):
    # OneCycleLR moves lr and betas (SGD's momentum) at every step: a plan's scalars are made
    # afresh from them (or Schedule-Free's moving count), without the caches, and its group
    # check validates the moved keys alone (SGD's momentum with its nesterov check).
    twins = _twins(cls, **options)
    schedulers = []
    for _, opt in twins:
        if isinstance(opt, adamkit.ScheduleFreeAdamW):
            opt.train()
        schedulers.append(torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=20))
    gen = torch.Generator().manual_seed(12)
    plans = []
    for _ in range(8):
        _step_both(twins, gen)
        for scheduler in schedulers:
            scheduler.step()
        plans.append(next(iter(twins[0][1]._step_plans.values()), None))
    assert plans[2] is not None and all(plan is plans[2] for plan in plans[2:])  # replayed
    _assert_same(twins)


@pytest.mark.parametrize(("cls", "options"), SCHEDULED, ids=lambda v: getattr(v, "__name__", v))
def test_a_plans_fresh_scalars_are_the_cached_ones(cls, options):
    gen = torch.Generator().manual_seed(13)
    (_, opt), _ = _twins(cls, **options)
    group = opt.param_groups[0]
    group.update(lr=float(torch.rand((), generator=gen)), weight_decay=0.25, maximize=True)
    if isinstance(opt, adamkit.ScheduleFreeAdamW):
        group.update(k=7, weight_sum=3.5, lr_max=0.2, scheduled_lr=0.125)
    spec = opt.spec
    names = (*(h.name for h in spec.hyperparameters), *(name for name, _ in spec.group_state))
    values = tuple(group[name] for name in names)
    key = spec_kernels.plain_hyper_key(spec, group, values)
    assert key == spec_kernels.hyper_key(spec, group)
    for dtype in (torch.float32, torch.float64):
        fresh = spec_kernels.new_loop_arrays(spec.name, dtype, key)
        cached = spec_kernels.loop_arrays(spec.name, dtype, key)
        for a, b in zip(fresh, cached, strict=True):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("box", ["tensor", "array", "list"])
@pytest.mark.parametrize("when", ["after the plan", "from the start"])
def test_a_flag_replaced_by_an_equal_mutable_value_is_read_after_an_edit_in_place(box, when):
    # maximize=False replaced by tensor(False) (or an array, a list) keeps the group's values
    # equal; an edit inside it then changes the step without any value of the group changing.
    import numpy as np

    make = {"tensor": lambda: torch.tensor(False), "array": lambda: np.array(False),
            "list": lambda: [0]}[box]  # fmt: skip
    twins = _twins(adamkit.Adam)
    gen = torch.Generator().manual_seed(14)
    for _ in range(3 if when == "after the plan" else 0):
        _step_both(twins, gen)
    for _, opt in twins:
        opt.param_groups[0]["maximize"] = make()
    for _ in range(2):
        _step_both(twins, gen)
    for _, opt in twins:
        flag = opt.param_groups[0]["maximize"]
        if isinstance(flag, list):
            flag[0] = 1
        elif isinstance(flag, np.ndarray):
            flag[...] = True
        else:
            flag.fill_(True)
    _step_both(twins, gen)
    _assert_same(twins)


@pytest.mark.parametrize("name", ["SGD", "Adam", "Adamax", "RAdam"])
@pytest.mark.parametrize(
    "lrs",
    [(0.0, 0.5, -0.0), (0.0, 0.0, -0.0), (-0.0, -0.0, 0.0)],
    ids=["via-0.5", "0-to--0", "-0-to-0"],
)
def test_lr_negative_zero_steps_as_torch_in_the_sign_of_zeros(name, lrs):
    # -0.0 == 0.0: neither a scalar cache nor a plan's kept scalars may hand lr=-0.0 the
    # scalars made for lr=0.0 (or the reverse): the steps differ in the sign of zeros.
    grads = ([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, -1.0], [1.0, -1.0, 1.0, -0.0])

    def run(make, replays):
        p = torch.nn.Parameter(torch.tensor([-0.0, 0.0, 1.0, -0.0]))
        opt = make([p], lr=0.1)
        for lr, g in zip(lrs, grads, strict=True):
            opt.param_groups[0]["lr"] = lr
            p.grad = torch.tensor(g)
            if not replays:
                opt.__dict__.pop("_step_plans", None)
            opt.step()
        return p.detach().view(torch.int32).tolist()

    cls, torch_cls = getattr(adamkit, name), getattr(torch.optim, name)
    expected = run(torch_cls, False)
    for foreach in (False, True):  # torch's order: bit for bit
        ours = run(lambda ps, lr, f=foreach: cls(ps, lr=lr, foreach=f, fused=False), False)
        assert ours == run(lambda ps, lr, f=foreach: torch_cls(ps, lr=lr, foreach=f), False)
    fused = run(cls, True)
    assert run(cls, False) == fused  # the plan as the full path
    # the fused loops round as torch's to float32 accuracy, and zeros to the same sign
    as_float = lambda bits: torch.tensor(bits, dtype=torch.int32).view(torch.float32)  # noqa: E731
    torch.testing.assert_close(as_float(fused), as_float(expected))
    zeros = as_float(expected) == 0
    assert torch.equal(as_float(fused)[zeros].signbit(), as_float(expected)[zeros].signbit())


@pytest.mark.parametrize(
    "options", [{"state_precision": "bf16"}, {"state_precision": "8bit", "min_8bit_size": 0}]
)
def test_low_memory_steps_do_not_take_the_other_sign_of_zeros_scalars(options):
    import numpy as np

    def run(make, lr):
        p = torch.nn.Parameter(torch.tensor([-0.0, 0.0, -0.0, 0.0], dtype=torch.bfloat16))
        opt = make([p], lr=lr, weight_decay=0.0)
        p.grad = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=torch.bfloat16)
        opt.step()
        return p.detach().view(torch.int16).tolist()

    for lr in (-0.0, 0.0, np.float64(-0.0), 0.0, -0.0):  # each after the other sign's
        expected = run(torch.optim.AdamW, float(lr))
        assert run(lambda ps, **kw: adamkit.AdamW(ps, **kw, **options), lr) == expected


def test_named_params_replay_and_check_their_group_alone():
    # torch keeps the names of named params in the group (a list no kernel or check reads):
    # the plan replays, and a scheduler's lr is checked alone
    twins = []
    for _ in range(2):
        torch.manual_seed(15)
        model = torch.nn.Linear(5, 3)
        twins.append((list(model.parameters()), adamkit.AdamW(model.named_parameters())))
    assert "param_names" in twins[0][1].param_groups[0]
    gen = torch.Generator().manual_seed(15)
    plans = []
    for step in range(5):
        for _, opt in twins:
            opt.param_groups[0]["lr"] = 1e-3 * (step + 1)
        _step_both(twins, gen)
        plans.append(twins[0][1]._step_plans[id(twins[0][1].param_groups[0])])
    assert all(plan is plans[0] for plan in plans)  # made by the first step, then replayed
    _assert_same(twins)
    twins[0][1].param_groups[0]["lr"] = -1.0
    with pytest.raises(ValueError, match="lr"):
        twins[0][1].step()


@pytest.mark.parametrize("cls", [adamkit.AdamW, adamkit.ScheduleFreeAdamW])
@pytest.mark.parametrize("state", ["fp32", "bf16", "8bit"])
def test_groups_checked_before_the_step_replay_as_they_step(cls, state, monkeypatch):
    if cls is adamkit.ScheduleFreeAdamW and state == "8bit":
        pytest.skip("Schedule-Free refuses 8-bit state (its z is the iterate)")
    # With several groups, low-memory state is checked for every group before any steps; a
    # group whose plan is intact is not checked again, and its replay takes what that check
    # found (the gradients) in the same step, never at a later one.
    gen = torch.Generator().manual_seed(11)
    init = [torch.randn(s, generator=gen) for s in [(40, 3), (300,), (5,), (64, 8)]]
    twins = []
    for _ in range(2):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        groups = [{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}]
        opt = cls(groups, state_precision=state, min_8bit_size=0)
        if hasattr(opt, "train"):  # (its group count moves between the check and the replay)
            opt.train()
        twins.append((params, opt))
    intact = []
    check = adamkit.optim._step_plan.StepPlan.intact
    monkeypatch.setattr(
        adamkit.optim._step_plan.StepPlan, "intact",
        lambda self, *a: intact.append(check(self, *a)) or intact[-1],
    )  # fmt: skip
    for step in range(8):
        _step_both(twins, gen)
        if step == 4:  # a skipped step (a NaN gradient) between a check and a replay
            for opt in (twins[0][1], twins[1][1]):
                opt.on_nonfinite = "skip"
            twins[0][0][2].grad = twins[1][0][2].grad = torch.full((5,), float("nan"))
            for opt in (twins[0][1], twins[1][1]):
                opt.step()
                opt.on_nonfinite = "propagate"
    assert twins[0][1]._step_plans and any(intact) == (state != "fp32")
    _assert_same(twins)


def test_a_param_listed_in_a_second_group_by_hand_steps_as_the_full_path():
    # A group's pre-step check may convert the state of a param another group lists (the
    # lists edited by hand: add_param_group refuses it); that group's replay must not trust
    # what it checked before the conversion (found by a review).
    twins = []
    for _ in range(2):
        params = [torch.nn.Parameter(torch.randn(300, generator=torch.Generator().manual_seed(i)))
                  for i in range(3)]  # fmt: skip
        groups = [{"params": params[:2], "state_precision": "bf16"},
                  {"params": params[2:], "state_precision": "8bit"}]  # fmt: skip
        twins.append((params, adamkit.AdamW(groups, min_8bit_size=0)))
    gen = torch.Generator().manual_seed(2)
    for step in range(3):
        if step == 2:
            for _, opt in twins:
                opt.param_groups[1]["params"].append(opt.param_groups[0]["params"][0])
        _step_both(twins, gen)  # (the same outcome, an error or not, in both)
