"""torch.optim's schedulers, swa_utils and torch.amp with adamkit against the torch.optim twin:
same seed, losses step by step."""

from __future__ import annotations

import pytest
import torch
from torch.optim import lr_scheduler, swa_utils

import adamkit

TWINS = [(adamkit.Adam, torch.optim.Adam), (adamkit.SGD, torch.optim.SGD)]


def _problem():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 24), torch.nn.ReLU(), torch.nn.Linear(24, 1))
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(64, 6, generator=gen)
    return model, x, x[:, :1] * 2 - x[:, 1:2]


SCHEDULERS = {
    "OneCycleLR": lambda opt: lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=12),
    "CosineAnnealingLR": lambda opt: lr_scheduler.CosineAnnealingLR(opt, T_max=12),
    "ReduceLROnPlateau": lambda opt: lr_scheduler.ReduceLROnPlateau(opt, patience=1, factor=0.5),
    "SequentialLR": lambda opt: lr_scheduler.SequentialLR(
        opt,
        [
            lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=3),
            lr_scheduler.ExponentialLR(opt, 0.9),
        ],
        milestones=[3],
    ),
}


def _train(cls, make_scheduler, steps=12):
    model, x, y = _problem()
    kwargs = {"momentum": 0.9} if cls in (adamkit.SGD, torch.optim.SGD) else {}
    opt = cls(model.parameters(), lr=0.01, **kwargs)
    scheduler = make_scheduler(opt)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
            scheduler.step(loss.item())
        else:
            scheduler.step()
        losses.append(loss.item())
    return losses, [g["lr"] for g in opt.param_groups]


@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize(("ours", "theirs"), TWINS, ids=["Adam", "SGD"])
def test_schedulers_drive_adamkit_as_torch(name, ours, theirs):
    a, lr_a = _train(ours, SCHEDULERS[name])
    b, lr_b = _train(theirs, SCHEDULERS[name])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert lr_a == lr_b


@pytest.mark.parametrize(("ours", "theirs"), TWINS, ids=["Adam", "SGD"])
def test_swa_averaged_model_and_swalr(ours, theirs):
    results = []
    for cls in (ours, theirs):
        model, x, y = _problem()
        opt = cls(model.parameters(), lr=0.01)
        averaged = swa_utils.AveragedModel(model)
        swa = swa_utils.SWALR(opt, swa_lr=0.005, anneal_epochs=3)
        for step in range(10):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            if step >= 4:
                averaged.update_parameters(model)
                swa.step()
        results.append(torch.nn.functional.mse_loss(averaged(x), y).item())
    assert results[0] == pytest.approx(results[1], rel=1e-5)


@pytest.mark.parametrize(("ours", "theirs"), TWINS, ids=["Adam", "SGD"])
def test_autocast_bf16_with_grad_scaler_on_cpu(ours, theirs):
    losses = []
    for cls in (ours, theirs):
        model, x, y = _problem()
        opt = cls(model.parameters(), lr=0.01)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
        run = []
        for _ in range(6):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = torch.nn.functional.mse_loss(model(x).float(), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            run.append(loss.item())
        losses.append(run)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-7)
