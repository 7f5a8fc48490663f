"""``adamkit check``: the parity suite's core cases on the devices of this machine.

Every optimizer (with its key options) × state precision × backend × device is run a few steps
on small tensors and compared with ``torch.optim``'s for-loop on the same device:

* fp32 state: the parameters and every state tensor after :data:`STEPS` steps, as the largest
  difference relative to the tensor's scale (max |ours − torch| / max |torch|). The for-loop
  backend must be bitwise (it is torch's operation order); the others (foreach, fused: numba on
  the CPU, torch's fused or adamkit's Triton kernels on CUDA) within :data:`FP32_TOL`.
* bf16 and 8-bit state (the Adam family), bitsandbytes' method: before each step a float32
  torch optimizer is loaded with the low-memory optimizer's dequantized state and parameters,
  so one step's error is measured, not a drift. The update must match torch's to
  :data:`UPDATE_TOL` (its inputs are the stored values), and the stored moments must lie within
  the format's bound of torch's float32 moments (:data:`STATE_TOL`, relative norm).

A kernel becomes a device's default only after these pass on that device (docs/triton.md).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from . import optim
from .kernels import lowbit, registry

STEPS = 5
FP32_TOL = 1e-5
UPDATE_TOL = 1e-5
# Relative norm of the stored moments against float32 ones. 8-bit: codes at most 1/8 of a
# value apart, stochastic rounding errs by an RMS of (1/8)/√6 = 5.1% (tests/optim/
# test_low_memory.py derives it); bf16: one bfloat16 ulp, 2^-7 relative at most.
STATE_TOL = {"8bit": 0.051, "bf16": 2.0**-7}
PRECISIONS = ("fp32", "bf16", "8bit")
BACKENDS = ("forloop", "foreach", "fused", "triton")

# (adamkit class name, torch class name, option sets): the parity suite's key options.
OPTIMIZERS: tuple[tuple[str, str, tuple[dict[str, Any], ...]], ...] = (
    ("Adam", "Adam", ({}, {"amsgrad": True, "weight_decay": 0.1}, {"maximize": True})),
    ("AdamW", "AdamW", ({"weight_decay": 0.1}, {"amsgrad": True})),
    (
        "SGD",
        "SGD",
        (
            {},
            {"momentum": 0.9},
            {"momentum": 0.9, "dampening": 0.5},
            {"momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
        ),
    ),
    ("RMSprop", "RMSprop", ({}, {"centered": True, "momentum": 0.9}, {"weight_decay": 0.1})),
    ("NAdam", "NAdam", ({}, {"weight_decay": 0.1, "decoupled_weight_decay": True})),
    ("RAdam", "RAdam", ({}, {"weight_decay": 0.1})),
    ("Adamax", "Adamax", ({}, {"weight_decay": 0.1})),
)
LOW_MEMORY = ("Adam", "AdamW", "NAdam", "RAdam", "Adamax")  # take state_precision
SHAPES = ((7, 13), (1031,), (1,), ())
_LR = {"SGD": 0.05, "RMSprop": 0.01}
_KERNEL_NAMES = {"fused": "numba", "torch_fused": "torch-fused", "triton": "triton"}


@dataclass
class Result:
    """One case: what ran, the largest errors found, and whether they are within tolerance."""

    optimizer: str
    options: str
    precision: str
    backend: str
    device: str
    kernel: str  # what actually ran: forloop, foreach, numba, torch-fused, triton, torch-ops…
    param_error: float
    param_tol: float
    state_error: float
    state_tol: float
    passed: bool
    note: str = ""


def devices() -> list[str]:
    """The device types present: the CPU always, CUDA when available."""
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def run(
    *,
    optimizers: Sequence[str] | None = None,
    precisions: Sequence[str] = PRECISIONS,
    backends: Sequence[str] | None = None,
    device_types: Sequence[str] | None = None,
    triton_interpret: bool = False,
) -> list[Result]:
    """Run the cases; ``None`` means all. The Triton backend runs on CUDA, and on the CPU only
    with ``triton_interpret`` (Triton's interpreter must have been chosen, ``TRITON_INTERPRET=1``,
    before triton was imported)."""
    results = []
    for device in device_types or devices():
        for backend in backends or BACKENDS:
            if backend == "triton" and not _triton_runs(device, triton_interpret):
                continue
            for name, torch_name, option_sets in OPTIMIZERS:
                if optimizers and name not in optimizers:
                    continue
                for precision in precisions:
                    if precision != "fp32" and (name not in LOW_MEMORY or backend == "foreach"):
                        continue  # low-memory state: fused=False (torch ops) or fused
                    for options in option_sets:
                        with _kernels(device, backend):
                            results.append(
                                _case(name, torch_name, options, precision, backend, device)
                            )
    return results


def _triton_runs(device: str, interpret: bool) -> bool:
    if not registry.triton_available():
        return False
    return device == "cuda" or (device == "cpu" and interpret)


@contextlib.contextmanager
def _kernels(device: str, backend: str) -> Iterator[None]:
    """The Triton backend is ``fused`` with Triton chosen for the device (set back after)."""
    if backend != "triton":
        yield
        return
    before = registry.get_default(device)
    registry.set_default(device, "triton")
    try:
        yield
    finally:
        registry.set_default(device, before)


def _flags(backend: str, precision: str) -> dict[str, Any]:
    if precision != "fp32":  # low-memory state: the torch ops path or the fused kernel
        return {"fused": False} if backend == "forloop" else {"fused": True}
    return {
        "forloop": {"foreach": False},
        "foreach": {"foreach": True},
        "fused": {"fused": True},  # dropped for a class without it: the default is fused
        "triton": {"fused": True},
    }[backend]


def _kernel_name(algorithm: str, flags: dict[str, Any], precision: str, device: str) -> str:
    if precision != "fp32":
        if flags.get("fused") is False or lowbit.fused_kernel(device) is None:
            return "torch-ops"
        return "triton" if registry.triton_opted_in(device) else "numba"
    name = registry.choose_backend(
        foreach=flags.get("foreach"), fused=flags.get("fused"), differentiable=False
    )
    record = registry.resolve(algorithm, name, device)
    return _KERNEL_NAMES.get(record.name, record.name)


def _case(
    name: str, torch_name: str, options: dict[str, Any], precision: str, backend: str, device: str
) -> Result:
    import adamkit

    ours_cls = getattr(adamkit, name)
    theirs_cls = getattr(torch.optim, torch_name)
    config = {"lr": _LR.get(name, 1e-2), **options}
    flags = _flags(backend, precision)
    if "fused" not in inspect.signature(ours_cls).parameters:
        flags.pop("fused", None)  # an optimizer without the flag: neither set means fused
    kernel = _kernel_name(ours_cls.algorithm, flags, precision, device)
    head = (name, _describe(options), precision, backend, device, kernel)
    try:
        if precision == "fp32":
            errors = _fp32_errors(ours_cls, theirs_cls, config, flags, device)
            tols = (0.0 if backend == "forloop" else FP32_TOL,) * 2
        else:
            low = {"state_precision": precision, "min_8bit_size": 0, **flags}
            errors = _low_memory_errors(ours_cls, theirs_cls, config, low, device)
            tols = (UPDATE_TOL, STATE_TOL[precision])
    except Exception as error:  # a case that raises fails, with the reason
        return Result(*head, float("nan"), 0.0, float("nan"), 0.0, False, repr(error)[:200])
    passed = all(e <= t for e, t in zip(errors, tols, strict=True))  # NaN fails
    return Result(*head, errors[0], tols[0], errors[1], tols[1], passed)


def _describe(options: dict[str, Any]) -> str:
    return ", ".join(k if v is True else f"{k}={v:g}" for k, v in options.items()) or "defaults"


def _tensors(device: str, seed: int) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen).to(device) for s in SHAPES]
    plan = [[torch.randn(s, generator=gen).to(device) for s in SHAPES] for _ in range(STEPS)]
    return params, plan


def _scaled_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| relative to b's scale (max |b|, at least 1e-30); 0 for equal tensors."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if a.shape != b.shape:
        return float("inf")
    if not b.numel() or torch.equal(a, b):
        return 0.0
    scale = max(b.abs().max().item(), 1e-30)
    return (a - b).abs().max().item() / scale


def _fp32_errors(ours_cls, theirs_cls, config, flags, device) -> tuple[float, float]:
    params0, plan = _tensors(device, seed=0)
    runs = []
    for cls, kw in ((ours_cls, flags), (theirs_cls, {"foreach": False})):
        params = [torch.nn.Parameter(p.clone()) for p in params0]
        opt = cls(params, **config, **kw)
        for grads in plan:
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()
        runs.append((params, opt))
    (ours, o_ours), (theirs, o_theirs) = runs
    param_error = max(_scaled_error(a, b) for a, b in zip(ours, theirs, strict=True))
    state_error = 0.0
    for a, b in zip(ours, theirs, strict=True):
        for key, value in o_theirs.state[b].items():
            if torch.is_tensor(value) and key != "step":
                state_error = max(state_error, _scaled_error(o_ours.state[a][key], value))
            elif key == "step" and float(o_ours.state[a][key]) != float(value):
                state_error = float("inf")
    return param_error, state_error


def _relative_norm(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    norm = b.norm().item()
    return (a - b).norm().item() / norm if norm else float((a - b).norm().item() != 0) * 1e30


def _low_memory_errors(ours_cls, theirs_cls, config, low, device) -> tuple[float, float]:
    """One step's error at a time: a float32 torch optimizer is loaded with the low-memory
    state (dequantized) and parameters before each step."""
    params0, plan = _tensors(device, seed=1)
    params = [torch.nn.Parameter(p.clone()) for p in params0]
    opt = ours_cls(params, **config, **low)
    update_error = state_error = 0.0
    for t, grads in enumerate(plan):
        twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
        exact = theirs_cls(twins, **config, foreach=False)
        if t:
            full = copy.deepcopy(optim.dequantized_state_dict(opt.state_dict()))
            for group in full["param_groups"]:  # torch's for-loop, whatever ours ran
                group.update(foreach=False, **({"fused": None} if "fused" in group else {}))
            exact.load_state_dict(full)
        before = [p.detach().clone() for p in params]
        for p, q, g in zip(params, twins, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        exact.step()
        stored = optim.dequantized_state_dict(opt.state_dict())["state"]
        for p, q, p0 in zip(params, twins, before, strict=True):
            update_error = max(update_error, _relative_norm(p - p0, q - p0))
        # Each moment over all tensors at once: the formats' bound is an RMS over elements.
        for key, want in exact.state[twins[0]].items():
            if torch.is_tensor(want) and want.dim() and key != "step":
                got = torch.cat([stored[i][key].reshape(-1) for i in range(len(params))])
                exact_values = torch.cat([exact.state[q][key].reshape(-1) for q in twins])
                state_error = max(state_error, _relative_norm(got, exact_values))
    return update_error, state_error


# ----------------------------------------------------------------------------- output


def table(results: Sequence[Result]) -> str:
    """The results as a text table, one row per case, and a summary line."""
    header = ("optimizer", "options", "state", "backend", "device", "kernel",
              "param err", "tol", "state err", "tol", "result")  # fmt: skip
    rows = [header]
    for r in results:
        verdict = ("PASS" if r.passed else "FAIL") + (f" {r.note}" if r.note else "")
        rows.append((
            r.optimizer, r.options, r.precision, r.backend, r.device, r.kernel,
            _number(r.param_error), _number(r.param_tol), _number(r.state_error),
            _number(r.state_tol), verdict,
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
             for row in rows]  # fmt: skip
    lines.insert(1, "-" * len(lines[0]))
    failed = sum(not r.passed for r in results)
    lines.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(lines)


def _number(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def environment() -> dict[str, Any]:
    """What the results were measured on."""
    import platform

    import adamkit

    info: dict[str, Any] = {
        "adamkit": adamkit.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cuda_kernels": registry.get_default("cuda"),
        "triton": registry.triton_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def write_json(results: Sequence[Result], path: Path, seconds: float) -> None:
    data = {
        "environment": environment(),
        "seconds": round(seconds, 3),
        "passed": all(r.passed for r in results),
        "results": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n")


def main(
    *,
    optimizers: Sequence[str] | None = None,
    backends: Sequence[str] | None = None,
    device_types: Sequence[str] | None = None,
    json_path: Path | None = None,
    triton_interpret: bool = False,
) -> int:
    """Run, print the table, write the JSON; 0 when every case passed, else 1."""
    start = time.perf_counter()
    results = run(
        optimizers=optimizers,
        backends=backends,
        device_types=device_types,
        triton_interpret=triton_interpret,
    )
    seconds = time.perf_counter() - start
    print(table(results))
    where = ", ".join(device_types or devices())
    print(f"{seconds:.1f} s on {where}; CUDA default kernels: {registry.get_default('cuda')}")
    if json_path is not None:
        write_json(results, json_path, seconds)
        print(f"JSON written to {json_path}")
    return 0 if results and all(r.passed for r in results) else 1
