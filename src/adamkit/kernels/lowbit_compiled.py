"""The low-memory step as ``torch.compile(opt.step)`` traces it: torch ops only, no graph breaks.

:func:`step` is :func:`adamkit.kernels.lowbit.step` for a step Dynamo traces (the optimizers
route to it under :func:`torch.compiler.is_compiling`). Dynamo cannot trace a numba call, and
the eager torch-ops path (:func:`adamkit.kernels.lowbit_torch.step_tensor`) reads the step
counters on the host (``float(state["step"])``: a sync that breaks the graph) and looks its
functions and scalars up in ``lru_cache``\\ s (which Dynamo warns about). Here instead:

* the spec's functions are recompiled with torch ops once, at import, into a plain dict;
* the group's scalars are built in the trace as float32 0-d tensors (a float32 rounding of a
  Python float is a tensor op; a learning rate a scheduler changes becomes a graph input
  after one recompile, as in torch's own compiled step: see :func:`group_scalars`);
* the step counters stay tensors: the new count, the per-tensor scalars and the random
  stream's seed (:func:`~adamkit.algorithms.state_formats.tensor_seed`, in int64 arithmetic
  whose low 32 bits are the same) are computed with tensor ops and written back in place
  (by a foreach copy: see :func:`step_tensor`).

The arithmetic on the elements is step_tensor's own (dequantize, the spec's element in
float32, stochastic rounding, quantize): the same numbers as the eager torch-ops path (within
float32 rounding where Inductor fuses differently).
"""

from __future__ import annotations

import types
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..algorithms import SPECS, AlgorithmSpec, GroupScalars
from ..algorithms._spec import BIAS_WIDTH, FLAG_WIDTH, HYPER_WIDTH, recompiled
from ..algorithms._torch_ops import torch_compiled
from . import _whole_tensor
from .lowbit import checked_local, stepped_in_rounds
from .lowbit_torch import update_and_store
from .spec_kernels import cautious

_U32 = 0xFFFFFFFF


class _Float32:
    """Stands in for the NumPy dtype a spec's ``group_scalars`` takes, with the device the
    scalars' tensors go to."""

    def __init__(self, device: torch.device) -> None:
        self.device = device


