"""torch.compile: a compiled model trained with adamkit's default, and torch.compile(opt.step)
(torch's compiled-optimizer recipe), as torch's own optimizers compile."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import adamkit
from adamkit.kernels import lowbit_torch

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


# Low-memory state (adamkit.kernels.lowbit_compiled): torch.compile(opt.step) traces the torch
# ops path with its step counters as tensors, as the fp32 path: no graph break, no warning, and
# the eager torch-ops path's numbers (fused=False).
LOW_MEMORY = [
    (adamkit.Adam, {"lr": 0.01, "state_precision": "8bit"}, torch.float32),
    (adamkit.AdamW, {"lr": 0.01, "state_precision": "8bit", "amsgrad": True}, torch.float32),
    (adamkit.Adam, {"lr": 0.01, "state_precision": "bf16"}, torch.float32),
    (adamkit.NAdam, {"lr": 0.01, "state_precision": "8bit"}, torch.float32),
    (
        adamkit.RAdam,
        {
            "lr": 0.01,
            "state_precision": "8bit",
            "weight_decay": 0.1,
            "decoupled_weight_decay": True,
        },
        torch.float32,
    ),
    (adamkit.Adamax, {"lr": 0.01, "state_precision": "8bit"}, torch.float32),
    (
        adamkit.Adam,
        {"lr": 0.01, "state_precision": "8bit", "param_rounding": "stochastic"},
        torch.bfloat16,
    ),
    (
        adamkit.Adam,
        {"lr": 0.01, "state_precision": "bf16", "param_rounding": "kahan"},
        torch.bfloat16,
    ),
]
LOW_IDS = [
    f"{cls.__name__}-{cfg['state_precision']}-{str(dtype).removeprefix('torch.')}"
    + ("-" + cfg["param_rounding"] if "param_rounding" in cfg else "")
    + ("-amsgrad" if cfg.get("amsgrad") else "")
    for cls, cfg, dtype in LOW_MEMORY
]


def _low_memory_run(cls, config, dtype, *, backend: str | None, steps: int = 5, schedule=True):
    """``steps`` steps, with ``schedule`` the lr changed on the way (the compiled step
    recompiles once with the lr as an input) and the state made in the first compiled step,
    else the state made eagerly (one graph); ``backend`` None: eager with fused=False."""
    torch._dynamo.reset()
    model, x, y = _model_and_data()
    model = model.to(dtype)
    opt = cls(model.parameters(), min_8bit_size=0, fused=False, **config)
    compiled = opt.step if backend is None else torch.compile(opt.step, backend=backend)
    for k in range(steps):
        if schedule:
            opt.param_groups[0]["lr"] = config["lr"] * (1 + 0.25 * (k // 2))
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x.to(dtype)), y.to(dtype)).backward()
        (compiled if schedule or k else opt.step)()
    return opt


@pytest.mark.parametrize(("cls", "config", "dtype"), LOW_MEMORY, ids=LOW_IDS)
def test_compiled_low_memory_step_has_no_graph_breaks_and_no_warnings(cls, config, dtype):
    model, x, y = _model_and_data()
    model = model.to(dtype)
    opt = cls(model.parameters(), min_8bit_size=0, **config)
    torch.nn.functional.mse_loss(model(x.to(dtype)), y.to(dtype)).backward()
    opt.step()  # state created eagerly, as torch's recipe does
    assert all(opt.precision_of(p) == config["state_precision"] for p in model.parameters())
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. Dynamo's warning on an lru_cache'd function
        explanation = torch._dynamo.explain(opt.step)()
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def _assert_same_state(compiled, eager, *, exact: bool) -> None:
    for (p, state), (q, expected) in zip(compiled.state.items(), eager.state.items(), strict=True):
        assert state.keys() == expected.keys()
        torch.testing.assert_close(p, q, rtol=0 if exact else 1e-6, atol=0 if exact else 1e-6)
        for key, value in state.items():
            if exact or value.dtype != torch.uint8:
                rtol = 0 if exact or key == "step" else 1e-5
                torch.testing.assert_close(value, expected[key], rtol=rtol, atol=rtol * 1e-3)
            else:  # 8-bit codes: an element a float32 ulp from a rounding boundary may differ
                differ = (value != expected[key]).sum().item()
                assert differ <= max(1, value.numel() // 100), (key, differ)


@pytest.mark.parametrize(("cls", "config", "dtype"), LOW_MEMORY, ids=LOW_IDS)
def test_compiled_low_memory_step_is_the_eager_torch_ops_step(cls, config, dtype):
    """The traced graph (aot_eager: the same ops, functionalized) gives the eager torch-ops
    path's numbers bit for bit, counters and random streams included."""
    counters.clear()
    opt = _low_memory_run(cls, config, dtype, backend="aot_eager")
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] <= 3  # state made; state read; lr an input
    reference = _low_memory_run(cls, config, dtype, backend=None)
    assert all(float(s["step"]) == 5 for s in opt.state.values())
    _assert_same_state(opt, reference, exact=True)


def test_inductor_compiled_low_memory_step_is_the_eager_step_within_float32_rounding():
    cls, config, dtype = LOW_MEMORY[1]  # AdamW, 8-bit, AMSGrad: three 8-bit slots
    opt = _low_memory_run(cls, config, dtype, backend="inductor", schedule=False)
    reference = _low_memory_run(cls, config, dtype, backend=None, schedule=False)
    _assert_same_state(opt, reference, exact=False)


