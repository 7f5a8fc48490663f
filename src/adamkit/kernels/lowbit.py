"""The low-memory state step: the fused numba kernel where it applies, torch ops elsewhere.

``step(spec, group, params, grads, states, precisions, ...)`` updates params whose state is
in a low-memory precision ("8bit", "bf16", or "fp32" with a stochastic or Kahan-rounded half
param; see :mod:`adamkit.optim._lowmem`). Contiguous CPU float32/bfloat16 tensors with
"8bit" or "bf16" state take the fused kernel (:mod:`adamkit.kernels._numba_lowbit`): one pass,
dequantize → update → requantize per block, parallel over blocks; CUDA tensors take the same
pass in Triton (:mod:`adamkit.kernels.triton_lowbit`) when the Triton kernels are opted in
(:func:`adamkit.kernels.registry.set_default`; until they have passed the parity suite on a
GPU, CUDA's default is the torch ops path). The others take
:func:`adamkit.kernels.lowbit_torch.step_tensor`. Both compute in float32 and give the same
codes (the formats are integer arithmetic on float32 patterns).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..algorithms import AlgorithmSpec
from ..algorithms.state_formats import ABSMAX_SUFFIX, BLOCK, KAHAN_KEY
from . import _batching, wrappers
from ._batching import SPLIT_MIN_ELEMENTS, Threads, chunk_tables, typed
from .lowbit_torch import step_tensor
from .registry import get_default, triton_opted_in
from .spec_kernels import hyper_key, padded_scalars


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
    """One step of ``spec`` on ``params`` with low-memory ``states``; nothing is written
    unless every gradient and state tensor fits its parameter. DTensor parameters (FSDP2,
    bf16 state) are updated through their local shards, as the fp32 kernels do. A tensor
    listed twice is stepped twice, one step after the other (as torch.optim does).
    ``streams`` holds each tensor's random stream (:func:`tensor_seed`)."""
    lists = (params, grads, states, precisions)
    if stepped_in_rounds(step, spec, group, *lists, param_rounding, streams, fused=fused):
        return
    params, grads, states = checked_local(spec, params, grads, states)
    padded = padded_scalars(spec.name, torch.float32, hyper_key(spec, group))
    scalars = (padded.hyper, padded.bias, padded.flags)
    rest = list(range(len(params)))
    if fused and spec.name in FUSED_SPECS:
        rest = []
        by_device: dict[str, list[int]] = {}
        for i, p in enumerate(params):
            by_device.setdefault(p.device.type, []).append(i)
        for device_type, idx in by_device.items():
            kernel = fused_kernel(device_type)
            if kernel is None:
                rest += idx
                continue
            lists = [
                [items[i] for i in idx] for items in (params, grads, states, precisions, streams)
            ]
            rest += [idx[j] for j in kernel(spec, *lists, scalars, param_rounding)]
    for i in sorted(rest):
        step_tensor(
            spec, params[i], grads[i], states[i], scalars,
            precision=precisions[i], param_rounding=param_rounding, stream=streams[i],
        )  # fmt: skip


def stepped_in_rounds(
    step_fn, spec, group, params, grads, states, precisions, param_rounding, streams, **options
) -> bool:
    """If a tensor is listed twice, run ``step_fn`` once per round of ``_rounds`` (so it is
    stepped twice, one step after the other, as torch.optim does) and return True."""
    if len({id(p) for p in params}) == len(params):
        return False
    lists = (params, grads, states, precisions)
    for idx in _rounds(params):
        step_fn(
            spec, group, *([items[i] for i in idx] for items in lists),
            param_rounding=param_rounding, streams=[streams[i] for i in idx], **options,
        )  # fmt: skip
    return True


def checked_local(spec, params, grads, states):
    """The local shards of DTensor params, grads and state (:func:`_local_shards`), after
    checking that every gradient and state slot has its param's shape (before anything is
    written)."""
    params, grads, states = _local_shards(params, grads, states)
    _batching.check_sizes(
        params,
        [list(grads), *([st.get(key) for st in states] for key in spec.tensor_state)],
        ("grad", *spec.tensor_state),
    )
    return params, grads, states


def _rounds(params: Sequence[Tensor]) -> list[list[int]]:
    """Indices of ``params`` in rounds without a repeated tensor: first occurrences, then
    second ones, ..."""
    rounds: list[list[int]] = []
    seen: dict[int, int] = {}
    for i, p in enumerate(params):
        r = seen[id(p)] = seen.get(id(p), -1) + 1
        if r == len(rounds):
            rounds.append([])
        rounds[r].append(i)
    return rounds


def _local_shards(params, grads, states):
    """Plain local tensors for DTensor params, grads and state (the same storage: the kernels
    write through them); the state dicts are copies holding the same counter tensors."""
    dtensor = wrappers._dtensor_type()
    if dtensor is None or not any(isinstance(p, dtensor) for p in params):
        return params, grads, states
    local = wrappers.to_local
    return (
        [local(p) for p in params],
        [local(g) for g in grads],
        [{key: local(value) for key, value in state.items()} for state in states],
    )


