"""An optimizer that is a docstring, an algorithm spec and its torch namesake.

Everything else comes from the spec (:mod:`adamkit.algorithms`) and torch's class: the
signature (torch's, then adamkit's options: :mod:`._made_init`), hyperparameter checks (in
torch's words, on the defaults before ``params`` is read), the state a parameter gets
(torch's keys and dtypes), the checkpoint layout, and the kernels.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ..algorithms import AlgorithmSpec
from ..algorithms import _checks as check
from ..algorithms._spec import GO_ON_MARKER, START_MARKER
from ..kernels.spec_kernels import Replay
from ._base import KernelOptimizer, new_step, scalar_state
from ._checkpoint import Slot
from ._lowmem import LowMemoryState
from ._made_init import group_signature, made_init

# torch's default for a group's "fused" key, where its class has one (its __setstate__'s)
_FUSED_KEY_DEFAULT = {"Adam": None, "AdamW": None, "SGD": False}


_SLOTS_WITH: dict[tuple[Any, ...], tuple[str, ...]] = {}


def _slots_with(
    tensor_state: tuple[str, ...], options: tuple[str | None, ...], on: tuple[bool, ...]
) -> tuple[str, ...]:
    """The keys of ``tensor_state`` whose ``options`` (a spec's ``slot_options``) are on as
    ``on`` says for the options that are not None (cached in ``_SLOTS_WITH``: every step of
    every group asks)."""
    switches = iter(on)
    padded = options + (None,) * (len(tensor_state) - len(options))
    return tuple(
        key for key, option in zip(tensor_state, padded, strict=True)
        if option is None or next(switches)
    )  # fmt: skip


class SpecOptimizer(LowMemoryState, KernelOptimizer):
    """A :class:`KernelOptimizer` whose algorithm is ``spec``."""

    spec: ClassVar[AlgorithmSpec]

    option_defaults: ClassVar[dict[str, Any]] = {
        **KernelOptimizer.option_defaults,
        **LowMemoryState.low_memory_defaults,
    }

    def __init__(
        self,
        params: Any,
        defaults: dict[str, Any],
        *,
        on_nonfinite: str = "propagate",
        low_memory: tuple[str, int, str] = ("fp32", 4096, "nearest"),
    ) -> None:
        self.set_low_memory(*low_memory)
        defaults = {**defaults, **dict(self.spec.group_state)}  # (each group's own copy)
        check.backend_flags(
            foreach=defaults.get("foreach"),
            fused=defaults.get("fused"),
            differentiable=bool(defaults.get("differentiable")),
        )
        super().__init__(params, defaults, on_nonfinite=on_nonfinite)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.algorithm = cls.spec.name
        if "checked_alone" in cls.__dict__:
            cls._checked_alone_with = cls.validate_group
        if "__init__" not in cls.__dict__:  # torch's signature, then adamkit's options
            cls.__init__ = made_init(cls.spec, SpecOptimizer.__init__)  # type: ignore[method-assign]
        # The keys torch's class keeps in every group (SGD has no capturable), with the
        # defaults its __setstate__ gives a checkpoint that lacks them.
        torch_keys = group_signature(cls.spec).parameters
        flags = {"maximize": False, "foreach": None, "capturable": False, "differentiable": False}
        flags["fused"] = _FUSED_KEY_DEFAULT.get(cls.spec.torch_name)
        cls.group_key_defaults = {
            **{key: value for key, value in flags.items() if key in torch_keys},
            **{h.name: h.default for h in cls.spec.hyperparameters if h.check is None},
            **dict(cls.spec.group_state),
        }
        cls.group_state_keys = tuple(name for name, _ in cls.spec.group_state)

    def validate_group(self, group: dict[str, Any]) -> None:
        self.spec.check(group)
        check.cautious(group, self.spec.cautious, type(self).__name__)
        for name in self.spec.host_scalars:
            if name in group:
                raise ValueError(
                    f"a param group of {type(self).__name__} cannot hold {name!r}: the "
                    "optimizer sets it for one call of its kernels"
                )
        super().validate_group(group)

    # The keys schedulers move every step (lr; OneCycleLR's betas and momentum), which no
    # check of this class reads beside another key: a change to them alone is validated by
    # their own hyperparameter checks (~0.3 µs, the whole group's ~4 µs). Only while
    # validate_group is the one that was declared with them: a subclass, a mixin or an
    # assignment that brings another (which may read them with other keys) gets the whole
    # check unless its class declares checked_alone too.
    checked_alone: ClassVar[frozenset[str]] = frozenset({"lr", "betas", "momentum"})
    _checked_alone_with: ClassVar[Any]

    def validate_changed(self, group: dict[str, Any], changed: set[str]) -> bool:
        cls = type(self)
        if cls.validate_group is not cls._checked_alone_with or "validate_group" in self.__dict__:
            return False
        if not changed or not changed <= cls.checked_alone:
            return False
        for h in self.spec.hyperparameters:  # (in the spec's order, as spec.check)
            if h.name in changed and h.check is not None:
                h.check(h.name, group[h.name])
        return True

    def _update_group(self, group: dict[str, Any], amp: dict[str, Any]) -> None:
        advance = self.spec.group_advance
        # GradScaler found an Inf: the kernels skip the step, so the group state stays too
        # (reading found_inf is a sync; only specs with group state pay it).
        found_inf = amp.get("found_inf")
        if advance is None or (found_inf is not None and found_inf.item()):
            super()._update_group(group, amp)  # type: ignore[misc]
            return
        before = {name: group[name] for name, _ in self.spec.group_state}
        advance(group)  # the group's own state first, every step
        try:
            super()._update_group(group, amp)  # type: ignore[misc]
        except Exception:  # refused before its kernels ran (a bad size, a sparse grad)
            group.update(before)
            raise
        self._note_advanced(group, before)

    def _note_advanced(self, group: dict[str, Any], before: dict[str, Any]) -> None:
        """Write the advanced group state into the copy that the next step's check of changed
        groups compares with (:mod:`._changed_groups`): a change the optimizer made itself
        needs no validation, and would otherwise re-validate the group on every step."""
        for i, g in enumerate(self.param_groups):
            if g is group and i < len(self._checked_groups):
                checked = self._checked_groups[i]
                if checked is not None and all(checked[0].get(k) == v for k, v in before.items()):
                    checked[0].update((name, group[name]) for name in before)
                return

    def tensor_slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The tensor state keys a param of ``group`` has (a slot may depend on an option:
        Adam's ``max_exp_avg_sq`` exists with amsgrad), in the spec's order."""
        options = self.spec.slot_options
        if not options:
            return self.spec.tensor_state
        key = (self.spec.tensor_state, options, *(bool(group[o]) for o in options if o))
        found = _SLOTS_WITH.get(key)  # a plain dict: Dynamo warns on lru_cache in a trace
        if found is None:
            found = _SLOTS_WITH[key] = _slots_with(*key[:2], key[2:])
        return found

    def state_layout(self, group: dict[str, Any]) -> dict[str, Slot]:
        if self.spec.counted:
            layout = {"step": Slot.STEP}
            slot = Slot.LIKE_PARAM
        else:  # SGD: a buffer alone (None in a torch checkpoint of a param not yet stepped),
            # and a count where its state is low-memory
            layout = {"step": Slot.OPTIONAL_STEP}
            slot = Slot.LIKE_PARAM_OR_NONE
        if self.spec.scalar_state:
            layout[self.spec.scalar_state] = Slot.SCALAR
        layout.update(dict.fromkeys(self.tensor_slots(group), slot))
        return layout

    def _counts_low_memory(self, group: dict[str, Any]) -> bool:
        """Whether an uncounted spec's low-memory state keeps a step count (its rounding
        seeds): when the group's options ask for low-memory state or rounding."""
        precision, _, rounding = self.group_options(group)
        return precision != "fp32" or rounding != "nearest"

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec
        if not (spec.counted or self.tensor_slots(group) or self._counts_low_memory(group)):
            return {}  # as torch's SGD without momentum: no state entry at all
        state = self.state[p]
        if len(state) == 0 and self.init_low_memory_state(p, group) is None and spec.counted:
            state["step"] = new_step(p, group)
            if spec.scalar_state:
                state[spec.scalar_state] = scalar_state(spec.scalar_state_init, p, group)
            for key in self.tensor_slots(group):
                state[key] = self.zeros_state(p, group)
        return state  # an uncounted spec's slots start in _update_params (markers)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict (adamkit's or torch.optim's), checked first.

        torch.optim casts every loaded state tensor but ``step`` to its parameter's dtype,
        so a float64 model's NAdam ``mu_product`` comes back float64 (a bfloat16 model's,
        bfloat16), and a resumed run then differs from an uninterrupted one. adamkit takes
        the scalar state from the state_dict as saved, before that cast, and keeps it in the
        dtype it is created in, so that resuming is exact.
        """
        super().load_state_dict(state_dict)
        key = self.spec.scalar_state
        if key is None:
            return
        saved = state_dict["state"]
        for saved_group, group in zip(state_dict["param_groups"], self.param_groups, strict=True):
            for pid, p in zip(saved_group["params"], group["params"], strict=True):
                state = self.state.get(p)
                if state and key in state:
                    value = saved.get(pid, {}).get(key, state[key])
                    state[key] = scalar_state(value, p, group)

    def _update_params(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        any_sparse: bool,
        amp: dict[str, Tensor],
    ) -> Replay | None:
        """Step ``params``; the fused kernel's :class:`Replay` where a later step may run it
        again (see :mod:`._step_plan`), else None."""
        spec = self.spec
        scalar = spec.scalar_state
        used = self.tensor_slots(group)
        if spec.counted:
            steps = [s["step"] for s in states]
        else:
            steps = self._start_slots(group, params, states, used)
        # an unused slot's list is empty, as torch's functional updates take it
        # (an uncounted spec's sparse-gradient slot starts as None: torch's SGD makes it)
        read = dict.get if not spec.counted else dict.__getitem__
        slots = [[read(s, key) for s in states] if key in used else [] for key in spec.tensor_state]
        replay = self._step_kernel(group, params, amp, sparse=any_sparse)(
            params, grads, *slots, steps, [s[scalar] for s in states] if scalar else [],
            group=group,
        )  # fmt: skip
        if not spec.counted:  # a kernel may replace a buffer it starts (SGD's sparse one)
            for key, values in zip(spec.tensor_state, slots, strict=True):
                for state, value in zip(states, values, strict=False):
                    state[key] = value
            if any(m is not GO_ON_MARKER for m in steps):
                return None  # a slot started this step: the next reads other markers
        return replay if isinstance(replay, Replay) else None

    def step_state_keys(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The keys of a stepped param's state that its fused step reads (a plan checks them)."""
        spec = self.spec
        counters = ("step",) if spec.counted else ()
        return (*counters, *((spec.scalar_state,) if spec.scalar_state else ()),
                *self.tensor_slots(group))  # fmt: skip

    def _start_slots(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        states: list[dict[str, Any]],
        used: tuple[str, ...],
    ) -> list[Tensor]:
        """An uncounted spec's markers (``START_MARKER`` where a slot starts this step, made
        here as zeros, else ``GO_ON_MARKER``; see :mod:`adamkit.algorithms._spec`)."""
        # Decided for every param before any slot is made: a param listed twice starts twice,
        # as in torch (its state has no buffer yet when torch reads it for either entry).
        markers = [
            GO_ON_MARKER if all(s.get(k) is not None for k in used) else START_MARKER
            for s in states
        ]
        for p, state, marker in zip(params, states, markers, strict=True):
            for key in used if marker is START_MARKER and not p.grad.is_sparse else ():
                if state.get(key) is None:  # (torch's SGD starts a sparse one itself)
                    state[key] = self.zeros_state(p, group)
        return markers


SpecOptimizer._checked_alone_with = SpecOptimizer.validate_group
