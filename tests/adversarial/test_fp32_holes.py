"""Holes in the full-precision (fp32 state) paths, issue 24, each against torch.optim.

* 6: a param replaced by a tensor of the same size but another shape after its first step;
* 7: ``differentiable=True`` through several steps (gradients w.r.t. the initial param, a
  scale of the gradients and the learning rate), amsgrad included;
* 14: a float32 tensor ``lr`` or ``betas`` on float64 params, and ``betas`` as one tensor;
* 15: hyperparameters changed through ``param_groups`` after construction, and a checkpoint
  of another optimizer.
"""

from __future__ import annotations

import math

import pytest
import torch

import adamkit
from adamkit.kernels._batching import StateSizeError
from adamkit.optim import StateDictError
from harness import assert_unchanged, snapshot_params_and_state

pytestmark = pytest.mark.timeout(120)

F64 = torch.float64

ALL_SEVEN = [
    ("Adam", {}),
    ("AdamW", {"amsgrad": True}),
    ("SGD", {"momentum": 0.9}),
    ("RMSprop", {"centered": True, "momentum": 0.9}),
    ("NAdam", {}),
    ("RAdam", {}),
    ("Adamax", {}),
]
ALL_SEVEN_IDS = [name for name, _ in ALL_SEVEN]


# ---------------------------------------------- 6: same number of elements, another shape


def _stepped(cls, config):
    gen = torch.Generator().manual_seed(4)
    # A large param first (the loops' parallel path), the one to be replaced second.
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in ((40_000,), (2, 3))]
    opt = cls(params, lr=0.1, **config)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    return params, opt


@pytest.mark.parametrize(("name", "config"), ALL_SEVEN, ids=ALL_SEVEN_IDS)
def test_a_param_transposed_after_its_first_step_is_refused_and_nothing_changes(name, config):
    # torch raises (its ops do not broadcast (3, 2) against the (2, 3) state).
    t_params, t_opt = _stepped(getattr(torch.optim, name), config)
    t_params[1].data = t_params[1].data.t().contiguous()
    for p in t_params:
        p.grad = torch.ones(p.shape)
    with pytest.raises(RuntimeError):
        t_opt.step()
    # adamkit's default (fused) path read the state by address, pairing moments with the wrong
    # elements. It must refuse before anything is written.
    params, opt = _stepped(getattr(adamkit, name), config)
    params[1].data = params[1].data.t().contiguous()
    for p in params:
        p.grad = torch.ones(p.shape)
    before = snapshot_params_and_state(params, opt)
    with pytest.raises(StateSizeError, match=r"shape \(3, 2\) has shape \(2, 3\)"):
        opt.step()
    assert_unchanged(params, opt, before)
    # The state is still the param's old one: put the param back and stepping goes on.
    params[1].data = params[1].data.t().contiguous()
    params[1].grad = torch.ones(params[1].shape)
    opt.step()


# -------------------------------------------------------------- 7: differentiable=True

# (optimizer, config, steps, whether lr is differentiated too): the cases where torch.optim's
# own differentiable path gives gradients (torch's RMSprop and Adamax refuse a tensor lr that
# requires grad; with amsgrad, torch's own in-place max fails from the second step on).
DIFFERENTIABLE = [
    ("Adam", {}, 3, False),
    ("Adam", {}, 3, True),
    ("Adam", {"weight_decay": 0.1, "maximize": True}, 3, True),
    ("Adam", {"amsgrad": True}, 1, False),
    ("Adam", {"amsgrad": True}, 1, True),
    ("AdamW", {}, 3, True),
    ("AdamW", {"amsgrad": True, "maximize": True}, 1, True),
    ("SGD", {}, 3, True),
    ("SGD", {"momentum": 0.9}, 3, False),
    ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1}, 3, True),
    ("RMSprop", {}, 1, False),
    ("RMSprop", {}, 3, False),
    ("RMSprop", {"momentum": 0.9}, 3, False),
    ("RMSprop", {"centered": True}, 1, False),
    ("RMSprop", {"centered": True, "momentum": 0.9, "weight_decay": 0.1}, 1, False),
    ("NAdam", {"weight_decay": 0.1, "decoupled_weight_decay": True}, 3, False),
    ("NAdam", {}, 1, True),
    ("RAdam", {"weight_decay": 0.1}, 3, True),
    ("Adamax", {"weight_decay": 0.1}, 1, False),
]


