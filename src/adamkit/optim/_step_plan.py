"""A group's fused CPU step kept after it ran, and replayed while what it read stays the same.

A small model's step is mostly host work: the optimizer's layers (collect the grads, pick the
state format, the kernel, its wrappers, the tensors the loops can take, their addresses) cost
~30 µs for the 4-tensor MLP where the numba loop takes ~13 µs (docs/benchmarks.md). When a
group's last step ran the numba loops over every one of its params (fp32 state, no half,
duplicate, empty or odd tensors), the kernel hands back a :class:`~adamkit.kernels.
spec_kernels.Replay` of that call, and the group keeps it here with what it was made from.
The next step replays it when, re-read:

* the group is the same dict with the same params, and its keys other than the algorithm's
  hyperparameters and group state (kernel flags, per-group state options) are equal; the
  hyperparameters and group state themselves are read every step (schedulers change lr,
  Schedule-Free's count moves), and the loops' scalars made again when they changed (always
  for a tensor value, which changes in place);
* the optimizer-wide state options, the registry's kernel choice and the state slots the
  group's options ask for are those of the plan;
* every param has a gradient, its state is the same dict holding the same tensors, and each
  param's address, dtype, shape and layout bits, each state tensor's address, dtype, shape
  and layout, and each gradient's dtype, shape and layout are what the loops need (as the
  kernel's own reused split checks: a freed tensor's address may come back with another
  dtype or size, and a state tensor ``set_`` in place keeps its object).

With low-memory state the plan replays the low-memory kernel's call for the params it took
and the fp32 kernel's for the others (a :class:`Parts`), when each kernel took all of its
params. It then also re-reads each state dict's tensor keys (an 8-bit slot is codes and
scales) and the params' position among the optimizer's (their random streams). The state was
put in the options' format when the plan was made, and stays so while the options, the
param dtypes, the slots and the state's tensors stay the same.

Anything else, and the group takes the full path, which may leave a new plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import attrgetter, is_
from typing import Any, NamedTuple

from torch import Tensor

from ..kernels import registry
from ..kernels.spec_kernels import Replay
from ._changed_groups import LISTS, all_immutable, immutable

_GENERATION = [0]  # bumped when registry.set_default changes which kernels run
registry.on_change(lambda: _GENERATION.__setitem__(0, _GENERATION[0] + 1))


class Parts(NamedTuple):
    """A group's replays, each of the params at its positions, run in order."""

    parts: tuple[tuple[Any, tuple[int, ...]], ...]

    def scalars(
        self, group: dict[str, Any], plain: tuple[Any, ...] | None = None
    ) -> list[Any] | None:
        made = []
        for replay, _ in self.parts:
            scalars = replay.scalars(group, plain)
            if scalars is None:
                return None
            made.append(scalars)
        return made

    def run(self, grads: Sequence[Tensor], scalars: list[Any]) -> None:
        for (replay, idx), each in zip(self.parts, scalars, strict=True):
            replay.run([grads[i] for i in idx], each)


