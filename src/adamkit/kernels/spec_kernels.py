"""The kernels of an algorithm spec, for every backend: built from the spec, not written out.

Every spec kernel has one signature: ``kernel(params, grads, *state_lists, steps, scalar_state,
*, group)``, the state lists in the order of the spec's ``tensor_state``
and ``scalar_state`` an empty list when the spec has none; ``group`` is the param group
(hyperparameters by torch's names).

* ``forloop`` / ``foreach``: torch's own functional update (``torch.optim.nadam.nadam`` …),
  so results equal torch.optim's bit for bit, differentiable and capturable included. A spec
  that torch does not have (Lion) runs its element with torch ops, one tensor at a time
  (:func:`elementwise_torch`), for both.
* ``fused`` on CPU: the generic numba driver (:mod:`adamkit.kernels._numba_driver`) over the
  tensors it can take by address, the for-loop kernel for the rest (see
  :func:`adamkit.kernels._batching.split`).
* ``fused`` on CUDA / ``triton``: the generic Triton driver
  (:mod:`adamkit.kernels.triton_driver`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..algorithms import SPECS, AlgorithmSpec, GroupScalars
from ..algorithms._spec import BIAS_WIDTH, FLAG_WIDTH, HYPER_WIDTH, TENSOR_SLOTS, rounded
from . import _whole_tensor
from ._batching import (
    COUNTER,
    FLOAT32_SCALAR,
    LIKE_PARAM,
    READ_ONLY,
    check_sizes,
    flag_array,
    split,
)
from ._tensors import LIKE, NUMPY_DTYPES, add_one, pick, step_arithmetic_dtype
from ._threads import ChunkTables, chunk_tables, launch_loops, run_loops

Kernel = Callable[..., None]


def torch_order(spec: AlgorithmSpec, *, foreach: bool) -> Kernel:
    """The for-loop (``foreach=False``) or foreach kernel: torch's functional update."""
    if spec.torch_functional is None:
        return elementwise_torch(spec)
    # torch's functional updates know no cautious masking: such a group takes the torch ops
    with_options = elementwise_torch(spec) if spec.cautious else None

    def kernel(
        params: Sequence[Tensor], grads: Sequence[Tensor], *lists: Any, group: dict[str, Any],
    ) -> None:  # fmt: skip
        if with_options is not None and cautious(group):
            return with_options(params, grads, *lists, group=group)
        *states, steps, scalar_state = lists
        capturable = bool(group.get("capturable", False))
        differentiable = bool(group.get("differentiable", False))
        counters = list(steps)
        # torch's capturable/differentiable paths compute the bias corrections from the step
        # tensor, in its dtype: give them torch's, and keep adamkit's float64 count here.
        arithmetic = step_arithmetic_dtype()
        retyped = (
            spec.counted  # (SGD's markers are not counters: torch's SGD never reads them)
            and (capturable or differentiable)
            and any(s.dtype != arithmetic for s in steps)
        )
        if retyped:
            counters = [s.to(arithmetic) for s in steps]
        lr = group["lr"]
        # torch's foreach path refuses a tensor lr unless capturable; its for-loop takes it
        tensor_lr = isinstance(lr, Tensor) and not capturable
        spec.torch_functional(
            # the state lists themselves: torch's SGD may put a buffer it starts into one
            list(params), list(grads), [s if isinstance(s, list) else list(s) for s in states],
            counters,
            list(scalar_state), group, foreach=foreach and not tensor_lr, lr=lr,
            capturable=capturable,
            differentiable=differentiable, has_complex=any(p.is_complex() for p in params),
        )  # fmt: skip
        if retyped:
            add_one(list(steps))

    kernel.__name__ = f"{spec.name}_{'foreach' if foreach else 'forloop'}"
    return kernel


