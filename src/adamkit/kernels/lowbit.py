"""The low-memory state step: the fused kernel where it applies, torch ops elsewhere.

``step(spec, group, params, grads, states, precisions, ...)`` updates params whose state is
in a low-memory precision ("8bit", "bf16", or "fp32" with a stochastic or Kahan-rounded half
param; see :mod:`adamkit.optim._lowmem`), and the half params with torch-format state that
:func:`adamkit.kernels.half_params.half_in_place` picks (precision "fp32", rounded to
nearest). Contiguous CPU float32, bfloat16 and float16 tensors take the fused kernel
(:mod:`adamkit.kernels._numba_lowbit`; its calls kept to replay,
:mod:`adamkit.kernels.lowbit_replay`), for every spec: one pass, load → update → store per
block (after a pass that only reads, for a spec's reduction or cautious masking), each slot's
format a load/store adapter (8-bit codes, bf16, or torch's format: float32, or the param's
dtype stored to nearest), parallel over blocks. CUDA tensors take the same pass, cell for
cell, in Triton (:mod:`adamkit.kernels.triton_lowbit`) when the Triton kernels are opted in
(:func:`adamkit.kernels.registry.set_default`; until they have passed the parity suite on a
GPU, CUDA's default is the torch ops path). The others take
:func:`adamkit.kernels.lowbit_torch.step_tensor`. All compute in float32 and give the same
codes (the formats are integer arithmetic on float32 patterns).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..algorithms import AlgorithmSpec
from ..algorithms._spec import FLAG_WIDTH, TENSOR_SLOTS
from ..algorithms.state_formats import (
    ABSMAX_SUFFIX,
    BLOCK,
    KAHAN_KEY,
    ROUNDED_DOWN,
    SLOT_KINDS,
    slot_precision,
)
from . import _batching, wrappers
from ._state_checks import check_state
from .lowbit_replay import Batch, LowMemoryReplay
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
) -> LowMemoryReplay | None:
    """One step of ``spec`` on ``params`` with low-memory ``states``; nothing is written
    unless every gradient and state tensor fits its parameter. DTensor parameters (FSDP2,
    bf16 state) are updated through their local shards, as the fp32 kernels do. A tensor
    listed twice is stepped twice, one step after the other (as torch.optim does).
    ``streams`` holds each tensor's random stream (:func:`tensor_seed`). When the fused CPU
    kernel took every tensor in one call (plain tensors, none listed twice), returns a
    :class:`LowMemoryReplay` of it."""
    lists = (params, grads, states, precisions)
    if stepped_in_rounds(step, spec, group, *lists, param_rounding, streams, fused=fused):
        return None
    padded = padded_scalars(spec.name, torch.float32, hyper_key(spec, group))
    stored = stored_slots(spec, padded.flags)
    if len(params) > 1 and _batching.share_memory(params):
        # views of one storage: one after another, in order, as torch.optim steps them
        checked_local(spec, stored, params, grads, states, precisions, param_rounding)
        for one in zip(params, grads, states, precisions, streams, strict=True):
            p, g, state, precision, stream = ([item] for item in one)
            step(spec, group, p, g, state, precision, param_rounding=param_rounding,
                 streams=stream, fused=fused)  # fmt: skip
        return None
    local = checked_local(spec, stored, params, grads, states, precisions, param_rounding)
    shards = local[0] is not params
    params, grads, states = local
    scalars = (padded.hyper, padded.bias, padded.flags)
    rest = list(range(len(params)))
    replays: list[LowMemoryReplay] = []
    kernels: dict[str, Any] = {}  # the fused kernel that ran, per device type
    if fused and fuses(spec):
        rest = []
        by_device: dict[str, list[int]] = {}
        for i, p in enumerate(params):
            by_device.setdefault(p.device.type, []).append(i)
        for device_type, idx in by_device.items():
            kernel = fused_kernel(device_type)
            if kernel is None:
                rest += idx
                continue
            kernels[device_type] = kernel
            lists = [
                [items[i] for i in idx] for items in (params, grads, states, precisions, streams)
            ]
            if kernel is _numba_fused and len(idx) == len(params):
                taken = _numba_fused(spec, *lists, scalars, param_rounding, replays=replays)
            else:
                taken = kernel(spec, *lists, scalars, param_rounding)
            rest += [idx[j] for j in taken]
    for i in sorted(rest):
        one = ([items[i]] for items in (params, grads, states, precisions, streams))
        kernel = kernels.get(params[i].device.type)
        if kernel is not None and _through_contiguous_copies(kernel, spec, *one, scalars,
                                                             param_rounding):  # fmt: skip
            continue
        step_tensor(
            spec, params[i], grads[i], states[i], scalars,
            precision=precisions[i], param_rounding=param_rounding, stream=streams[i],
        )  # fmt: skip
    return replays[0] if replays and not rest and not shards else None


def _through_contiguous_copies(kernel, spec, params, grads, states, *rest) -> bool:
    """Step one tensor that the fused ``kernel`` did not take because it, its gradient or a
    state slot is not contiguous (channels_last, a transpose, a slice): on contiguous copies
    of those, written back; False (nothing written) if the kernel does not take the copies
    either. The kernel reads elements, 8-bit blocks and random draws in the tensor's logical
    order, as the torch-ops path does: the same bits, for a few more passes over the tensor
    (the torch-ops path takes ~100x the fused step)."""
    (p,), (g,), (state,) = params, grads, states
    like_p = [key for key, value in state.items() if isinstance(value, Tensor)
              and value.shape == p.shape]  # fmt: skip
    if all(t.is_contiguous() for t in (p, g, *(state[key] for key in like_p))):
        return False
    written = (p, *(state[key] for key in like_p))
    if any(torch._debug_has_internal_overlap(t) == 1 for t in written):  # (stride 0)
        return False  # the torch-ops path gives torch's error for an expanded param
    p_copy, g_copy = p.detach().contiguous(), g.contiguous()
    copies = {**state, **{key: state[key].contiguous() for key in like_p}}
    if kernel(spec, [p_copy], [g_copy], [copies], *rest):
        return False
    if p_copy is not p:
        p.detach().copy_(p_copy)
    for key in like_p:
        if copies[key] is not state[key]:
            state[key].copy_(copies[key])
    return True


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


def stored_slots(spec: AlgorithmSpec, flags: Sequence[bool]) -> tuple[bool, ...]:
    """Which of ``spec``'s slots a state holds under a group's (padded) ``flags``."""
    return spec.slots_used(tuple(flags[:FLAG_WIDTH]))


def group_slots(spec: AlgorithmSpec, group: dict[str, Any]) -> tuple[bool, ...]:
    """:func:`stored_slots` by ``group``'s options."""
    return stored_slots(
        spec, padded_scalars(spec.name, torch.float32, hyper_key(spec, group)).flags
    )


