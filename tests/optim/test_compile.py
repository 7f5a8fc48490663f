"""torch.compile: a compiled model trained with adamkit's default, and torch.compile(opt.step)
(torch's compiled-optimizer recipe), as torch's own optimizers compile."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch._dynamo

import adamkit

CASES = [
    (adamkit.Adam, torch.optim.Adam, {"lr": 0.01}),
    (adamkit.AdamW, torch.optim.AdamW, {"lr": 0.01, "amsgrad": True}),
    (adamkit.SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    (adamkit.RMSprop, torch.optim.RMSprop, {"lr": 0.01, "centered": True}),
    (adamkit.NAdam, torch.optim.NAdam, {"lr": 0.01}),
]
IDS = [c[0].__name__ for c in CASES]


def _model_and_data():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    return model, torch.randn(32, 8), torch.randn(32, 1)


def _losses(cls, config, *, compile_step: bool, steps: int = 5) -> list[float]:
    torch._dynamo.reset()
    model, x, y = _model_and_data()
    opt = cls(model.parameters(), **config)
    step = torch.compile(opt.step) if compile_step else opt.step
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(("ours", "theirs", "config"), CASES, ids=IDS)
def test_compiled_step_has_no_graph_breaks_and_no_warnings(ours, theirs, config):
    model, x, y = _model_and_data()
    opt = ours(model.parameters(), **config)
    torch.nn.functional.mse_loss(model(x), y).backward()
    opt.step()  # state created eagerly, as torch's recipe does
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Dynamo's warning on an lru_cache'd function
        explanation = torch._dynamo.explain(opt.step)()
    assert explanation.graph_break_count == 0, explanation.break_reasons


@pytest.mark.parametrize(("ours", "theirs", "config"), CASES, ids=IDS)
def test_compiled_step_trains_as_torchs_compiled_step(ours, theirs, config):
    ours_losses = _losses(ours, config, compile_step=True)
    theirs_losses = _losses(theirs, config, compile_step=True)
    eager = _losses(ours, config, compile_step=False)
    torch.testing.assert_close(ours_losses, theirs_losses, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(ours_losses, eager, rtol=1e-5, atol=1e-7)


def test_compiled_model_trains_with_the_default_fused_kernel():
    model, x, y = _model_and_data()
    compiled = torch.compile(model)
    opt = adamkit.Adam(model.parameters(), lr=0.01)
    reference_model, _, _ = _model_and_data()
    reference = torch.optim.Adam(reference_model.parameters(), lr=0.01)
    for _ in range(5):
        for m, o in ((compiled, opt), (reference_model, reference)):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()
    for a, b in zip(model.parameters(), reference_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
