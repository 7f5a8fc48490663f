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
  and contiguity, and each gradient's dtype, shape and layout are what the loops need (as the
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

from collections.abc import Sequence
from typing import Any, NamedTuple

from torch import Tensor

from ..kernels import registry
from ..kernels._batching import loops_take_gradient, still_in_place
from ..kernels.spec_kernels import Replay

_GENERATION = [0]  # bumped when registry.set_default changes which kernels run
registry.on_change(lambda: _GENERATION.__setitem__(0, _GENERATION[0] + 1))


class Parts(NamedTuple):
    """A group's replays, each of the params at its positions, run in order."""

    parts: tuple[tuple[Any, tuple[int, ...]], ...]

    def scalars(self, group: dict[str, Any]) -> list[Any] | None:
        made = []
        for replay, _ in self.parts:
            scalars = replay.scalars(group)
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
        self.state_sizes = [0 if st is None else len(st) for st in states]
        self.entries = [
            tuple(st[key] for key in keys) for st, keys in zip(states, self.keys, strict=True)
        ]
        self.stream_offset = _stream_offset(optimizer, group)
        self.state_layouts = [
            tuple((t.data_ptr(), t.dtype, t.shape) for t in entry) for entry in self.entries
        ]
        self.param_layouts = [(p.data_ptr(), p.dtype, p.shape, p.is_complex()) for p in self.params]
        self.replay = replay
        self.values: tuple[Any, ...] | None = None  # the hyperparameters last run with
        self.scalars: Any = None  # and the loops' scalar arrays for them

    def replayed(self, optimizer: Any, group: dict[str, Any]) -> bool:
        """Run the step again if nothing it depends on has changed (see the module); False
        (and nothing done) otherwise."""
        try:
            grads = self._gradients(optimizer, group)
        except RuntimeError:  # layouts without strides or storage (sparse CSR, mkldnn)
            return False
        if grads is None:
            return False
        values = tuple(map(group.__getitem__, self.names))
        # Kept only while every value is a plain number: a tensor changes in place, and one
        # equal to a kept number (tensor(0.1) == 0.1) may need torch's arithmetic.
        plain = all(_plain(v) for v in values)
        if not plain or values != self.values:
            scalars = self.replay.scalars(group)
            if scalars is None or optimizer.tensor_slots(group) != self.slots:
                return False
            self.values, self.scalars = (values if plain else None), scalars
        self.replay.run(grads, self.scalars)
        return True

    def _gradients(self, optimizer: Any, group: dict[str, Any]) -> list[Tensor] | None:
        if self.generation != _GENERATION[0] or group is not self.group:
            return None
        params = group["params"]
        if len(params) != len(self.params) or len(group) != self.size:
            return None
        for p, q in zip(params, self.params, strict=True):
            if p is not q:
                return None
        for key, value in self.structure.items():
            if group.get(key, _MISSING) != value:
                return None
        if optimizer.group_options(group) != self.options:
            return None
        if self.low_memory:  # (the fp32 plan: only while no state is low-memory)
            if _stream_offset(optimizer, group) != self.stream_offset:
                return None
        elif optimizer.__dict__.get("_low_memory_seen", True):
            return None
        state = optimizer.state
        grads = []
        for i, p in enumerate(params):
            g = p.grad
            st = state.get(p)
            if g is None or st is not self.states[i]:
                return None
            if st is not None and len(st) != self.state_sizes[i]:
                return None
            entry = self.entries[i]
            for key, tensor in zip(self.keys[i], entry, strict=True):
                if st.get(key) is not tensor:
                    return None
            address, dtype, shape, is_complex = self.param_layouts[i]
            if (
                p.data_ptr() != address
                or p.dtype is not dtype  # (the allocator may reuse the address)
                or p.shape != shape
                or not p.is_contiguous()
                or p.is_neg()
                or (is_complex and p.is_conj())
            ):
                return None
            for tensor, layout in zip(entry, self.state_layouts[i], strict=True):
                if not still_in_place(tensor, *layout):
                    return None
            if not loops_take_gradient(g, dtype, shape, is_complex):
                return None
            grads.append(g)
        return grads


def _stream_offset(optimizer: Any, group: dict[str, Any]) -> int:
    """How many params the groups before ``group`` hold (its params' random streams count
    on from there)."""
    offset = 0
    for g in optimizer.param_groups:
        if g is group:
            break
        offset += len(g["params"])
    return offset


_MISSING = object()
_PLAIN = frozenset({float, int, bool})


def _plain(value: Any) -> bool:
    """A number, or a tuple of numbers (betas), whose value cannot change under it."""
    kind = type(value)
    return kind in _PLAIN or (kind is tuple and all(type(v) in _PLAIN for v in value))