def elementwise_torch(spec: AlgorithmSpec) -> Kernel:
    """The for-loop kernel of a spec torch does not have: per tensor, the spec's counters on
    the host, then its element on the whole tensor with torch ops (the same code the fused
    kernels compile, with the same scalars rounded to the data's dtype), then the param and
    the stored slots copied back. It serves ``foreach=True`` too."""
    stand_ins = TENSOR_SLOTS - len(spec.tensor_state)

    def kernel(
        params: Sequence[Tensor], grads: Sequence[Tensor], *lists: Any, group: dict[str, Any],
    ) -> None:  # fmt: skip
        *states, steps, scalar_state = lists
        key = hyper_key(spec, group)
        mode = spec.reduction_mode(cautious(group))
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            slots = [s[i] if len(s) else None for s in states]
            p, g, *slots = (
                torch.view_as_real(t) if t is not None and t.is_complex() else t
                for t in (p, g, *slots)
            )
            scalars = padded_scalars(spec.name, p.dtype, key)
            step = float(steps[i])
            aux = float(scalar_state[i]) if scalar_state else 0.0
            if spec.counted:
                step, aux = spec.advance(step, aux, scalars.bias)
                # a Python float, as the fused kernels see it (NAdam's advance returns a NumPy
                # float32, which NumPy 2 would keep tensor_scalars' products in)
                aux = float(aux)
            k = spec.tensor_scalars(step, aux, scalars.bias)
            k = rounded(np.dtype(NUMPY_DTYPES[p.dtype]), *k)  # as the fused kernels' table
            inputs = [g if s is None else s for s in slots] + [g] * stand_ins
            new_p, *new_slots = _whole_tensor.step(
                spec, p, g, inputs, scalars.hyper, k, scalars.flags, mode
            )
            p.copy_(new_p)
            for slot, value in zip(slots, new_slots, strict=False):
                if slot is not None:
                    slot.copy_(value)
            if spec.counted:
                steps[i].fill_(step)
                if scalar_state:
                    scalar_state[i].fill_(float(aux))

    kernel.__name__ = f"{spec.name}_elementwise_torch"
    return kernel


@functools.lru_cache(maxsize=256)
def padded_scalars(spec_name: str, dtype: torch.dtype, key: tuple[Any, ...]) -> GroupScalars:
    """A group's scalars (the spec's ``group_scalars`` for ``dtype``), padded to the drivers'
    widths; cached by the group's hyperparameters (:func:`hyper_key`)."""
    group = dict(key)
    s = SPECS[spec_name].group_scalars(group, np.dtype(NUMPY_DTYPES[dtype]))
    return GroupScalars(
        s.hyper + (0.0,) * (HYPER_WIDTH - len(s.hyper)),
        s.bias + (0.0,) * (BIAS_WIDTH - len(s.bias)),
        # the spec's flags, then the engine's (at CAUTIOUS_FLAG)
        tuple(bool(f) for f in s.flags)
        + (False,) * (FLAG_WIDTH - len(s.flags))
        + (cautious(group),),
    )


def cautious(group: Mapping[str, Any]) -> bool:
    """Whether ``group`` asks for cautious masking (a group key only where it was given)."""
    return bool(group.get("cautious", False))


