"""Drive an optimizer (or the reference) through a fixed plan of gradients."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from specs import Spec, random_grad, to_numpy_real

GradPlan = list[list[torch.Tensor | None]]


def grad_plan(params: list[torch.Tensor], n_steps: int, seed: int) -> GradPlan:
    """Random gradients per step; parameter 1 has no gradient on every third step."""
    gen = torch.Generator().manual_seed(seed)
    plan = []
    for t in range(n_steps):
        grads: list[torch.Tensor | None] = [random_grad(p, gen) for p in params]
        if len(grads) > 1 and t % 3 == 2:
            grads[1] = None
        plan.append(grads)
    return plan


def run_optimizer(
    cls: type[torch.optim.Optimizer],
    params0: list[torch.Tensor],
    config: dict[str, Any],
    plan: GradPlan,
    **flags: Any,
) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    params = [p.clone().requires_grad_(True) for p in params0]
    config = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in config.items()}
    opt = cls(params, **config, **flags)
    for grads in plan:
        for p, g in zip(params, grads, strict=True):
            p.grad = None if g is None else g.clone()
        opt.step()
    return params, opt


def run_reference(
    spec: Spec, params0: list[torch.Tensor], config: dict[str, Any], plan: GradPlan
) -> tuple[list[np.ndarray], list[Any]]:
    hyper = spec.make_hyper(config)
    params = [p.detach().numpy().copy() for p in params0]
    states = [spec.reference.init(p) for p in params]
    for grads in plan:
        for i, g in enumerate(grads):
            if g is None:  # a group-level count moves on without it (Schedule-Free's)
                idle = getattr(spec.reference, "idle", None)
                states[i] = states[i] if idle is None else idle(states[i], hyper)
                continue
            params[i], states[i], _ = spec.reference.step(params[i], g.numpy(), states[i], hyper)
    return params, states


def assert_state_equal(a: torch.optim.Optimizer, b: torch.optim.Optimizer, **tol: Any) -> None:
    """Every state tensor of ``a`` equals ``b``'s (same keys, values within ``tol``)."""
    sa, sb = a.state_dict()["state"], b.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for idx in sa:
        assert sa[idx].keys() == sb[idx].keys(), idx
        for key in sa[idx]:
            if key == "step":
                assert_same_step(sa[idx][key], sb[idx][key])
                continue
            torch.testing.assert_close(sa[idx][key], sb[idx][key], **tol, msg=f"{idx}/{key}")


def assert_same_step(a: Any, b: Any) -> None:
    """Step counts are equal in value; adamkit keeps them in float64, torch in float32."""
    assert float(a) == float(b), f"step {a} != {b}"


def assert_params_close(a: list[torch.Tensor], b: list[torch.Tensor], **tol: Any) -> None:
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        torch.testing.assert_close(x.detach(), y.detach(), **tol, msg=f"param {i}")


def reference_close(
    actual: torch.Tensor, expected: np.ndarray, *, rtol: float, atol: float, what: str
) -> None:
    expected = np.ascontiguousarray(expected)
    if np.iscomplexobj(expected):
        expected = expected.view(np.float64)
    got = to_numpy_real(actual)
    np.testing.assert_allclose(got, expected.reshape(-1), rtol=rtol, atol=atol, err_msg=what)


def assert_close_to_scale(
    actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str
) -> None:
    """Close relative to the tensor's magnitude: the fit for float32 results computed with
    different rounding (e.g. float64 arithmetic inside a fused kernel vs float32 ops in torch),
    where a value that nearly cancels carries the absolute error of its larger summands."""
    scale = max(1.0, expected.detach().abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.detach(), expected.detach(), rtol=rtol, atol=rtol * scale, msg=what
    )


def assert_all_close_to_scale(a_params, b_params, a_opt, b_opt, rtol: float) -> None:
    for i, (x, y) in enumerate(zip(a_params, b_params, strict=True)):
        assert_close_to_scale(x, y, rtol, f"param {i}")
    sa, sb = a_opt.state_dict()["state"], b_opt.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for idx in sa:
        assert sa[idx].keys() == sb[idx].keys(), idx
        for key in sa[idx]:
            if key == "step":
                assert_same_step(sa[idx][key], sb[idx][key])
                continue
            assert_close_to_scale(sa[idx][key], sb[idx][key], rtol, f"{idx}/{key}")


def snapshot_params_and_state(params, opt):
    """Copies of ``params`` and of their state in ``opt``, for :func:`assert_unchanged`."""
    state = {
        id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[p].items()}
        for p in params
        if p in opt.state
    }
    return [p.detach().clone() for p in params], state


def assert_unchanged(params, opt, before):
    """Every param and state value is as :func:`snapshot_params_and_state` saw it."""
    values, state = before
    for p, v in zip(params, values, strict=True):
        assert p.shape == v.shape and torch.equal(p.detach(), v)
    for p in params:
        for key, value in state.get(id(p), {}).items():
            now = opt.state[p][key]
            assert torch.equal(now, value) if torch.is_tensor(value) else now == value, key


def timm_module(module: str) -> types.ModuleType:
    """``timm.optim.<module>`` without running timm/__init__ (it needs a torchvision matching
    torch); the test skips where timm is not installed."""
    try:
        spec = importlib.util.find_spec("timm")
    except (ImportError, ValueError):  # ValueError: a None placeholder in sys.modules
        spec = None
    if spec is None or spec.origin is None:
        pytest.skip("timm is not installed")
    package = "_adamkit_peer_timm_optim"
    if package not in sys.modules:
        stub = types.ModuleType(package)
        stub.__path__ = [str(Path(spec.origin).parent / "optim")]
        sys.modules[package] = stub
    return importlib.import_module(f"{package}.{module}")