class StepPlan:
    """What a group's last fused step ran, and what it was made from (see the module)."""

    def __init__(
        self,
        optimizer: Any,
        group: dict[str, Any],
        states: list[dict[str, Any] | None],
        state_keys: tuple[str, ...] | None,
        replay: Replay | Parts,
    ) -> None:
        """``state_keys``: the keys of each state the step reads; None for low-memory state
        (every tensor of each state, whatever its format)."""
        spec = optimizer.spec
        self.names = (  # read every step: the hyperparameters and the group's own state
            *(h.name for h in spec.hyperparameters),
            *(name for name, _ in spec.group_state),
        )
        hyperparameters = set(self.names)
        self.generation = _GENERATION[0]
        self.group = group
        self.structure = {
            k: v for k, v in group.items() if k != "params" and k not in hyperparameters
        }
        # (a flag that can change in place, a tensor maximize, compares equal to itself)
        self.structure_immutable = all(
            immutable(v) for k, v in self.structure.items() if k not in LISTS
        )
        self.size = len(group)
        self.params = list(group["params"])
        self.options = optimizer.group_options(group)
        self.slots = optimizer.tensor_slots(group)
        self.states = states  # None: a param without a state entry (SGD's without momentum)
        self.low_memory = state_keys is None
        self.keys = [
            ()
            if st is None
            else tuple(k for k, v in st.items() if isinstance(v, Tensor))
            if state_keys is None
            else state_keys
            for st in states
        ]
        self.stream_offset = stream_offset(optimizer, group)
        # What each step re-reads, flat (one C-level pass per property over all tensors):
        # each state dict held, its size, and the tensor each key of it held.
        self.held = [st for st in states if st is not None]
        self.held_sizes = [len(st) for st in self.held]
        self.lookups = [(st, key) for st, keys in zip(states, self.keys, strict=True)
                        for key in keys]  # fmt: skip
        state_tensors = [st[key] for st, key in self.lookups]
        self.state_tensors = state_tensors
        # the params, then the state tensors: where and what the loops write
        self.tensors = [*self.params, *state_tensors]
        self.addresses = list(map(Tensor.data_ptr, self.tensors))
        self.dtypes = list(map(_DTYPE, self.tensors))
        self.shapes = list(map(_SHAPE, self.tensors))
        # where the loops walk a dense layout in memory order (channels_last, a transpose:
        # _batching.dense_strides) the strides are checked, elsewhere contiguity
        self.dense = [(i, tuple(t.stride())) for i, t in enumerate(self.tensors)
                      if not t.is_contiguous()]  # fmt: skip
        self.contiguous = [t for t in self.tensors if t.is_contiguous()]
        self.param_dtypes = self.dtypes[: len(self.params)]
        self.param_shapes = self.shapes[: len(self.params)]
        self.complex_at = [i for i, p in enumerate(self.params) if p.is_complex()]
        self.complex_params = [self.params[i] for i in self.complex_at]
        self.replay = replay
        self.values: tuple[Any, ...] | None = None  # the hyperparameters last run with
        self.scalars: Any = None  # and the loops' scalar arrays for them
        self.seen: tuple[list[str], list[Any]] | None = None  # the group then (see replayed)
        self.checked: list[Tensor] | None = None  # the gradients intact found (see there)

    def replayed(self, optimizer: Any, group: dict[str, Any]) -> bool:
        """Run the step again if nothing it depends on has changed (see the module); False
        (and nothing done) otherwise. Where :meth:`intact` found so this step, its checks
        are not run again."""
        checked, self.checked = self.checked, None
        if checked is not None:  # (the group's own state, Schedule-Free's count, has moved
            grads = checked  # since intact: whether it is unchanged is read again)
            unchanged = self._group_unchanged(group)
        else:
            unchanged = self._group_unchanged(group)
            try:
                grads = self._gradients(optimizer, group, unchanged)
            except RuntimeError:  # layouts without strides or storage (sparse CSR, mkldnn)
                return False
        if grads is None:
            return False
        if not unchanged:
            values = tuple(map(group.__getitem__, self.names))
            # Kept only while every value is a plain number: a tensor changes in place, and
            # one equal to a kept number (tensor(0.1) == 0.1) may need torch's arithmetic.
            plain = _plain(values)
            if not plain or values != self.values:
                # (new plain values, e.g. a scheduler's lr or Schedule-Free's count, seldom
                # come again: the scalar caches would only miss)
                scalars = self.replay.scalars(group, values if plain else None)
                if scalars is None or optimizer.tensor_slots(group) != self.slots:
                    return False
                self.values, self.scalars = (values if plain else None), scalars
            # (every value immutable: a flag that is a tensor, say, changes in place)
            self.seen = (list(group), list(group.values())) if all_immutable(group) else None
        self.replay.run(grads, self.scalars)
        return True

    def intact(self, optimizer: Any, group: dict[str, Any]) -> bool:
        """Whether the plan would replay (:meth:`replayed`'s checks, nothing run): the
        group's params, options, state dicts and tensors are those its last step read. If so,
        the replay later in the same ``step()`` takes what the checks found (the caller
        clears :attr:`checked` at the start of each step: a step that ends before the group
        is stepped must not leave it to the next)."""
        self.checked = None
        unchanged = self._group_unchanged(group)
        try:
            grads = self._gradients(optimizer, group, unchanged)
        except RuntimeError:
            return False
        if grads is None:
            return False
        self.checked = grads
        return True

    def _group_unchanged(self, group: dict[str, Any]) -> bool:
        """Whether ``group`` holds the very objects (same keys, each value by identity) it held
        at the last replay, when each of them was immutable (a number, str, None or a tuple
        of them): then nothing the plan read from the group can have changed, and the step
        needs no other look at it."""
        seen = self.seen
        return (
            seen is not None
            and group is self.group
            and list(group) == seen[0]
            and all(map(is_, group.values(), seen[1]))
        )

    def _gradients(
        self, optimizer: Any, group: dict[str, Any], unchanged: bool
    ) -> list[Tensor] | None:
        """Each param's gradient, if every param and state tensor is as the plan found it,
        and the loops take each gradient in place; else None. (``unchanged``: the group's
        keys and values are known to be the same.)"""
        if self.generation != _GENERATION[0] or group is not self.group:
            return None
        params = group["params"]
        if len(params) != len(self.params) or not all(map(is_, params, self.params)):
            return None
        if not unchanged:
            if len(group) != self.size or not self.structure_immutable:
                return None
            for key, value in self.structure.items():
                if group.get(key, _MISSING) != value:
                    return None
        if optimizer.group_options(group) != self.options:
            return None
        if self.low_memory:  # (the fp32 plan: only while no state is low-memory)
            if stream_offset(optimizer, group) != self.stream_offset:
                return None
        elif optimizer.__dict__.get("_low_memory_seen", True):
            return None
        # the same state dicts, of the same sizes, holding the same tensors
        if not all(map(is_, map(optimizer.state.get, params), self.states)):
            return None
        if list(map(len, self.held)) != self.held_sizes:
            return None
        if not all(map(is_, [st.get(key) for st, key in self.lookups], self.state_tensors)):
            return None
        # each param and state tensor where and what the loops write: its address, dtype and
        # shape (the allocator may reuse an address), contiguous or in the dense layout it had
        # (its strides); no param a negative or conjugate view
        tensors = self.tensors
        if (
            list(map(Tensor.data_ptr, tensors)) != self.addresses
            or list(map(_DTYPE, tensors)) != self.dtypes
            or list(map(_SHAPE, tensors)) != self.shapes
            or not all(map(Tensor.is_contiguous, self.contiguous if self.dense else tensors))
            or (self.dense and any(tensors[i].stride() != st for i, st in self.dense))
            or any(map(Tensor.is_neg, params))
            or any(map(Tensor.is_conj, self.complex_params))
        ):
            return None
        # each gradient one the loops read in place (as the split's READ_ONLY check)
        grads = list(map(_GRAD, params))
        if (
            _NONE in map(type, grads)  # (by type: `in` would compare tensors with ==)
            or list(map(_DTYPE, grads)) != self.param_dtypes
            or list(map(_SHAPE, grads)) != self.param_shapes
            or not all(map(_IS_CPU, grads))
            or not all(
                map(Tensor.is_contiguous, grads)
                if not self.dense
                else (g.stride() == p.stride() for g, p in zip(grads, params, strict=True))
            )
            or any(map(Tensor.is_neg, grads))
            or any(grads[i].is_conj() for i in self.complex_at)
        ):
            return None
        return grads


def stream_offset(optimizer: Any, group: dict[str, Any]) -> int:
    """How many params the groups before ``group`` hold (its params' random streams count
    on from there)."""
    offset = 0
    for g in optimizer.param_groups:
        if g is group:
            break
        offset += len(g["params"])
    return offset


_MISSING = object()
_NONE = type(None)
_DTYPE, _SHAPE, _GRAD, _IS_CPU = map(attrgetter, ("dtype", "shape", "grad", "is_cpu"))
_PLAIN = frozenset({float, int, bool})


def _plain(values: tuple[Any, ...]) -> bool:
    """Whether each value is a number, or a tuple of numbers (betas), whose value cannot change
    under it; not -0.0, which compares equal to 0.0 but steps otherwise in the sign of zeros.
    (One call for all: a scheduler's step asks.)"""
    for value in values:
        kind = type(value)
        if kind is tuple:
            if not _plain(value):
                return False
        elif kind not in _PLAIN or (kind is float and not value and math.copysign(1, value) < 0):
            return False
    return True