@functools.lru_cache(maxsize=256)
def loop_arrays(
    spec_name: str, dtype: torch.dtype, key: tuple[Any, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (hyper, bias, flags) arrays of a group for the numba driver (cached by the group's
    hyperparameters: :func:`hyper_key`)."""
    return new_loop_arrays(spec_name, dtype, key)


def new_loop_arrays(
    spec_name: str, dtype: torch.dtype, key: tuple[Any, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`loop_arrays` made afresh, for a key not likely to come again (a step plan's
    moved hyperparameters or group state), which the cache would only evict others for."""
    return scalar_arrays(padded_scalars.__wrapped__(spec_name, dtype, key), dtype)


def scalar_arrays(s: GroupScalars, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded scalars as the loops' (hyper, bias, flags) arrays, hyper in the data's dtype.
    (Not from caches keyed by the values: -0.0 == 0.0 there, and their steps differ in the
    sign of zeros.)"""
    return (
        np.array(s.hyper, dtype=NUMPY_DTYPES[dtype]),
        np.array(s.bias, dtype=np.float64),
        flag_array(*s.flags),
    )


def hyper_key(spec: AlgorithmSpec, group: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """The group's hyperparameters and group state as a hashable key (tensor values as
    floats)."""
    return hyper_key_and_narrow(spec, group)[0]


def hyper_key_and_narrow(
    spec: AlgorithmSpec, group: dict[str, Any]
) -> tuple[tuple[tuple[str, Any], ...], bool]:
    """:func:`hyper_key`, and whether a hyperparameter is a tensor of a narrower dtype than
    float64 (a float32 ``lr`` or ``betas``): torch computes the step's scalars in that dtype,
    which the loops' float64 scalars would not reproduce on float64 params."""
    key = []
    narrow = False
    float64 = torch.float64
    for h in spec.hyperparameters:
        value = group[h.name]
        if isinstance(value, Tensor):  # betas may be one tensor of two (torch takes it)
            narrow = narrow or value.dtype is not float64
            value = value.item() if value.numel() == 1 else tuple(value.tolist())
        elif isinstance(value, (tuple, list)):
            items = []
            for v in value:
                if isinstance(v, Tensor):
                    narrow = narrow or v.dtype is not float64
                    v = v.item()
                items.append(v)
            value = tuple(items)
        key.append((h.name, value))
    key.extend(_option_items(spec, group))
    key.extend((name, group[name]) for name, _ in spec.group_state)  # (advanced every step)
    # -0.0 == 0.0: a cache would hand a key with -0.0 the scalars made for 0.0, whose step
    # differs in the sign of zeros (torch's lr=-0.0 step is the -0.0 one)
    signed = tuple(name for name, value in key if _holds_negative_zero(value))
    if signed:
        key.append(("negative zeros", signed))
    return tuple(key), narrow


def _holds_negative_zero(value: Any) -> bool:
    if isinstance(value, tuple):
        return any(map(_holds_negative_zero, value))
    return isinstance(value, (float, np.floating)) and value == 0 and math.copysign(1.0, value) < 0


def plain_hyper_key(
    spec: AlgorithmSpec, group: dict[str, Any], values: tuple[Any, ...]
) -> tuple[tuple[str, Any], ...]:
    """:func:`hyper_key` of ``group`` whose hyperparameters and then group state hold
    ``values``, each a plain number or a tuple of them (a step plan has checked): the key
    holds them as they are, without hyper_key's look at each."""
    n = len(spec.hyperparameters)
    names = (*(h.name for h in spec.hyperparameters), *(name for name, _ in spec.group_state))
    items = tuple(zip(names, values, strict=True))
    return (*items[:n], *_option_items(spec, group), *items[n:])


def _option_items(spec: AlgorithmSpec, group: dict[str, Any]) -> list[tuple[str, Any]]:
    """The key's items for the options every spec's scalars may read."""
    items = [("maximize", bool(group.get("maximize", False)))]
    if spec.cautious:
        items.append(("cautious", cautious(group)))
    items.extend((name, group.get(name)) for name in spec.host_scalars)
    return items


class ReplayBatch(NamedTuple):
    """The params of one dtype in a :class:`Replay`: their positions in the call, element
    counts, address table (one row per tensor) and chunk tables by thread count."""

    dtype: torch.dtype
    idx: list[int]
    numels: tuple[int, ...]
    addresses: np.ndarray
    tables: dict[int, ChunkTables]


class Replay(NamedTuple):
    """A fused CPU step's loop calls, to run again on the same tensors with new gradients
    (:mod:`adamkit.optim._step_plan` decides when): per dtype, a :class:`ReplayBatch`, whose
    gradient columns (the gradient's, and the unused slots' that read it) each run rewrites."""

    spec: AlgorithmSpec
    cell: Callable[[np.ndarray], tuple[Any, Any]]  # flags -> the loops they select
    batches: tuple[ReplayBatch, ...]
    grad_columns: tuple[int, ...]

    def scalars(
        self, group: dict[str, Any], plain: tuple[Any, ...] | None = None
    ) -> list[Any] | None:
        """Each batch's (hyper, bias, flags) arrays for the group's hyperparameters as they
        are now, and the loops those flags select; None where the scalars need torch's
        arithmetic (a narrow tensor hyperparameter). ``plain``: the values of
        :func:`plain_hyper_key`, new ones, which the scalar caches would only miss."""
        if plain is None:
            key, narrow = hyper_key_and_narrow(self.spec, group)
            if narrow:
                return None
        else:
            key = plain_hyper_key(self.spec, group, plain)
        arrays = loop_arrays if plain is None else new_loop_arrays
        made = []
        for batch in self.batches:
            hyper, bias, flags = arrays(self.spec.name, batch.dtype, key)
            made.append((hyper, bias, flags, self.cell(flags)))
        return made

    def run(self, grads: Sequence[Tensor], scalars: list[Any]) -> None:
        """Step again with ``grads`` (checked by the caller) and :meth:`scalars`."""
        threads = torch.get_num_threads()
        for batch, (hyper, bias, flags, (serial, parallel)) in zip(
            self.batches, scalars, strict=True
        ):
            addresses, numels = batch.addresses, batch.numels
            column = [grads[i].data_ptr() for i in batch.idx]
            for c in self.grad_columns:
                addresses[:, c] = column
            tables = batch.tables.get(threads)
            if tables is None:
                tables = batch.tables[threads] = chunk_tables(numels, threads)
            launch_loops(
                serial, parallel, tables, sum(numels),
                (addresses, LIKE[batch.dtype], hyper, bias, flags, self.spec.counted),
            )  # fmt: skip


def fused_cpu(spec: AlgorithmSpec) -> Kernel:
    """The fused CPU kernel: one pass of the numba driver per dtype, for-loop for the rest.
    When the loops took every tensor, it returns a :class:`Replay` of its calls."""
    from . import numba_import

    numba_import.prepare()
    from . import _numba_driver  # imports numba: only when a fused kernel is used

    loops = _numba_driver.LOOPS[spec.name]
    serial, parallel = loops[0], loops[1]
    # (a pair of entry points that picks the cell from the flags itself serves every flag)
    cell = getattr(loops, "cell", lambda flags: (serial, parallel))
    for_loop = torch_order(spec, foreach=False)
    names = ("grad", *spec.tensor_state)
    padding = [(None, LIKE_PARAM)] * (TENSOR_SLOTS - len(spec.tensor_state))

    def kernel(
        params: Sequence[Tensor], grads: Sequence[Tensor], *lists: Any, group: dict[str, Any],
    ) -> Replay | None:  # fmt: skip
        *states, steps, scalar_state = lists
        roles = [
            (grads, READ_ONLY),
            # an unused slot (an empty list) reads a stand-in the loops never store
            *((s if len(s) or not params else None, LIKE_PARAM) for s in states),
            *padding,
            (steps, COUNTER),
            (scalar_state, FLOAT32_SCALAR) if scalar_state else (steps, COUNTER),
        ]
        batches, other, empty = split(params, roles)
        key, narrow = hyper_key_and_narrow(spec, group)
        if narrow and torch.float64 in batches:  # torch's arithmetic: the for-loop kernel
            other = other + batches.pop(torch.float64).idx
        rest = sorted(other + empty)  # empty tensors only count their steps: torch does that
        if rest:  # first: an error there then leaves every other tensor as it was
            sub = [pick(t, rest) if len(t) else [] for t in (params, grads, *states)]
            check_sizes(sub[0], sub[1:], names)
            counters = [*pick(steps, rest), *pick(scalar_state, rest)]
            saved = [c.clone() for c in counters]
            try:
                for_loop(*sub, pick(steps, rest), pick(scalar_state, rest), group=group)
            except Exception:
                for c, value in zip(counters, saved, strict=True):
                    c.copy_(value)
                raise
        if not batches:
            return None
        for dtype, batch in batches.items():
            hyper, bias, flags = loop_arrays(spec.name, dtype, key)
            run_loops(
                serial, parallel, tuple(batch.numels), batch.addresses(), LIKE[dtype],
                hyper, bias, flags, spec.counted,
            )  # fmt: skip
        if rest:
            return None
        columns = (1, *(1 + r for r, (tensors, _) in enumerate(roles) if tensors is None))
        replayed = tuple(
            ReplayBatch(dtype, batch.idx, tuple(batch.numels), batch.addresses().copy(), {})
            for dtype, batch in batches.items()
        )
        return Replay(spec, cell, replayed, columns)

    kernel.__name__ = f"{spec.name}_fused_cpu"
    return kernel


@functools.lru_cache(maxsize=64)
def kernel(name: str, backend: str, device_type: str) -> Kernel:
    """The kernel of spec ``name`` on ``backend`` ("forloop", "foreach", "fused" = the numba
    driver, "triton" = the Triton driver); :mod:`adamkit.kernels.registry` picks the backend
    for a device."""
    spec = SPECS[name]
    if backend in ("forloop", "foreach"):
        return torch_order(spec, foreach=backend == "foreach")
    if backend == "fused" and device_type == "cpu":
        return fused_cpu(spec)
    if backend == "triton":
        from . import triton_driver

        return triton_driver.kernel(spec)
    raise ValueError(f"no {backend!r} kernel for {spec.torch_name} on {device_type!r}")
