"""Low-memory state for the Adam family: ``state_precision``, ``min_8bit_size``,
``param_rounding``; bookkeeping only (the formats are :mod:`adamkit.reference.lowbit`'s, the
arithmetic is in :mod:`adamkit.kernels.lowbit`).

A parameter's state is in one of three precisions, decided by the options and the parameter:

* ``"fp32"``: torch's state, exactly (the parameter's dtype), checkpoints as torch's;
* ``"bf16"``: each moment a bfloat16 tensor, stored with stochastic rounding (2 B/element);
* ``"8bit"``: each moment uint8 codes shaped like the parameter plus ``<key>_absmax``, one
  float32 scale per 256 elements (1.016 B/element).

Only float32, bfloat16 and float16 parameters get low-memory state (float64 and complex ones
keep torch's), and with "8bit" only those of at least ``min_8bit_size`` elements (small
tensors are a small share of the memory and the most sensitive: norms, biases).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..algorithms import SPECS
from ..algorithms.state_formats import ABSMAX_SUFFIX, KAHAN_KEY, slot_precision
from ..kernels import half_params, lowbit, lowbit_compiled
from ..kernels._tensors import pick
from ..kernels.lowbit_replay import LowMemoryReplay
from ..kernels.lowbit_torch import (
    blocks,
)
from ..kernels.spec_kernels import Replay
from ..kernels.wrappers import HALF_DTYPES, to_local
from . import _conform
from ._base import new_step, scalar_state
from ._lowmem_checkpoint import LowMemoryCheckpoint
from ._lowmem_options import (
    _checked_option,
    _precision,
    check_group_supports,
    check_options,
)
from ._step_plan import Parts, StepPlan, stream_offset

_CONTIGUOUS = torch.contiguous_format


class LowMemoryState(LowMemoryCheckpoint):
    """Mixin for KernelOptimizer subclasses of the Adam family (before it in the MRO).

    The three options are optimizer-wide attributes (checked when set) that a param group may
    override with keys of the same names (checked like the constructor's). A parameter's state
    always follows the options in force when it is stepped: before any kernel runs, the state of
    each param of a group whose options, slot layout or param dtypes changed is put in that
    format (converted, or a missing slot made), so a kernel never reads a slot of another
    format, dtype or size (:mod:`._conform`).
    """

    low_memory_defaults: ClassVar[dict[str, Any]] = {
        "state_precision": "fp32",
        "min_8bit_size": 4096,
        "param_rounding": "nearest",
        # Whether any state may be low-memory (then steps conform it when the options, layout
        # or param dtypes change); unpickled older optimizers assume so, to be safe.
        "_low_memory_seen": True,
    }
    option_defaults: ClassVar[dict[str, Any]]
    param_groups: list[dict[str, Any]]
    state: Any
    algorithm: str

    def set_low_memory(self, state_precision: str, min_8bit_size: int, param_rounding: str) -> None:
        """Check and keep the options (before the param groups are made)."""
        check_options(state_precision, min_8bit_size, param_rounding)
        self.__dict__.update(
            state_precision=state_precision,
            min_8bit_size=min_8bit_size,
            param_rounding=param_rounding,
            _low_memory_seen=False,
        )

    # The options as attributes that are checked when set: a new value applies from the next
    # step on, which converts each parameter's state to it (never reinterprets its memory).
    state_precision = _checked_option("state_precision")
    min_8bit_size = _checked_option("min_8bit_size")
    param_rounding = _checked_option("param_rounding")

    def group_options(self, group: Mapping[str, Any]) -> tuple[str, int, str]:
        """(state_precision, min_8bit_size, param_rounding) in force for ``group``."""
        d = self.__dict__
        return (
            group.get("state_precision", d["state_precision"]),
            group.get("min_8bit_size", d["min_8bit_size"]),
            group.get("param_rounding", d["param_rounding"]),
        )

    def _full_precision_only(self, group: Mapping[str, Any]) -> bool:
        precision, _, rounding = self.group_options(group)
        return precision == "fp32" and rounding == "nearest"

    def precision_of(self, p: Tensor, group: Mapping[str, Any] | None = None) -> str:
        """The precision of ``p``'s state: "fp32" (torch's), "bf16" or "8bit"."""
        if group is None:
            group = next((g for g in self.param_groups if any(q is p for q in g["params"])), None)
            if group is None:
                raise ValueError(
                    f"precision_of: a tensor of shape {tuple(p.shape)} is not a parameter of "
                    "this optimizer"
                )
        precision, min_8bit_size, _ = self.group_options(group)
        return _precision(p, precision, min_8bit_size)

    def _low_memory(self, p: Tensor, group: Mapping[str, Any]) -> bool:
        precision, min_8bit_size, rounding = self.group_options(group)
        rounded = rounding != "nearest" and p.dtype in HALF_DTYPES
        return rounded or _precision(p, precision, min_8bit_size) != "fp32"

    def validate_group(self, group: dict[str, Any]) -> None:
        super().validate_group(group)  # type: ignore[misc]
        options = self.group_options(group)
        check_options(*options)
        check_group_supports(group, options[0], options[2])

    def refuse_before_step(self) -> None:
        """With several param groups, every group's low-memory state is conformed to its
        options and checked (:func:`adamkit.kernels.lowbit.checked_local`) before any group is
        stepped: each group's step checks its own, and a state edited by hand in a later
        group would be refused after the earlier groups were updated. (Not under
        torch.compile, where each group's step checks its own.)"""
        super().refuse_before_step()  # type: ignore[misc]
        plans = self.__dict__.get("_step_plans", {})
        for plan in plans.values():
            plan.checked = None  # (what intact found at an earlier step that ended early)
        if len(self.param_groups) < 2 or torch.compiler.is_compiling():
            return
        spec = SPECS[self.algorithm]
        unchecked = []
        for group in self.param_groups:
            if self._full_precision_only(group) and not self.__dict__["_low_memory_seen"]:
                continue
            plan = plans.get(id(group))
            if plan is None or not plan.intact(self, group):
                unchecked.append(group)
            # else its params and state are what its last step checked (the replay takes
            # what intact found, and checks nothing twice)
        if unchecked:  # (conforming one may convert a param another group lists, by misuse)
            for plan in plans.values():
                plan.checked = None
        for group in unchecked:
            self._conform_group(group)
            # (a param stepped for the first time has no state to check yet)
            lowbit.refuse_overlapping([p for p in group["params"] if p.grad is not None])
            state = self.state
            stated = [p for p in group["params"] if p.grad is not None and state.get(p)
                      and self._low_memory(p, group)]  # fmt: skip
            if not stated:
                continue
            lowbit.checked_local(
                spec, lowbit.group_slots(spec, group), stated,
                [p.grad for p in stated], [state[p] for p in stated],
                [self.precision_of(p, group) for p in stated], self.group_options(group)[2],
            )  # fmt: skip

    # --- state -------------------------------------------------------------------------
    def init_low_memory_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any] | None:
        """``p``'s first state in its low-memory precision, or None if it has torch's."""
        if self._full_precision_only(group) or not self._low_memory(p, group):
            return None
        self.__dict__["_low_memory_seen"] = True
        state = self.state[p]
        layout = self.state_layout(group)  # type: ignore[attr-defined]
        for key, value in _low_memory_zeros(
            p, group, layout, self.precision_of(p, group), SPECS[self.algorithm]
        ).items():
            state[key] = value
        if _conform.kahan_needed(p, self.group_options(group)[2]):
            state[KAHAN_KEY] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        return state

    def _update_group(self, group: dict[str, Any], amp: dict[str, Tensor]) -> None:
        plans = self.__dict__.setdefault("_step_plans", {})
        if len(plans) > len(self.param_groups):  # a group was removed: free what it held
            live = {id(g): g for g in self.param_groups}
            for key in [k for k, plan in plans.items() if live.get(k) is not plan.group]:
                del plans[key]
        plan = plans.pop(id(group), None)
        if plan is not None and not amp and not torch.compiler.is_compiling():
            if plan.replayed(self, group):
                plans[id(group)] = plan
                return
        params, grads, states, any_sparse = self._collect(group)  # type: ignore[attr-defined]
        full_only = self._full_precision_only(group)
        if not full_only and not self.steps_taken:  # type: ignore[attr-defined]
            self._warn_unused_rounding(group)
        # (Under torch.compile always: Dynamo does not replay writes to self.__dict__, so a
        # flag set in a traced step, _low_memory_seen by the state it made, stays unset.)
        if (
            self.__dict__["_low_memory_seen"]
            or not full_only
            or torch.compiler.is_compiling()
            or self._low_memory_state_made_unseen()
        ):
            self._conform_group(group)
        low = [] if full_only else [self._low_memory(p, group) for p in params]
        everything = (params, states)
        low_replay = None
        if any(low):
            low_params = [p for p, lo in zip(params, low, strict=True) if lo]
            # torch.compile(opt.step): torch ops with the counters as tensors (Dynamo cannot
            # trace the numba kernel, nor read a counter on the host without a graph break).
            low_step = lowbit_compiled.step if torch.compiler.is_compiling() else lowbit.step
            low_replay = low_step(
                SPECS[self.algorithm],
                group,
                low_params,
                [
                    g.to_dense() if g.is_sparse else g
                    for g, lo in zip(grads, low, strict=True)
                    if lo
                ],
                [s for s, lo in zip(states, low, strict=True) if lo],
                [self.precision_of(p, group) for p in low_params],
                param_rounding=self.group_options(group)[2],
                streams=self._streams(group, low_params),
                fused=group.get("fused") is not False and not group.get("foreach"),
            )
            keep = [i for i, lo in enumerate(low) if not lo]
            params, grads = [params[i] for i in keep], [grads[i] for i in keep]
            states = [states[i] for i in keep]
            any_sparse = any_sparse and any(g.is_sparse for g in grads)
        replay = self._update_rest(group, params, grads, states, any_sparse, amp)
        if amp or torch.compiler.is_compiling():
            return
        plan = self._plan(group, everything, low, low_replay, replay if params else None)
        if plan is not None:
            plans[id(group)] = plan

    def _plan(self, group, everything, low, low_replay, replay) -> StepPlan | None:
        """A plan of this step (see :mod:`._step_plan`) when each kernel it ran took all of its
        params in one call, and every param of the group was stepped."""
        params, states = everything
        if not params or len(params) != len(group["params"]):
            return None
        kept: list[dict[str, Any] | None] = []
        for p, s in zip(params, states, strict=True):
            held = self.state.get(p)
            if held is s:
                kept.append(s)
            elif not s and not held:  # no state (torch's SGD without momentum): none kept,
                kept.append(held)  # or an empty entry that reading opt.state[p] made
            else:
                return None
        low_idx = tuple(i for i, lo in enumerate(low) if lo)
        rest_idx = tuple(i for i in range(len(params)) if not low or not low[i])
        if (low_idx and low_replay is None) or (rest_idx and replay is None):
            return None
        if (
            not low_idx
            and self._full_precision_only(group)
            and not self.__dict__["_low_memory_seen"]
        ):
            keys = self.step_state_keys(group)  # type: ignore[attr-defined]
            return StepPlan(self, group, kept, keys, replay)
        if not low_idx or type(low_replay) is not LowMemoryReplay:
            return None  # (fp32 state beside low-memory state elsewhere: not planned)
        parts = ((low_replay, low_idx),) + (((replay, rest_idx),) if rest_idx else ())
        return StepPlan(self, group, kept, None, Parts(parts))

    def _low_memory_state_made_unseen(self) -> bool:
        """Whether low-memory state was made without ``_low_memory_seen`` being set (by
        compiled steps: Dynamo does not replay the flag), so that an eager step after them,
        e.g. after ``opt.state_precision = "fp32"``, still converts it. Looked for only when
        the number of states changed: a plain step pays one ``len``."""
        count = len(self.state)
        if count == self.__dict__.get("_states_looked_at", 0):
            return False
        self.__dict__["_states_looked_at"] = count
        seen = any(_conform.holds_low_memory(entry) for entry in self.state.values())
        self.__dict__["_low_memory_seen"] = seen
        return seen

    def _update_rest(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        any_sparse: bool,
        amp: dict[str, Tensor],
    ) -> Replay | None:
        """Step the params whose state is torch's format. The float16/bfloat16 ones that the
        fused CPU kernel takes (:func:`adamkit.kernels.half_params.half_in_place`) are stepped in
        place by it, as the fp32 kernel would step float32 copies of them, after the others
        (whose checks have then passed); not under GradScaler's in-kernel unscaling."""
        spec = SPECS[self.algorithm]
        half = [] if amp else half_params.half_in_place(spec, group, params, grads, states)
        if half:
            rest = sorted(set(range(len(params))) - set(half))
            in_place = [pick(items, half) for items in (params, grads, states)]
            in_place[2] = half_params.counted_states(spec, in_place[2])
            params, grads, states = (pick(items, rest) for items in (params, grads, states))
            any_sparse = any_sparse and any(g.is_sparse for g in grads)
        replay = None
        if params:
            replay = self._update_params(group, params, grads, states, any_sparse, amp)  # type: ignore[attr-defined]
        if half:
            n = len(half)
            lowbit.step(
                spec, group, *in_place, ["fp32"] * n, param_rounding="nearest", streams=[0] * n
            )
            return None
        return replay

    def _warn_unused_rounding(self, group: dict[str, Any]) -> None:
        """At the first step, once per group: param_rounding other than "nearest" on a group
        without bfloat16/float16 params does nothing (it rounds half-precision params)."""
        if torch.compiler.is_compiling():
            return
        rounding = self.group_options(group)[2]
        if rounding == "nearest":
            return
        dtypes = {str(p.dtype).removeprefix("torch.") for p in group["params"]}
        if not dtypes or dtypes & {"bfloat16", "float16"}:
            return
        warnings.warn(
            f"param_rounding={rounding!r} has no effect while a param group has no bfloat16 "
            f"or float16 params: it rounds those after each step, and this group's params are "
            f"{', '.join(sorted(dtypes))} (stepped in their own precision, no rounding). "
            "Leave param_rounding='nearest' for them.",
            UserWarning,
            stacklevel=5,  # the caller of opt.step()
        )

    def _streams(self, group: dict[str, Any], params: list[Tensor]) -> list[int]:
        where = param_streams(self, group)
        return [where[id(p)] for p in params]

    def _conform_group(self, group: dict[str, Any]) -> None:
        """Put the state of each of ``group``'s params in the format the options give it now
        (after a cast of a param, a changed option, amsgrad switched): see :mod:`._conform`.
        Only when one of those changed since the group was last conformed: the check of every
        slot costs microseconds per param."""
        layout = self.state_layout(group)  # type: ignore[attr-defined]
        params = group["params"]
        signature = (  # (the params' ids: one moved here from a group of other options)
            self.group_options(group),
            tuple(layout),
            tuple(p.dtype for p in params),
            tuple(map(id, params)),
        )
        conformed = self.__dict__.setdefault("_conformed", {})
        if conformed.get(id(group)) == signature:
            return
        state = self.state
        stated = [(p, state[p]) for p in group["params"] if state.get(p)]
        if torch.compiler.is_compiling() and any(
            self._needs_conform(p, group, entry, layout) for p, entry in stated
        ):
            # Conversions run eagerly (a graph break, only when a slot must change): Inductor
            # (torch 2.13, CPU) encoded the partial last block of a slot converted inside a
            # compiled step wrongly (Inf codes, then NaN params). (Dynamo does not replay
            # the signature cached above, so a traced step comes here at every trace.)
            torch._dynamo.disable(self._conform_now)(group, layout, signature, stated)
        else:
            self._conform_now(group, layout, signature, stated)

    def _conform_now(
        self,
        group: dict[str, Any],
        layout: Mapping[str, Any],
        signature: tuple,
        stated: list[tuple[Tensor, dict[str, Any]]],
    ) -> None:
        _conform.check_shapes(stated)  # before anything changes
        spec = SPECS[self.algorithm]
        startable = {key for key, flag in zip(spec.tensor_state, spec.slot_flags, strict=False)
                     if flag is not None}  # fmt: skip
        _conform.check_present(stated, layout, startable)
        for p, entry in stated:
            self._conform_entry(p, group, entry, layout)
        self.__dict__.setdefault("_conformed", {})[id(group)] = signature

    def _needs_conform(
        self, p: Tensor, group: dict[str, Any], entry: dict[str, Any], layout: Mapping[str, Any]
    ) -> bool:
        fp32_dtype = functools.partial(self._fp32_state_dtype, p, group)
        rounding = self.group_options(group)[2]
        return _conform.needs_work(
            p, entry, layout, self.precision_of(p, group), rounding, fp32_dtype
        )

    def _conform_entry(
        self, p: Tensor, group: dict[str, Any], entry: dict[str, Any], layout: Mapping[str, Any]
    ) -> None:
        fp32_dtype = functools.partial(self._fp32_state_dtype, p, group)
        rounding = self.group_options(group)[2]
        if _conform.conform(p, entry, layout, self.precision_of(p, group), rounding, fp32_dtype):
            self.__dict__["_low_memory_seen"] = True

    def _fp32_state_dtype(self, p: Tensor, group: dict[str, Any]) -> torch.dtype:
        """The dtype of ``p``'s state in torch's format: as :meth:`zeros_state` makes it."""
        if p.dtype in HALF_DTYPES and not self._low_memory(p, group):
            record = self._backend_record(group, p)  # type: ignore[attr-defined]
            return torch.float32 if record.float32_state_for_half else p.dtype
        return p.dtype

    @property
    def _step_supports_amp_scaling(self) -> bool:
        if self.__dict__["_low_memory_seen"] or not all(
            self._full_precision_only(group) for group in self.param_groups
        ):
            return False  # GradScaler unscales and checks the gradients itself
        return super()._step_supports_amp_scaling  # type: ignore[misc]

    # --- checkpoints -----------------------------------------------------------------------