def checked_local(spec, stored, params, grads, states, precisions, param_rounding):
    """The local shards of DTensor params, grads and state (:func:`_local_shards`), after
    checking that every gradient and state slot has its param's shape and the format the
    step reads (:func:`~adamkit.kernels._state_checks.check_state`; ``stored``: the spec's
    ``slots_used`` by the group's flags), before anything is written."""
    refuse_overlapping(params)
    params, grads, states = _local_shards(params, grads, states)
    _batching.check_sizes(
        params,
        [list(grads), *([st.get(key) for st in states] for key in spec.tensor_state)],
        ("grad", *spec.tensor_state),
    )
    check_state(spec, stored, params, states, precisions, param_rounding)
    return params, grads, states


def refuse_overlapping(params: Sequence[Tensor]) -> None:
    """Raise RuntimeError, before anything is written, for a param whose elements share
    memory (made by ``expand()``): no step can write it element by element (torch.optim raises
    the same, after writing its moments)."""
    for p in params:
        if not p.is_contiguous() and torch._debug_has_internal_overlap(p) == 1:
            raise RuntimeError(
                "unsupported operation: a parameter of shape "
                f"{tuple(p.shape)} and strides {p.stride()} has elements that share memory "
                "(made by expand()?), which a step cannot write one by one; clone() it "
                "into a parameter of its own. Nothing was updated."
            )


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


def fuses(spec: AlgorithmSpec) -> bool:
    """Whether the fused CPU kernel takes ``spec``: each of its slots has a low-memory kind
    (every spec adamkit has; a spec registered with another slot takes the torch ops)."""
    return bool(spec.tensor_state) and all(key in SLOT_KINDS for key in spec.tensor_state)


_PARAM_MODES = {"nearest": 1, "stochastic": 2, "kahan": 3}  # of a bfloat16 param; float16: +4
_HALF_MODE = {torch.bfloat16: 0, torch.float16: 4}  # (_numba_formats.PARAM_F16)