def _as_float32(dtype: _Float32, value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value.to(device=dtype.device, dtype=torch.float32)
    return torch.tensor(value, dtype=torch.float32, device=dtype.device)


def _rounded(dtype: _Float32, *values: Any) -> tuple[Tensor, ...]:
    """:func:`adamkit.algorithms._spec.rounded` in float32, as tensors."""
    return tuple(_as_float32(dtype, v) for v in values)


def _complement(dtype: _Float32, weight: Any) -> Tensor:
    """:func:`adamkit.algorithms._spec.complement`: 1 - weight in float32, after rounding."""
    return 1.0 - _as_float32(dtype, weight)


def _float(value: Any) -> Any:
    """``float`` that leaves a tensor a tensor (no host read)."""
    return value if isinstance(value, Tensor) else float(value)


def _tensor_group_scalars(spec: AlgorithmSpec) -> Any:
    """The spec's ``group_scalars`` with float32 rounding as tensor ops, and ``float`` of a
    tensor hyperparameter leaving it a tensor. Its globals have no ``__name__``: Dynamo then
    reads them from this namespace (by the dict's id), not from the spec's module, which has
    neither these functions nor a ``float`` of its own."""
    function = recompiled(
        spec.group_scalars, {"rounded": _rounded, "complement": _complement, "float": _float}
    )
    namespace = function.__globals__
    del namespace["__name__"]
    return types.FunctionType(function.__code__, namespace, function.__name__)


class _Functions:
    """A spec's functions with torch ops: what the traced step calls."""

    def __init__(self, spec: AlgorithmSpec) -> None:
        self.advance = torch_compiled(spec.advance)
        self.tensor_scalars = torch_compiled(spec.tensor_scalars)
        self.group_scalars = _tensor_group_scalars(spec)
        _whole_tensor.prepare(spec)


# Built at import, outside any trace: a plain dict lookup in the trace.
_FUNCTIONS: dict[str, _Functions] = {name: _Functions(spec) for name, spec in SPECS.items()}


def group_scalars(spec: AlgorithmSpec, group: dict[str, Any], device: torch.device) -> GroupScalars:
    """The group's (hyper, bias, flags), padded as :func:`~adamkit.kernels.spec_kernels.
    padded_scalars` pads them: hyper as float32 0-d tensors on ``device``, bias as float64
    (numbers and 0-d tensors), flags as booleans.

    The learning rate enters as a float64 0-d tensor, so that what is computed from it (α·λ,
    α/(1-β1^t)) is tensor arithmetic: once a scheduler has changed it, Dynamo makes it a
    symbolic float, and its pass that turns those into tensors (torch 2.13) gives up on
    compound expressions such as 1 - α·λ and specializes them instead, a recompile for every
    new α. (A tensor ``lr`` stays a tensor, never read on the host.)"""
    # (1.0·α exactly; a product, not torch.tensor(α), which that pass also specializes)
    group = {**group, "lr": torch.ones((), dtype=torch.float64) * group["lr"]}
    s = _FUNCTIONS[spec.name].group_scalars(group, _Float32(device))
    return GroupScalars(
        s.hyper + (0.0,) * (HYPER_WIDTH - len(s.hyper)),
        s.bias + (0.0,) * (BIAS_WIDTH - len(s.bias)),
        tuple(bool(f) for f in s.flags)
        + (False,) * (FLAG_WIDTH - len(s.flags))
        + (cautious(group),),
    )


def step(
    spec: AlgorithmSpec,
    group: dict[str, Any],
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    states: Sequence[dict[str, Any]],
    precisions: Sequence[str],
    *,
    param_rounding: str,
    streams: Sequence[int],
    fused: bool = True,
) -> None:
    """:func:`adamkit.kernels.lowbit.step`, traceable (``fused`` is accepted and ignored:
    every tensor takes the torch ops)."""
    lists = (params, grads, states, precisions)
    if stepped_in_rounds(step, spec, group, *lists, param_rounding, streams):
        return
    scalars: dict[torch.device, GroupScalars] = {}
    if params:  # (the flags say which slots the state holds: the same on every device)
        scalars[params[0].device] = group_scalars(spec, group, params[0].device)
        stored = spec.slots_used(scalars[params[0].device].flags[:FLAG_WIDTH])
        local = checked_local(spec, stored, params, grads, states, precisions, param_rounding)
        params, grads, states = local
    for i, p in enumerate(params):
        if p.device not in scalars:
            scalars[p.device] = group_scalars(spec, group, p.device)
        step_tensor(
            spec, p, grads[i], states[i], scalars[p.device],
            precision=precisions[i], param_rounding=param_rounding, stream=streams[i],
        )  # fmt: skip


def seed_tensor(step: Tensor, numel: int, stream: int) -> Tensor:
    """:func:`~adamkit.algorithms.state_formats.tensor_seed` of a step count tensor, as an
    int64 0-d tensor: int64 products wrap, but their low 32 bits are the exact ones."""
    rest = (int(numel) * 0x632BE5AB ^ int(stream) * 0x2545F491) & _U32
    return ((step.to(torch.int64) * 0x9E3779B9) ^ rest) & _U32


def step_tensor(
    spec: AlgorithmSpec,
    p: Tensor,
    g: Tensor,
    state: dict[str, Any],
    scalars: GroupScalars,
    *,
    precision: str,
    param_rounding: str,
    stream: int,
) -> None:
    """:func:`adamkit.kernels.lowbit_torch.step_tensor` with the counters as tensors."""
    functions = _FUNCTIONS[spec.name]
    hyper, bias, flags = scalars
    aux_key = spec.scalar_state
    step, aux = functions.advance(state["step"], state[aux_key] if aux_key else 0.0, bias)
    # tensor_scalars in float64, as the other kernels and torch compute them (NAdam's float32
    # mu_product is a Python float there: 1 - Π_t and Π_t·μ_{t+1} are float64)
    aux64 = aux.to(torch.float64) if isinstance(aux, Tensor) else aux
    k = _rounded(_Float32(p.device), *functions.tensor_scalars(step, aux64, bias))
    update_and_store(
        spec.tensor_state, _whole_tensor.stepper(spec, flags), p, g, state, (hyper, k, flags),
        precision=precision, param_rounding=param_rounding,
        seed=seed_tensor(step, p.numel(), stream).to(p.device),
    )  # fmt: skip
    # A foreach copy, not copy_: Dynamo takes a 0-d float64 CPU tensor for a Python float
    # (torch 2.13), and when its pass turning such floats back into tensors restarts the
    # analysis, a plain copy_ (or add_) into the counter is dropped from the graph.
    counters, values = [state["step"]], [step]
    if aux_key:
        counters.append(state[aux_key])
        values.append(aux)
    torch._foreach_copy_(counters, values)
