"""What an algorithm spec holds: the one description of a variant that every layer reads.

A spec names the hyperparameters and how each is checked, the state a parameter carries
(torch's keys), and the update as three small functions in the Python subset that numba and
Triton both compile (see :mod:`adamkit.algorithms._ops`):

* ``element(p, g, s0, s1, s2, h, k, f) -> (p, s0, s1, s2, base, u, g)``: one element's
  update. ``s0..s2`` are the per-element state slots in the order of ``tensor_state`` (a slot
  past the spec's last is a stand-in: read, never stored); ``h`` the group's scalars in the
  data's dtype, ``k`` the tensor's scalars (bias corrections; ``k[4]``, ``k[5]`` the
  reduction's, see below), ``f`` the group's options as booleans. It returns the new param
  and slots, then the same step split as ``p = base - u`` (``base``: the param after weight
  decay; ``u``: the update; ``g``: the gradient the moments saw, after ``maximize`` and L2
  decay), which is what options that wrap every algorithm read (cautious masking, written
  once per driver: ``p = base - u·mask``). Where no option reads them, the compilers drop them.
* ``advance(step, aux, b) -> (step, aux)``: the per-tensor counters one step on (``aux`` is the
  ``scalar_state`` slot, e.g. NAdam's ``mu_product``; ``b`` the float64 group scalars).
* ``tensor_scalars(step, aux, b) -> k``: the tensor's scalars after ``advance``, in float64.

``reduction(g, s0, s1, s2, h, k, f) -> term`` (optional): a per-element term of the element's
*new* slots, summed over each tensor in a read-only pass before the update; the element then
reads the sum as ``k[4]`` and the tensor's element count as ``k[5]`` (StableAdamW's RMS).

``group_scalars(group, dtype) -> GroupScalars`` builds ``h``, ``b`` and ``f`` from a param
group (host code, once per step and dtype), its hyperparameters and its ``group_state``. The
drivers pad each to a fixed width, so a spec's tuples may be shorter.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

# An uncounted spec's (SGD's) kernels read these as each tensor's step: START_MARKER where a
# slot starts this step, GO_ON_MARKER elsewhere. Shared float64 scalars, never written: the
# drivers do not advance an uncounted spec's counters.
START_MARKER = torch.ones((), dtype=torch.float64)
GO_ON_MARKER = torch.zeros((), dtype=torch.float64)

# A hyperparameter without a default (StableAdamW's lr, as optimi's): the argument is required.
REQUIRED = inspect.Parameter.empty

# The widths the drivers pass: h, b, k and f hold at most this many values.
HYPER_WIDTH = 8
BIAS_WIDTH = 8
TENSOR_WIDTH = 6  # the spec's four, then a reduction's sum and count (k[4], k[5])
FLAG_WIDTH = 4  # the spec's flags; the engine's options follow them in the drivers' arrays
TENSOR_SLOTS = 3
CAUTIOUS_FLAG = FLAG_WIDTH  # the drivers' flag arrays: the spec's flags, then "cautious"
MASK_FLOOR = 1e-3  # cautious masking's floor under mean(mask) (timm's)

# How a driver's pass before the update reduces each tensor (compile-time in every driver).
NO_REDUCTION, SPEC_REDUCTION, CAUTIOUS_COUNT = 0, 1, 2


class GroupScalars(NamedTuple):
    """A group's scalars for the drivers: ``hyper`` in the data's dtype (rounded as torch
    rounds a Python float against a tensor of that dtype), ``bias`` in float64 (for the
    per-tensor bias corrections), ``flags`` the options."""

    hyper: tuple[float, ...]
    bias: tuple[float, ...]
    flags: tuple[bool, ...]


@dataclass(frozen=True)
class Hyperparameter:
    """A hyperparameter: its name (torch's), default, and check (raises ValueError)."""

    name: str
    default: Any
    check: Callable[[str, Any], None] | None = None


@dataclass(frozen=True)
class AlgorithmSpec:
    """One optimizer algorithm, as every layer of adamkit reads it."""

    name: str  # the registry's name, e.g. "nadam"
    torch_name: str  # its torch.optim class, e.g. "NAdam"
    hyperparameters: tuple[Hyperparameter, ...]
    tensor_state: tuple[str, ...]  # per-element state slots, torch's keys, in kernel order
    element: Callable[..., tuple[Any, Any, Any, Any]]
    group_scalars: Callable[[Mapping[str, Any], np.dtype], GroupScalars]
    advance: Callable[[float, float, tuple[float, ...]], tuple[float, float]]
    tensor_scalars: Callable[[float, float, tuple[float, ...]], tuple[float, ...]]
    # torch's own functional update (torch.optim.<name>.<name>), the for-loop and foreach
    # backends: torch's operation order, so results equal torch.optim's bit for bit. None
    # for an algorithm torch does not have (Lion): its element then runs with torch ops.
    torch_functional: Callable[..., None] | None = None
    # (g, s0, s1, s2, h, k, f, lr) -> (first moment, scale, effective lr, update) of the last
    # step per element, what diagnostics show (scale None: the algorithm has none); evaluated
    # with torch ops on samples.
    intermediates: Callable[..., tuple[Any, Any, Any, Any]] | None = None
    scalar_state: str | None = None  # a per-tensor float32 scalar beside "step"
    scalar_state_init: float = 0.0
    # For each tensor slot, the index of the flag (of ``group_scalars``) that says the slot
    # exists (Adam's max_exp_avg_sq: amsgrad), or None: always. Shorter than
    # ``tensor_state``: the rest always exist.
    slot_flags: tuple[int | None, ...] = ()
    # The same condition as the group option (a hyperparameter's name) that turns each slot
    # on, for the optimizers (a slot exists when ``group[option]`` is true).
    slot_options: tuple[str | None, ...] = ()
    # Whether a param's state counts its steps ("step", torch's key). SGD's does not: its
    # kernels read a marker instead (see adamkit.algorithms.sgd) and leave it as it is.
    counted: bool = True
    # Group-level state kept in each param group, as (key, value before the first step):
    # Schedule-Free's count k, weight_sum, lr_max, ... (schedulefree keeps them there).
    # ``group_advance(group)`` moves it one step on, once per ``step()`` for every group,
    # before the group's params are stepped; ``group_scalars`` then reads it.
    group_state: tuple[tuple[str, Any], ...] = ()
    group_advance: Callable[[dict[str, Any]], None] | None = None
    # Group-level numbers the diagnostics show beside the per-element ones (Schedule-Free's
    # averaging weight): group -> {name: value}.
    group_diagnostics: Callable[[Mapping[str, Any]], dict[str, float]] | None = None
    # (g, s0, s1, s2, h, k, f) -> a per-element term of the NEW slots, summed per tensor
    # before the update and read by the element as k[4] (k[5]: the element count).
    reduction: Callable[..., Any] | None = None
    # Whether the optimizer takes ``cautious`` (timm's masking of the update where it
    # disagrees with the gradient; every driver applies it to the element's ``base - u``).
    cautious: bool = False
    # Group entries the optimizer computes on the host for one call of the kernels, never
    # kept in the param groups (ADOPT's clip for a clip_lambda evaluated on the host); read
    # by group_scalars, part of the hyper key.
    host_scalars: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.tensor_state) > TENSOR_SLOTS:
            raise ValueError(f"{self.name}: at most {TENSOR_SLOTS} per-element state slots")
        if self.cautious and self.reduction is not None:
            raise ValueError(f"{self.name}: a spec with a reduction cannot take cautious masking")

    def reduction_mode(self, cautious: bool) -> int:
        """What the drivers' pass before the update computes for a group (``cautious``: its
        option): the spec's reduction, the cautious mask's count, or nothing."""
        if self.reduction is not None:
            return SPEC_REDUCTION
        return CAUTIOUS_COUNT if cautious and self.cautious else NO_REDUCTION

    def defaults(self) -> dict[str, Any]:
        return {h.name: h.default for h in self.hyperparameters if h.default is not REQUIRED}

    def check(self, group: Mapping[str, Any]) -> None:
        """Raise ValueError (torch's words first) for any bad hyperparameter of ``group``, and
        KeyError for a checked one it lacks (a checkpoint of another optimizer)."""
        for h in self.hyperparameters:
            if h.check is not None:
                h.check(h.name, group[h.name])

    def slots_used(self, flags: tuple[bool, ...]) -> tuple[bool, ...]:
        """Which tensor slots a group with option ``flags`` has (and the kernels store)."""
        conditions = self.slot_flags + (None,) * (len(self.tensor_state) - len(self.slot_flags))
        return tuple(c is None or bool(flags[c]) for c in conditions)

    def state_keys(self) -> tuple[str, ...]:
        """Every key of a stepped parameter's state, in torch's order."""
        scalar = (self.scalar_state,) if self.scalar_state else ()
        step = ("step",) if self.counted else ()
        return (*step, *scalar, *self.tensor_state)


