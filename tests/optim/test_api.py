"""The torch.optim contract: groups, closures, hooks, schedulers, GradScaler, copies."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import adamkit
from harness import assert_close_to_scale
from specs import SPECS

SPEC_IDS = [s.name for s in SPECS]


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))


def _loss(model: torch.nn.Module, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 5, generator=gen), torch.randn(16, 1, generator=gen)
    return torch.nn.functional.mse_loss(model(x), y)


def _train(opt_cls, model, steps=5, **kw):
    opt = opt_cls(model.parameters(), **{"lr": 1e-3, **kw})
    for t in range(steps):
        opt.zero_grad()
        _loss(model, t).backward()
        opt.step()
    return opt


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_param_groups_with_different_hyperparameters_match_torch(spec):
    results = []
    for cls in (spec.ours, spec.theirs):
        model = _model()
        groups = [
            {"params": model[0].parameters(), "lr": 0.05},
            {"params": model[2].parameters(), "weight_decay": 0.1},
        ]
        opt = cls(groups, lr=0.01)
        for t in range(4):
            opt.zero_grad()
            _loss(model, t).backward()
            opt.step()
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_add_param_group_and_closure(spec):
    model = _model()
    opt = spec.ours(model[0].parameters(), lr=0.01)
    opt.add_param_group({"params": model[2].parameters(), "lr": 0.02})
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.02]
    before = [p.detach().clone() for p in model.parameters()]

    def closure():
        opt.zero_grad()
        loss = _loss(model, 0)
        loss.backward()
        return loss

    for _ in range(1 + spec.filling_calls):
        loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0
    for p, b in zip(model.parameters(), before, strict=True):
        assert not torch.equal(p, b)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_zero_grad_sets_grads_to_none(spec):
    model = _model()
    opt = _train(spec.ours, model, steps=1)
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_step_and_state_dict_hooks_run(spec):
    model = _model()
    opt = spec.ours(model.parameters(), lr=0.01)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    opt.register_state_dict_pre_hook(lambda o: calls.append("sd_pre"))
    opt.register_state_dict_post_hook(lambda o, sd: calls.append("sd_post"))
    opt.register_load_state_dict_pre_hook(lambda o, sd: calls.append("load_pre"))
    opt.register_load_state_dict_post_hook(lambda o: calls.append("load_post"))
    _loss(model, 0).backward()
    opt.step()
    opt.load_state_dict(opt.state_dict())
    assert calls == ["pre", "post", "sd_pre", "sd_post", "load_pre", "load_post"]


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_step_hooks_see_the_same_arguments_as_torchs(spec):
    seen = {}
    for cls in (spec.ours, spec.theirs):
        model = _model()
        opt = cls(model.parameters(), lr=0.01)
        calls = seen[cls] = []
        opt.register_step_pre_hook(lambda o, a, k, calls=calls: calls.append((len(a), dict(k))))
        closure = lambda model=model: _loss(model, 0)  # noqa: E731
        _loss(model, 0).backward()
        opt.step()
        opt.step(closure)
        opt.step(closure=closure)
        seen[cls] = [(n, sorted(k)) for n, k in calls]
    assert seen[spec.ours] == seen[spec.theirs] == [(1, []), (2, []), (1, ["closure"])]


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_lr_scheduler_drives_group_lr_like_torch(spec):
    results = []
    for cls in (spec.ours, spec.theirs):
        model = _model()
        opt = cls(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        lrs = []
        for t in range(6):
            opt.zero_grad()
            _loss(model, t).backward()
            opt.step()
            sched.step()
            lrs.append(opt.param_groups[0]["lr"])
        results.append((lrs, [p.detach().clone() for p in model.parameters()]))
    assert results[0][0] == results[1][0] == [0.1, 0.05, 0.05, 0.025, 0.025, 0.0125]
    for a, b in zip(results[0][1], results[1][1], strict=True):
        assert_close_to_scale(a, b, rtol=1e-5, what="param")


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_grad_scaler_matches_torch_and_skips_inf_steps(spec):
    results = []
    for cls in (spec.ours, spec.theirs):
        model = _model()
        opt = cls(model.parameters(), lr=0.01)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
        for t in range(4):
            opt.zero_grad()
            scaler.scale(_loss(model, t)).backward()
            if t == 2:  # an overflowing step must be skipped
                next(model.parameters()).grad[0, 0] = float("inf")
            scaler.step(opt)
            scaler.update()
        results.append(([p.detach().clone() for p in model.parameters()], scaler.get_scale()))
    assert results[0][1] == results[1][1] < 2.0**10
    for a, b in zip(results[0][0], results[1][0], strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_deepcopy_and_pickle_keep_state(spec):
    model = _model()
    opt = _train(
        spec.ours, model, steps=3, lr=0.01, **({"momentum": 0.9} if "SGD" in spec.name else {})
    )
    copied = copy.deepcopy(opt)
    unpickled = pickle.loads(pickle.dumps(opt))
    for other in (copied, unpickled):
        assert type(other) is type(opt)
        assert other.param_groups[0]["lr"] == 0.01
        sd, so = opt.state_dict()["state"], other.state_dict()["state"]
        assert sd.keys() == so.keys() and len(sd) > 0
        for i in sd:
            for k in sd[i]:
                assert torch.equal(sd[i][k], so[i][k])


def test_named_parameters_are_accepted_and_kept_in_state_dict():
    model = _model()
    opt = adamkit.Adam(model.named_parameters(), lr=0.01)
    _loss(model, 0).backward()
    opt.step()
    names = opt.state_dict()["param_groups"][0]["param_names"]
    assert names == [n for n, _ in model.named_parameters()]


def test_params_without_grad_are_left_alone():
    a = torch.nn.Parameter(torch.ones(3))
    b = torch.nn.Parameter(torch.ones(3))
    opt = adamkit.Adam([a, b], lr=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(3)) and b not in opt.state
    assert opt.state[a]["step"].item() == 1


def test_rmsprop_rejects_sparse_gradients_like_torch():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = adamkit.RMSprop(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


def test_sgd_accepts_sparse_gradients_like_torch():
    results = []
    for cls in (adamkit.SGD, torch.optim.SGD):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(10, 3, sparse=True)
        opt = cls(emb.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            emb(torch.tensor([1, 2, 2])).sum().backward()
            opt.step()
        results.append(emb.weight.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop"])
def test_differentiable_step_keeps_autograd_history(name):
    grads = []
    for cls in (getattr(adamkit, name), getattr(torch.optim, name)):
        w0 = torch.tensor([1.0, -2.0], dtype=torch.float64, requires_grad=True)
        # torch's RMSprop cannot take a tensor lr that requires grad; differentiate w.r.t. w0.
        lr = torch.tensor(0.1, dtype=torch.float64, requires_grad=name != "RMSprop")
        w = w0.clone()
        opt = (
            cls([w], lr=lr, momentum=0.5, differentiable=True)
            if name != "Adam"
            else cls([w], lr=lr, differentiable=True)
        )
        w.grad = (w * w).detach()
        opt.step()  # one step: torch's in-place buffers forbid backward through two
        wrt = (w0, lr) if name != "RMSprop" else (w0,)
        grads.append(torch.autograd.grad((w * w).sum(), wrt))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (adamkit.Adam, torch.optim.Adam),
        (adamkit.AdamW, torch.optim.AdamW),
        (adamkit.SGD, torch.optim.SGD),
        (adamkit.RMSprop, torch.optim.RMSprop),
    ],
)
def test_isinstance_answers_as_for_torchs_class(ours, theirs):
    # Libraries branch on it: accelerate's DeepSpeed integration sets adamw_mode from
    # isinstance(optimizer, torch.optim.AdamW), and would give adamkit.AdamW L2 decay otherwise.
    opt = ours([torch.nn.Parameter(torch.ones(2))], lr=0.1)
    assert isinstance(opt, theirs)
    assert isinstance(opt, torch.optim.AdamW) == (ours is adamkit.AdamW)
    # ... without torch's update running: the step is still adamkit's own.
    assert type(opt).step is not theirs.step
    assert type(opt).__init__ is ours.__init__