def _numba_fused(
    spec, params, grads, states, precisions, streams, scalars, param_rounding, replays=None
) -> list[int]:
    """Run the fused CPU kernel on the tensors it takes, batched by (state format, param
    mode); return the indices of the others. If it took them all and ``replays`` is a list,
    append a :class:`LowMemoryReplay` of the call to it."""
    from . import numba_import

    numba_import.prepare()
    from . import _numba_formats, _numba_lowbit  # imports numba: only when used

    batches: dict[tuple[tuple[int, ...], int], tuple[list[int], list[list[int]]]] = {}
    rest = []
    stored = stored_slots(spec, scalars[2])
    for i, (p, g, state) in enumerate(zip(params, grads, states, strict=True)):
        taken = _row(
            spec, p, g, state, precisions[i], spec.scalar_state, streams[i], param_rounding,
            stored,
        )  # fmt: skip
        if taken is None:
            rest.append(i)
            continue
        row, storage = taken
        formats = tuple(getattr(_numba_formats, name) for name in storage)
        mode = 0 if p.dtype == torch.float32 else _PARAM_MODES[param_rounding] + _HALF_MODE[p.dtype]
        idx, rows = batches.setdefault((formats, mode), ([], []))
        idx.append(i)
        rows.append(row)
    made = []
    for (formats, mode), (idx, rows) in batches.items():
        numels = [params[i].numel() for i in idx]
        made.append(
            Batch(formats, mode, idx, np.array(numels, dtype=np.int64),
                   np.array(rows, dtype=np.int64), tuple(-(-n // BLOCK) for n in numels))
        )  # fmt: skip
    replay = LowMemoryReplay(spec, _numba_lowbit.LOOPS[spec.name], tuple(made))
    replay.run(grads, replay.arrays(scalars), read_grads=False)
    if replays is not None and not rest:
        replays.append(replay)
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


# A slot's storage the fused CPU kernel takes (names in _numba_formats): the low-memory
# precisions by their own dtype; "fp32" (torch's format: the param's dtype, or float32) by the
# dtype the optimizer made the state in, stored to nearest as torch's copy_ does.
_STORAGE = {
    ("8bit", torch.uint8): "Q8",
    ("bf16", torch.bfloat16): "BF16",
    ("fp32", torch.float32): "FP32",
    ("fp32", torch.bfloat16): "BF16_NEAREST",
    ("fp32", torch.float16): "FP16_NEAREST",
}
_PARAM_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _row(
    spec, p: Tensor, g: Tensor, state: dict[str, Any], precision: str, aux_key, stream: int,
    param_rounding: str, stored: tuple[bool, ...], device: torch.device | None = None,
) -> tuple[list[int], tuple[str, ...]] | None:  # fmt: skip
    """The fused kernel's address row for one tensor (its random stream last) and the names
    of its slots' storage (``"ABSENT"`` for a slot not stored, and past the spec's last), or
    None if it takes the other path: contiguous float32, bfloat16 or float16 tensors on the
    CPU (on ``device``, for the Triton kernel) (the grad of the param's dtype and shape), the
    state holding the slots ``stored`` (the spec's ``slots_used`` by the group's flags) and no
    other, each in a format the kernel takes, the counters on the host."""
    if p.dtype not in _PARAM_DTYPES or g.dtype != p.dtype or not p.numel():
        return None
    held = [key for key in spec.tensor_state if key in state]
    want = (*stored, *(False,) * TENSOR_SLOTS)[: len(spec.tensor_state)]
    if tuple(key in state for key in spec.tensor_state) != want:
        return None
    if any(state[key] is None for key in held):  # (a checkpoint's SGD buffer: None)
        return None
    comp = state.get(KAHAN_KEY)
    on_device = _is_cpu if device is None else (lambda t: t.device == device)
    kahan = p.dtype != torch.float32 and param_rounding == "kahan"
    slots = [state[key] for key in held]
    tensors = [p, g, *slots] + ([comp] if kahan else [])
    if (
        (kahan and (comp is None or comp.dtype != p.dtype))
        or any(not (on_device(t) and t.is_contiguous()) or t.is_neg() for t in tensors)
        or any(t.shape != p.shape for t in tensors[1:])
    ):
        return None
    step = state.get("step")  # (an uncounted spec's torch-format state has none: markers)
    if step is None:
        return None
    aux = state[aux_key] if aux_key else step
    # (the loops read and write element 0 of each counter: one of another size goes to the
    # torch-ops path, which refuses it before anything is written)
    if not (step.is_cpu and step.dtype == torch.float64 and aux.is_cpu):
        return None
    if step.numel() != 1 or aux.numel() != 1 or (aux_key and aux.dtype != torch.float32):
        return None
    storage, addresses, scales = [], [], []
    for key in spec.tensor_state[:TENSOR_SLOTS]:
        if key not in state:
            storage.append("ABSENT")
            addresses.append(g.data_ptr())  # read by no loop
            scales.append(p.data_ptr())
            continue
        stored_in = slot_precision(precision, key, held)
        name = _STORAGE.get((stored_in, state[key].dtype))
        if name is None:
            return None
        if key in ROUNDED_DOWN and stored_in in ("8bit", "bf16"):  # (8-bit keeps it in bf16)
            if name != "BF16":
                return None
            name = "BF16_DOWN"
        storage.append(name)
        addresses.append(state[key].data_ptr())
        if name == "Q8":
            absmax = state[key + ABSMAX_SUFFIX]
            if not absmax.is_contiguous():
                return None
            scales.append(absmax.data_ptr())
        else:
            scales.append(p.data_ptr())
    while len(storage) < TENSOR_SLOTS:
        storage.append("ABSENT")
        addresses.append(g.data_ptr())
        scales.append(p.data_ptr())
    row = [
        p.data_ptr(), g.data_ptr(), *addresses, *scales,
        (comp if kahan else p).data_ptr(), step.data_ptr(), aux.data_ptr(), stream,
    ]  # fmt: skip
    return row, tuple(storage)


def _is_cpu(t: Tensor) -> bool:
    return t.is_cpu