FUSED_SPECS = ("adam", "nadam", "radam", "adamax")  # two stored slots each
_PARAM_MODES = {"nearest": 1, "stochastic": 2, "kahan": 3}  # of a bfloat16 param


def _numba_fused(
    spec, params, grads, states, precisions, streams, scalars, param_rounding
) -> list[int]:
    """Run the fused CPU kernel on the tensors it takes, batched by (precision, param mode);
    return the indices of the others."""
    from . import _numba_lowbit  # imports numba: only when used

    serial, parallel = _numba_lowbit.LOOPS[spec.name]
    aux_key = spec.scalar_state
    batches: dict[tuple[int, int], tuple[list[int], list[list[int]]]] = {}
    rest = []
    for i, (p, g, state) in enumerate(zip(params, grads, states, strict=True)):
        row = _row(spec, p, g, state, precisions[i], aux_key, streams[i])
        if row is None:
            rest.append(i)
            continue
        precision = _numba_lowbit.Q8 if precisions[i] == "8bit" else _numba_lowbit.BF16
        mode = 0 if p.dtype == torch.float32 else _PARAM_MODES[param_rounding]
        idx, rows = batches.setdefault((precision, mode), ([], []))
        idx.append(i)
        rows.append(row)
    hyper, bias, flags = scalars
    arrays = (typed(torch.float32, *hyper), _batching.float64_array(*bias))
    flag_array = _batching.flag_array(*flags)
    for (precision, mode), (idx, rows) in batches.items():
        numels = np.array([params[i].numel() for i in idx], dtype=np.int64)
        addresses = np.array(rows, dtype=np.int64)
        blocks = tuple(int(-(-n // BLOCK)) for n in numels)
        tables = chunk_tables(blocks, torch.get_num_threads(), SPLIT_MIN_ELEMENTS // BLOCK, 1)
        args = (addresses, numels, *arrays, flag_array)
        if len(tables.bounds) > 2 and Threads.usable:
            Threads.launch(
                functools.partial(_launch_parallel, parallel, precision, mode),
                functools.partial(_launch_serial, serial, precision, mode),
                tables,
                args,
                work=int(numels.sum()),
            )
        else:
            serial(precision, mode, tables.chunks, *args, True)
    return rest


def _triton_fused(
    spec, params, grads, states, precisions, streams, scalars, param_rounding
) -> list[int]:
    from . import triton_lowbit  # imports triton: only when used

    return triton_lowbit.fused(
        spec, params, grads, states, precisions, streams, scalars, param_rounding
    )


# The fused kernel per device type (tests put the Triton one on "cpu", under its interpreter).
FUSED_KERNELS = {"cpu": _numba_fused, "cuda": _triton_fused}


def fused_kernel(device_type: str):
    """The fused low-memory kernel for tensors on ``device_type``, or None (the torch ops path),
    as :func:`adamkit.kernels.registry.set_default` chose: numba on the CPU; on CUDA the
    Triton pass only when opted in."""
    if triton_opted_in(device_type):
        return _triton_fused
    return FUSED_KERNELS.get(device_type) if get_default(device_type) == "numba" else None


def _launch_parallel(parallel, precision, mode, chunks, bounds, *args) -> None:
    parallel(precision, mode, chunks, bounds, *args)


def _launch_serial(serial, precision, mode, chunks, *args) -> None:
    serial(precision, mode, chunks, *args, True)


def _row(
    spec, p: Tensor, g: Tensor, state: dict[str, Any], precision: str, aux_key, stream: int
) -> list[int] | None:
    """The fused kernel's address row for one tensor (its random stream last), or None if it
    takes the other path: contiguous CPU float32/bfloat16 tensors, two stored slots, the
    counters on the host."""
    if precision not in ("8bit", "bf16") or p.dtype not in (torch.float32, torch.bfloat16):
        return None
    keys = [key for key in spec.tensor_state if key in state]
    if len(keys) != 2 or not p.numel():
        return None
    tensors = [p, g, *(state[key] for key in keys)]
    if (
        any(not (t.is_cpu and t.is_contiguous()) or t.is_neg() for t in tensors)
        or g.dtype != p.dtype
    ):
        return None
    step = state["step"]
    aux = state[aux_key] if aux_key else step
    if not (step.is_cpu and step.dtype == torch.float64 and aux.is_cpu):
        return None
    if aux_key and aux.dtype != torch.float32:
        return None
    if precision == "8bit":
        scales = [state[key + ABSMAX_SUFFIX].data_ptr() for key in keys]
    else:
        scales = [p.data_ptr(), p.data_ptr()]
    comp = state.get(KAHAN_KEY)
    return [
        p.data_ptr(), g.data_ptr(), *(state[key].data_ptr() for key in keys), *scales,
        (comp if comp is not None else p).data_ptr(), step.data_ptr(), aux.data_ptr(), stream,
    ]  # fmt: skip
