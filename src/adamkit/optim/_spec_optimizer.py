"""An optimizer that is a signature, a docstring and an algorithm spec.

Everything else comes from the spec (:mod:`adamkit.algorithms`): hyperparameter checks (in
torch's words, on the defaults before ``params`` is read), the state a parameter gets
(torch's keys and dtypes), the checkpoint layout, and the kernels.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from ..algorithms import AlgorithmSpec
from ..algorithms import _checks as check
from ._base import KernelOptimizer, new_step, scalar_state
from ._checkpoint import Slot
from ._lowmem import LowMemoryState


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
        check.backend_flags(
            foreach=defaults.get("foreach"),
            fused=defaults.get("fused"),
            differentiable=bool(defaults.get("differentiable")),
        )
        super().__init__(params, defaults, on_nonfinite=on_nonfinite)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.algorithm = cls.spec.name
        cls.group_key_defaults = {
            "maximize": False,
            "foreach": None,
            "capturable": False,
            "differentiable": False,
            **{h.name: h.default for h in cls.spec.hyperparameters if h.check is None},
        }
        if cls.spec.torch_name in ("Adam", "AdamW"):  # torch's classes with a fused flag
            cls.group_key_defaults["fused"] = None

    @staticmethod
    def backend_defaults(
        foreach: bool | None,
        maximize: bool,
        capturable: bool,
        differentiable: bool,
        fused: bool | None,
    ) -> dict[str, Any]:
        """torch's group keys for the kernel choice; ``fused`` (which torch's class lacks) is
        a group key only when given, so param_groups stay exactly torch's."""
        keys = {
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
        }
        if fused is not None:
            keys["fused"] = fused
        return keys

    def validate_group(self, group: dict[str, Any]) -> None:
        self.spec.check(group)
        super().validate_group(group)

    def tensor_slots(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The tensor state keys a param of ``group`` has (a slot may depend on an option:
        Adam's ``max_exp_avg_sq`` exists with amsgrad), in the spec's order."""
        options = self.spec.slot_options
        if not options:
            return self.spec.tensor_state
        return (
            tuple(
                key
                for key, option in zip(self.spec.tensor_state, options, strict=False)
                if option is None or group[option]
            )
            + self.spec.tensor_state[len(options) :]
        )

    def state_layout(self, group: dict[str, Any]) -> dict[str, Slot]:
        layout = {"step": Slot.STEP}
        if self.spec.scalar_state:
            layout[self.spec.scalar_state] = Slot.SCALAR
        layout.update(dict.fromkeys(self.tensor_slots(group), Slot.LIKE_PARAM))
        return layout

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = self.state[p]
        if len(state) == 0 and self.init_low_memory_state(p, group) is None:
            state["step"] = new_step(p, group)
            if self.spec.scalar_state:
                state[self.spec.scalar_state] = scalar_state(self.spec.scalar_state_init, p, group)
            for key in self.tensor_slots(group):
                state[key] = self.zeros_state(p, group)
        return state

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
    ) -> None:
        spec = self.spec
        scalar = spec.scalar_state
        used = self.tensor_slots(group)
        self._step_kernel(group, params, amp)(
            params,
            grads,
            # an unused slot's list is empty, as torch's functional updates take it
            *([s[key] for s in states] if key in used else [] for key in spec.tensor_state),
            [s["step"] for s in states],
            [s[scalar] for s in states] if scalar else [],
            group=group,
        )