def _low_memory_zeros(
    p: Tensor, group: dict[str, Any], layout: Mapping[str, Any], precision: str, spec
) -> dict[str, Tensor]:
    """A fresh low-memory state for ``p``: torch's keys and order; the counters on the host,
    as torch's (low-memory state is never capturable)."""
    state: dict[str, Tensor] = {}
    for key in layout:
        if key == "step":
            state[key] = new_step(p, {**group, "capturable": False, "fused": False})
        elif key == spec.scalar_state:
            state[key] = scalar_state(spec.scalar_state_init, p, {**group, "capturable": False})
        elif slot_precision(precision, key, layout) == "8bit":
            # A DTensor param's (FSDP2) codes are a DTensor like it; their scales are of the
            # rank's local shard, whose blocks the kernels see.
            state[key] = torch.zeros_like(p, dtype=torch.uint8, memory_format=_CONTIGUOUS)
            state[key + ABSMAX_SUFFIX] = torch.zeros(
                blocks(to_local(p).numel()), dtype=torch.float32, device=p.device
            )
        elif slot_precision(precision, key, layout) == "bf16":
            # zeros_like: a DTensor parameter's state is a DTensor laid out like it (FSDP2)
            state[key] = torch.zeros_like(p, dtype=torch.bfloat16, memory_format=_CONTIGUOUS)
        else:
            state[key] = torch.zeros_like(p, memory_format=_CONTIGUOUS)
    return state


def param_streams(optimizer: Any, group: Mapping[str, Any]) -> dict[int, int]:
    """Each of ``group``'s params' random stream, by ``id``: its position among all the
    optimizer's params (which a checkpoint keeps, so a resumed run draws what an
    uninterrupted one would)."""
    offset = stream_offset(optimizer, group)
    return {id(p): offset + i for i, p in enumerate(group["params"])}