def test_inductor_compiled_8bit_step_updates_a_partial_last_block():
    # 1000 elements: three whole 8-bit blocks and one of 232. Inductor (torch 2.13, CPU)
    # miscompiled the per-element gather of the block scales there (garbage past the first
    # block): the compiled step left elements 768-999 unchanged and their scale garbage.
    def run(compiled: bool) -> torch.optim.Optimizer:
        torch._dynamo.reset()
        w = torch.nn.Parameter(torch.randn(1000, generator=torch.Generator().manual_seed(0)))
        opt = adamkit.AdamW([w], lr=0.01, state_precision="8bit", min_8bit_size=0)
        step = torch.compile(opt.step) if compiled else opt.step
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            w.grad = torch.randn(1000, generator=gen)
            step()
        return opt

    compiled, eager = run(True), run(False)
    (w,) = compiled.param_groups[0]["params"]
    start = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    assert (w.detach() != start).all()  # every element moved, the partial block's too
    _assert_same_state(compiled, eager, exact=False)


@pytest.mark.parametrize(
    "change",
    ["amsgrad off", "bf16 -> 8bit", "8bit -> fp32"],
)
def test_a_state_conversion_under_a_compiled_step_is_the_eager_one(change):
    """A change that converts the state (amsgrad switched: with 8-bit state v moves between
    bf16 and 8-bit; state_precision changed) made inside an Inductor-compiled step: the partial
    last block of the converted slot was encoded wrongly there (Inf codes, then NaN params),
    and 8bit -> fp32 raised in torch's fp32 kernel. Conversions now run eagerly."""
    first = {"amsgrad off": "8bit", "bf16 -> 8bit": "bf16", "8bit -> fp32": "8bit"}[change]

    def run(compiled: bool):
        torch._dynamo.reset()
        gen = torch.Generator().manual_seed(0)
        w = torch.nn.Parameter(torch.randn(2800, generator=gen))  # 10 blocks and 240 elements
        opt = adamkit.Adam(
            [w], lr=1e-2, amsgrad=change == "amsgrad off", state_precision=first, min_8bit_size=0
        )
        step = torch.compile(opt.step) if compiled else opt.step
        for k in range(5):
            if k == 3 and change == "amsgrad off":
                opt.param_groups[0]["amsgrad"] = False
            elif k == 3:
                opt.state_precision = change.split(" -> ")[1]
            w.grad = torch.randn(2800, generator=gen)
            step()
        return w.detach(), opt.state[w]

    (w, state), (w_eager, state_eager) = run(True), run(False)
    assert w.isfinite().all()
    torch.testing.assert_close(w, w_eager, rtol=1e-6, atol=1e-6)
    assert state.keys() == state_eager.keys()
    for key in ("exp_avg", "exp_avg_sq"):
        got, want = (lowbit_torch.load(s, key) for s in (state, state_eager))
        assert got.isfinite().all(), key
        # (as _assert_same_state: an 8-bit code a float32 ulp from a rounding boundary may differ)
        differ = ~torch.isclose(got, want, rtol=1e-5, atol=1e-9)
        assert differ.sum().item() <= max(1, got.numel() // 100), (key, differ.sum().item())


@pytest.mark.parametrize("make", ["SGD momentum", "Adafactor foreach mixed dtypes"])
def test_fullgraph_compiled_steps_without_low_memory_state_do_not_break(make):
    """The conform check that runs under torch.compile must not see work in torch-format state
    (SGD's has no step count), and Adafactor's ε1 is not resolved by grouping
    tensors inside the trace (Dynamo's grouping has no dtypes)."""
    torch._dynamo.reset()
    gen = torch.Generator().manual_seed(0)
    if make == "Adafactor foreach mixed dtypes":
        params = [
            torch.nn.Parameter(torch.randn(4, 5)),
            torch.nn.Parameter(torch.randn(6).double()),
        ]
        opt = adamkit.Adafactor(params, foreach=True)
    else:
        params = [torch.nn.Parameter(torch.randn(300, generator=gen))]
        opt = adamkit.SGD(params, lr=0.05, momentum=0.9)
    step = torch.compile(opt.step, backend="eager", fullgraph=True)
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
        step()  # fullgraph: a graph break raises
    assert all(p.isfinite().all() for p in params)


def test_an_eager_step_after_compiled_low_memory_steps_still_converts_the_state():
    """Compiled steps made 8-bit state, but Dynamo did not replay the flag that says so: an
    eager step after opt.state_precision = "fp32" skipped the conversion and fed uint8 codes to
    the fp32 kernel (RuntimeError)."""

    def run(compiled: bool):
        torch._dynamo.reset()
        gen = torch.Generator().manual_seed(0)
        w = torch.nn.Parameter(torch.randn(2800, generator=gen))
        opt = adamkit.Adam([w], lr=1e-2, state_precision="8bit", min_8bit_size=0)
        step = torch.compile(opt.step) if compiled else opt.step
        for _ in range(3):
            w.grad = torch.randn(2800, generator=gen)
            step()
        opt.state_precision = "fp32"
        w.grad = torch.randn(2800, generator=gen)
        opt.step()
        return w.detach(), opt.state[w]

    (w, state), (w_eager, state_eager) = run(True), run(False)
    assert state["exp_avg"].dtype == torch.float32 and "exp_avg_absmax" not in state
    torch.testing.assert_close(w, w_eager, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(state["exp_avg_sq"], state_eager["exp_avg_sq"], rtol=1e-5, atol=1e-9)