def _meta_grads(cls, config, steps, lr_requires_grad):
    """torch's documented differentiable use: the step is part of the graph, so the loss after
    ``steps`` steps is differentiated w.r.t. the initial param (a non-leaf param in the
    optimizer), a scale of every gradient (state depends on it) and, optionally, the lr."""
    gen = torch.Generator().manual_seed(3)
    p0 = torch.randn(2, 3, dtype=F64, generator=gen).requires_grad_()
    scale = torch.tensor(0.7, dtype=F64, requires_grad=True)
    directions = [torch.randn(2, 3, dtype=F64, generator=gen) for _ in range(steps)]
    lr = torch.tensor(0.05, dtype=F64, requires_grad=True) if lr_requires_grad else 0.05
    p = p0.clone()
    opt = cls([p], lr=lr, differentiable=True, **config)
    for d in directions:
        p.grad = scale * d + scale**2 * d.sign()
        opt.step()
    wrt = (p0, scale, lr) if lr_requires_grad else (p0, scale)
    return p.detach(), torch.autograd.grad((p**2).sum(), wrt)


@pytest.mark.parametrize(
    ("name", "config", "steps", "lr_requires_grad"),
    DIFFERENTIABLE,
    ids=[f"{n}-{c}-{s}steps{'-lr' if r else ''}" for n, c, s, r in DIFFERENTIABLE],
)
def test_differentiable_steps_give_torchs_gradients(name, config, steps, lr_requires_grad):
    theirs, t_grads = _meta_grads(getattr(torch.optim, name), config, steps, lr_requires_grad)
    ours, grads = _meta_grads(getattr(adamkit, name), config, steps, lr_requires_grad)
    # Same operations as torch's differentiable path: identical values and gradients.
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    for a, b in zip(grads, t_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------- 14: float32 tensor hyperparameters, betas tensor


def _run(cls, dtype, lr, betas, group_betas=None, **flags):
    gen = torch.Generator().manual_seed(11)
    p = torch.nn.Parameter(torch.randn(50, dtype=dtype, generator=gen))
    q = torch.nn.Parameter(torch.randn(3, 4, dtype=dtype, generator=gen))
    opt = cls([p, q], lr=lr, betas=betas, **flags)
    if group_betas is not None:
        opt.param_groups[0]["betas"] = group_betas
    for _ in range(6):
        for t in (p, q):
            t.grad = torch.randn(t.shape, dtype=dtype, generator=gen)
        opt.step()
    return [p.detach(), q.detach()]


FAMILY = ["Adam", "AdamW", "NAdam", "RAdam", "Adamax"]
SPEC_BUILT = ["NAdam", "RAdam", "Adamax"]


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("flags", [{}, {"fused": True}], ids=["default", "fused"])
def test_float32_tensor_lr_on_float64_params_is_torchs(name, flags):
    # torch computes the step's scalars in the lr tensor's dtype (float32): adamkit's fused
    # loops computed them in float64 from its value (~1e-8 relative off torch). Such params
    # now take the for-loop kernel, torch's arithmetic: bit for bit.
    lr = torch.tensor(0.01)
    theirs = _run(getattr(torch.optim, name), F64, lr.clone(), (0.9, 0.999), foreach=False)
    ours = _run(getattr(adamkit, name), F64, lr.clone(), (0.9, 0.999), **flags)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", SPEC_BUILT)
@pytest.mark.parametrize("flags", [{}, {"fused": True}], ids=["default", "fused"])
@pytest.mark.parametrize(
    "betas",
    [torch.tensor([0.8, 0.99]), (torch.tensor(0.8), torch.tensor(0.99))],
    ids=["one-tensor", "tuple-of-tensors"],
)
@pytest.mark.parametrize("how", ["constructor", "param_groups"])
def test_float32_tensor_betas_on_float64_params_are_torchs(name, flags, betas, how):
    given = {"betas": betas} if how == "constructor" else {"group_betas": betas}
    default = (0.9, 0.999)
    theirs = _run(
        getattr(torch.optim, name), F64, 0.01, given.get("betas", default),
        group_betas=given.get("group_betas"), foreach=False,
    )  # fmt: skip
    ours = _run(
        getattr(adamkit, name), F64, 0.01, given.get("betas", default),
        group_betas=given.get("group_betas"), **flags,
    )  # fmt: skip
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", FAMILY)
def test_betas_as_one_tensor_works_on_float32_params_as_torch(name):
    # torch takes betas=torch.tensor([β1, β2]) at construction and in param_groups; the fused
    # float32 loops agree with torch's for-loop to float32 rounding, as everywhere.
    betas = torch.tensor([0.8, 0.99])
    theirs = _run(getattr(torch.optim, name), torch.float32, 0.01, betas.clone(), foreach=False)
    ours = _run(getattr(adamkit, name), torch.float32, 0.01, betas.clone())
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    theirs = _run(
        getattr(torch.optim, name), torch.float32, 0.01, (0.9, 0.999),
        group_betas=betas.clone(), foreach=False,
    )  # fmt: skip
    ours = _run(getattr(adamkit, name), torch.float32, 0.01, (0.9, 0.999), group_betas=betas)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", FAMILY)
def test_betas_tensor_of_another_size_is_refused(name):
    with pytest.raises(ValueError, match=r"betas must be a pair"):
        getattr(adamkit, name)([torch.nn.Parameter(torch.ones(2))], betas=torch.tensor([0.9]))


# ----------------------------------------------------- 15: changes through param_groups

# (optimizer, key, bad value, what the message must name: the argument and the value)
BAD_CHANGES = [
    ("Adam", "lr", math.nan, ("lr", "nan")),
    ("Adam", "betas", (1.5, 0.999), ("betas[0]", "1.5")),
    ("AdamW", "weight_decay", -0.1, ("weight_decay", "-0.1")),
    ("SGD", "lr", math.nan, ("lr", "nan")),
    ("SGD", "momentum", math.inf, ("momentum", "inf")),
    ("RMSprop", "alpha", 2.0, ("alpha", "2.0")),
    ("RMSprop", "eps", math.nan, ("eps", "nan")),
    ("NAdam", "momentum_decay", -1.0, ("momentum_decay", "-1.0")),
    ("RAdam", "betas", (0.9, 1.0), ("betas[1]", "1.0")),
    ("Adamax", "lr", -0.5, ("lr", "-0.5")),
]


def _two_groups(cls):
    gen = torch.Generator().manual_seed(5)
    params = [torch.nn.Parameter(torch.randn(n, generator=gen)) for n in (7, 5)]
    config = {"momentum": 0.9} if cls is adamkit.SGD else {}
    opt = cls([{"params": [params[0]]}, {"params": [params[1]]}], lr=0.01, **config)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    return params, opt


@pytest.mark.parametrize("group_index", [0, 1])
@pytest.mark.parametrize(
    ("name", "key", "value", "named"), BAD_CHANGES, ids=[f"{n}-{k}" for n, k, _, _ in BAD_CHANGES]
)
def test_a_bad_value_set_through_param_groups_is_refused_at_the_step(
    name, key, value, named, group_index
):
    params, opt = _two_groups(getattr(adamkit, name))
    opt.param_groups[group_index][key] = value
    before = snapshot_params_and_state(params, opt)
    with pytest.raises(ValueError, match=rf"param group {group_index}\b") as info:
        opt.step()
    assert all(word in str(info.value) for word in named), str(info.value)
    assert_unchanged(params, opt, before)  # no group was updated, the valid one neither
    opt.param_groups[group_index][key] = opt.defaults[key]
    opt.step()  # a good value again: steps go on


def test_a_key_checked_alone_when_it_moves_is_still_checked_with_the_others():
    # A change to lr, betas or momentum alone is validated by its own check (schedulers move
    # them every step), except where another check reads it: SGD's nesterov needs momentum.
    gen = torch.Generator().manual_seed(3)
    p = torch.nn.Parameter(torch.randn(4, generator=gen))
    opt = adamkit.SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    p.grad = torch.randn(4, generator=gen)
    opt.step()
    opt.param_groups[0]["momentum"] = 0.5  # a momentum scheduler's step: fine
    opt.step()
    opt.param_groups[0]["momentum"] = 0.0
    before = snapshot_params_and_state([p], opt)
    with pytest.raises(ValueError, match=r"param group 0\b.*Nesterov momentum requires"):
        opt.step()
    assert_unchanged([p], opt, before)


def test_a_list_betas_edited_in_place_is_checked_when_lr_moves():
    # An edit inside a mutable value is seen when another value of the group changes (a
    # scheduler's lr): the group is then validated whole, not the lr alone.
    for name in ("Adam", "Lion", "AdEMAMix"):
        params, opt = _two_groups(getattr(adamkit, name))
        betas = list(opt.param_groups[0]["betas"])
        opt.param_groups[0]["betas"] = betas
        opt.step()
        betas[0] = 1.5
        opt.param_groups[0]["lr"] = 0.05
        before = snapshot_params_and_state(params, opt)
        with pytest.raises(ValueError, match=r"param group 0\b.*betas\[0\]"):
            opt.step()
        assert_unchanged(params, opt, before)


class _CapMixin:
    def validate_group(self, group):
        super().validate_group(group)
        _cap(group)


def _cap(group):
    if group["lr"] > 1:
        raise ValueError(f"lr {group['lr']} above the cap")


@pytest.mark.parametrize("how", ["subclass", "mixin", "SGD mixin", "assigned", "instance"])
def test_a_users_check_sees_a_moved_lr_however_it_is_added(how):
    # Only lr, betas or momentum moved: their own checks suffice for adamkit's classes, not
    # for a validate_group a user brings (it may read them beside other keys).
    class Capped(adamkit.Adam):
        def validate_group(self, group):
            super().validate_group(group)
            _cap(group)

    class MixedLion(_CapMixin, adamkit.Lion):
        pass

    class MixedSGD(_CapMixin, adamkit.SGD):
        pass

    class Late(adamkit.NAdam):
        pass

    cls = {"subclass": Capped, "mixin": MixedLion, "SGD mixin": MixedSGD}.get(how, Late)
    _, opt = _two_groups(cls)
    if how == "assigned":
        Late.validate_group = lambda self, group: (adamkit.NAdam.validate_group(self, group),
                                                   _cap(group))  # fmt: skip
    elif how == "instance":
        opt.validate_group = lambda group: (adamkit.NAdam.validate_group(opt, group), _cap(group))
    opt.param_groups[0]["lr"] = 5.0
    with pytest.raises(ValueError, match="above the cap"):
        opt.step()


def test_lazy_sparse_set_later_sees_a_moved_lr():
    _, opt = _two_groups(adamkit.AdamW)
    opt.lazy_sparse = True  # an attribute set after construction: checked with the group
    opt.param_groups[0]["lr"] = 0.05
    with pytest.raises(ValueError, match="lazy_sparse=True supports neither"):
        opt.step()


def test_lr_and_betas_moved_together_are_each_checked():
    _, opt = _two_groups(adamkit.Adam)
    opt.param_groups[1].update(lr=0.02, betas=(0.9, 1.5))
    with pytest.raises(ValueError, match=r"param group 1\b.*betas\[1\]"):
        opt.step()
    opt.param_groups[1].update(lr=-1.0, betas=(0.9, 0.99))
    with pytest.raises(ValueError, match=r"param group 1\b.*learning rate: -1.0"):
        opt.step()


@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_a_bad_value_is_refused_before_the_nonfinite_check_counts_anything(mode):
    params, opt = _two_groups(adamkit.Adam)
    opt.on_nonfinite = mode
    params[0].grad = torch.full_like(params[0], math.nan)
    opt.param_groups[0]["lr"] = math.nan
    with pytest.raises(ValueError, match=r"param group 0\b.*learning rate: nan; lr must"):
        opt.step()
    assert opt.skipped_steps == 0


@pytest.mark.parametrize("name", ["Adam", "SGD", "NAdam"])
def test_a_tensor_lr_filled_with_nan_in_place_is_refused(name):
    # LR schedulers write a tensor lr in place (fill_): the check must see that too.
    gen = torch.Generator().manual_seed(2)
    p = torch.nn.Parameter(torch.randn(4, generator=gen))
    opt = getattr(adamkit, name)([p], lr=torch.tensor(0.01))
    p.grad = torch.randn(4, generator=gen)
    opt.step()
    opt.param_groups[0]["lr"].fill_(0.02)  # a scheduler's step: fine
    opt.step()
    opt.param_groups[0]["lr"].fill_(math.nan)
    before = snapshot_params_and_state([p], opt)
    with pytest.raises(ValueError, match=r"param group 0\b.*learning rate: nan; lr must"):
        opt.step()
    assert_unchanged([p], opt, before)


def test_a_scheduler_changing_a_tensor_lr_every_step_still_trains():
    model = torch.nn.Linear(3, 2)
    opt = adamkit.AdamW(model.parameters(), lr=torch.tensor(0.1))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    for _ in range(5):
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        sched.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_an_adam_checkpoint_loaded_into_sgd_names_the_missing_key():
    params = [torch.nn.Parameter(torch.ones(3))]
    adam = adamkit.Adam(params)
    params[0].grad = torch.ones(3)
    adam.step()
    sgd = adamkit.SGD(params, momentum=0.9)
    with pytest.raises(StateDictError) as info:
        sgd.load_state_dict(adam.state_dict())
    message = str(info.value)
    assert "param group 0 has no 'momentum'" in message
    assert "SGD" in message and "'dampening'" in message  # what SGD's groups hold
    assert "another optimizer's" in message