def recompiled(
    function: Callable[..., Any],
    ops: Mapping[str, Any],
    helpers: Callable[[Callable[..., Any]], Any] | None = None,
) -> Callable[..., Any]:
    """``function`` (a spec's element or scalar function) with ``ops`` in place of
    :mod:`adamkit.algorithms._ops`' names: how each backend (numba, Triton, torch) compiles
    the same code. With ``helpers``, the module's other functions it may call (e.g. NAdam's
    ``_mu``) are rebuilt on the same namespace and passed through ``helpers`` too."""
    namespace = dict(function.__globals__)
    if helpers is not None:
        for name, value in function.__globals__.items():
            own = isinstance(value, types.FunctionType) and value.__module__ == function.__module__
            if own and name != function.__name__ and name not in ops:
                namespace[name] = helpers(types.FunctionType(value.__code__, namespace, name))
    namespace.update(ops)
    return types.FunctionType(function.__code__, namespace, function.__name__)


def rounded(dtype: np.dtype, *values: float) -> tuple[float, ...]:
    """``values`` rounded to ``dtype`` (as torch rounds a Python scalar against a tensor).
    (One array for all: a NumPy scalar each costs ~0.2 µs, and a step plan makes these again
    whenever a scheduler moves lr.)"""
    return tuple(np.array(values, dtype=dtype).tolist())


def complement(dtype: np.dtype, weight: float) -> float:
    """``1 - weight`` as torch's lerp computes it: in the data's dtype, after rounding."""
    w = dtype.type(weight)
    return float(dtype.type(1) - w)


def weight_decay_scalars(group: Mapping[str, Any], lr: float) -> tuple[float, float, bool]:
    """(decay, λ, L2): the factor φ is multiplied by before the update (1 - α·λ for decoupled
    weight decay, else exactly 1), λ, and whether λ·φ is added to the gradient instead."""
    wd = float(group["weight_decay"])
    decoupled = bool(group.get("decoupled_weight_decay", False))
    decay = 1 - lr * wd if decoupled and wd != 0 else 1.0
    return decay, wd, wd != 0 and not decoupled
