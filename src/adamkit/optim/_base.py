"""Bookkeeping shared by adamkit's optimizers: grad mode, closures, lazy state, step counts.

Subclasses say which state tensors a parameter has and how to call their kernel; no
arithmetic on parameters happens here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import torch
import torch.optim.optimizer as optimizer_module
from torch import Tensor

from ..kernels import registry, wrappers
from . import _nonfinite
from ._changed_groups import check_changed_groups
from ._checkpoint import check_state_dict


class Collected(NamedTuple):
    """What a step needs of a group: params with a gradient, their gradients, state dicts."""

    params: list[Tensor]
    grads: list[Tensor]
    states: list[dict[str, Any]]
    any_sparse: bool


def step_dtype(device: torch.device) -> torch.dtype:
    """dtype of ``state["step"]``: float64, exact to 2^53 steps (torch's float32 count stops
    at 2^24 = 16.8M). torch.optim loads it as it is, or casts it to float32 for its fused and
    capturable paths. MPS has no float64."""
    return torch.float32 if device.type == "mps" else torch.float64


def new_step(param: Tensor, group: dict[str, Any]) -> Tensor:
    """A zero step counter: on the parameter's device for capturable/fused, else on the CPU."""
    on_device = bool(group.get("capturable") or group.get("fused"))
    device = param.device if on_device else torch.device("cpu")
    return torch.zeros((), dtype=step_dtype(device), device=device)


def as_exact_step(step: Any, param: Tensor, group: dict[str, Any]) -> Tensor:
    """A loaded step count (number, or torch's float32 tensor) as adamkit's counter."""
    value = step.item() if torch.is_tensor(step) else float(step)
    return new_step(param, group).fill_(value)


def scalar_state(value: float | Tensor, p: Tensor, group: dict[str, Any]) -> Tensor:
    """A per-tensor scalar state (NAdam's mu_product) in torch's dtype and place for it:
    float32 (float64 under a float64 default dtype), on the parameter's device only when
    capturable."""
    dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    device = p.device if group.get("capturable") else torch.device("cpu")
    if isinstance(value, Tensor):
        return value.to(dtype=dtype, device=device)
    return torch.full((), value, dtype=dtype, device=device)


# The for-loop kernel of each algorithm (half precision in float32, as everywhere else),
# looked up by a plain dict in a torch.compile'd step: see KernelOptimizer._step_kernel.
_TRACEABLE: dict[str, Callable[..., None]] = {}


class KernelOptimizer(torch.optim.Optimizer):
    """A torch.optim.Optimizer whose update math lives in :mod:`adamkit.kernels`."""

    algorithm: ClassVar[str]
    # Group keys a checkpoint from an older torch may lack, with their defaults.
    group_key_defaults: ClassVar[dict[str, Any]] = {}
    sparse_grads_supported: ClassVar[bool] = False
    # Per param group, what check_changed_groups last validated (not pickled; the class's
    # empty default means none yet).
    _checked_groups: list[Any] | tuple[()] = ()
    # Optimizer-wide options kept as attributes (not group keys, so param_groups stay exactly
    # torch's), with the values an unpickled older optimizer gets.
    option_defaults: ClassVar[dict[str, Any]] = {
        "on_nonfinite": "propagate",
        "skipped_steps": 0,
        "steps_taken": 0,
    }

    def __init__(
        self, params: Any, defaults: dict[str, Any], *, on_nonfinite: str = "propagate"
    ) -> None:
        # Hyperparameters first, before params is looked at, as torch checks them (torch's
        # own error tests pass params=None and expect the ValueError).
        self.validate_group(defaults)
        self.on_nonfinite = _nonfinite.check_mode(on_nonfinite)
        self.skipped_steps = 0  # steps skipped for a NaN/Inf gradient (on_nonfinite="skip")
        # Steps this optimizer object has taken (SGD's diagnostics read it: torch's SGD state
        # has no step count; not part of state_dict, whose format is torch's).
        self.steps_taken = 0
        # Optimizer's own __init__, not the next class in the MRO: each adamkit optimizer also
        # derives from its torch.optim namesake (for isinstance), whose __init__ takes
        # torch's arguments.
        torch.optim.Optimizer.__init__(self, params, defaults)
        # what a torch.compile'd step of a spec-built algorithm runs
        if self.algorithm not in _TRACEABLE and self.algorithm in registry.ALGORITHMS:
            forloop = registry.resolve(self.algorithm, "forloop", "cpu").kernel(self.algorithm)
            _TRACEABLE[self.algorithm] = wrappers.Adapted(forloop, upcast_half=True).full

    def state_layout(self, group: dict[str, Any]) -> dict[str, Any]:
        """{state key: Slot} that a stepped parameter of ``group`` has (for load_state_dict)."""
        raise NotImplementedError

    def param_state_layout(self, group: dict[str, Any], param: Tensor) -> dict[str, Any]:
        """{state key: Slot} of ``param`` once stepped: the group's layout, unless the keys
        depend on the param (Adafactor's factored state)."""
        return self.state_layout(group)

    @staticmethod
    def profile_hook_step(func: Callable[..., Any]) -> Callable[..., Any]:
        """torch.optim's step wrapper (hooks and a profiler range), skipped when no profiler
        is running and no step hook is registered: its record_function costs ~20 µs a step,
        a fifth of a small model's whole step."""
        traced = torch.optim.Optimizer.profile_hook_step(func)

        @functools.wraps(func)
        def wrapper(self: KernelOptimizer, *args: Any, **kwargs: Any) -> Any:
            if torch.compiler.is_compiling():  # Dynamo ignores the profiler range itself
                return traced(self, *args, **kwargs)
            if (
                torch.autograd._profiler_enabled()
                or self._optimizer_step_pre_hooks
                or self._optimizer_step_post_hooks
                or optimizer_module._global_optimizer_pre_hooks
                or optimizer_module._global_optimizer_post_hooks
            ):
                return traced(self, *args, **kwargs)  # hooks see the step's own arguments
            return func(self, *args, **kwargs)

        return wrapper

    def validate_group(self, group: dict[str, Any]) -> None:
        """Raise ValueError naming any out-of-range hyperparameter of ``group``."""

    def validate_changed(self, group: dict[str, Any], changed: set[str]) -> bool:
        """Validate ``group``, of which only the ``changed`` keys have new values since it was
        last validated, by checking those alone; False where that is not enough (then
        :meth:`validate_group` runs)."""
        return False

    def refuse_before_step(self) -> None:
        """Raise for inputs the step refuses (before any group is updated); subclasses."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a param group (as torch.optim does), validating its hyperparameters first.

        An invalid group raises ValueError and leaves the optimizer as it was.
        """
        super().add_param_group(param_group)
        try:
            self.validate_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update({key: getattr(self, key) for key in self.option_defaults})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for key, value in self.option_defaults.items():
            self.__dict__.setdefault(key, value)
        for group in self.param_groups:
            for key, value in self.group_key_defaults.items():
                group.setdefault(key, value)
            for p in group["params"]:
                p_state = self.state.get(p, {})
                step = p_state.get("step")
                if step is not None and not (
                    torch.is_tensor(step) and step.dtype == step_dtype(step.device)
                ):
                    p_state["step"] = as_exact_step(step, p, group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict (adamkit's or torch.optim's) after checking all of it.

        Group and parameter counts, hyperparameters, state keys, shapes and dtypes are
        checked first; a mismatch raises :class:`~adamkit.optim.StateDictError` and leaves
        the optimizer exactly as it was.
        """
        check_state_dict(self, state_dict)
        self.__dict__.pop("_step_plans", None)  # (they hold the old state's tensors)
        super().load_state_dict(state_dict)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform one optimization step.

        Args:
            closure: optional callable that re-evaluates the model and returns the loss.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not torch.compiler.is_compiling():
            check_changed_groups(self)  # values written into param_groups since the last step
        self.refuse_before_step()
        # Under torch.amp.GradScaler with the Triton kernels (see _step_supports_amp_scaling),
        # the scaler hands over grad_scale/found_inf: gradients are still scaled and may hold
        # Inf, which found_inf already accounts for.
        amp = {}
        own = self.__dict__  # (where GradScaler sets them, for one step)
        for key in ("grad_scale", "found_inf"):
            value = own.get(key)
            if value is not None:
                amp[key] = value
        if not amp and self.on_nonfinite != "propagate" and not self._gradients_finite():
            return loss
        # torch._C's switch, not the torch.set_grad_enabled context manager: this runs on
        # every step, and the context manager's Python layers cost microseconds.
        grad_was_enabled = torch.is_grad_enabled()
        torch._C._set_grad_enabled(bool(self.defaults.get("differentiable", False)))
        try:
            for group in self.param_groups:
                self._update_group(group, amp)
        finally:
            torch._C._set_grad_enabled(grad_was_enabled)
        self.steps_taken += 1
        return loss

    @property
    def _step_supports_amp_scaling(self) -> bool:
        """True when every parameter is updated by the Triton kernels, which unscale gradients
        and skip Inf steps themselves: torch.amp.GradScaler then passes ``grad_scale`` and
        ``found_inf`` instead of unscaling (as with torch's fused optimizers)."""
        params = [p for g in self.param_groups for p in g["params"]]
        return bool(params) and all(
            self._uses_triton(group, p) for group in self.param_groups for p in group["params"]
        )

    def _uses_triton(self, group: dict[str, Any], p: Tensor) -> bool:
        """Whether ``p``'s backend takes GradScaler's grad_scale/found_inf itself."""
        return self._backend_record(group, p).grad_scaler

    def _backend_record(self, group: dict[str, Any], p: Tensor) -> registry.Backend:
        backend, device_type = self._backend(group, [p])
        return registry.resolve(self.algorithm, backend, device_type)

    def zeros_state(self, p: Tensor, group: dict[str, Any]) -> Tensor:
        """A zero state tensor for ``p``: float32 for half-precision parameters whose backend
        keeps float32 state (the Triton kernels: mixed precision), else the parameter's dtype,
        as in torch."""
        half = (
            p.dtype in wrappers.HALF_DTYPES
            and self._backend_record(group, p).float32_state_for_half
        )
        return torch.zeros_like(
            p, dtype=torch.float32 if half else None, memory_format=torch.preserve_format
        )

    def _gradients_finite(self) -> bool:
        """False (after counting a skipped step) if a gradient is NaN/Inf and mode is skip;
        raises for mode raise. Runs before anything is changed."""
        bad = _nonfinite.first_nonfinite(self.param_groups)
        if bad is None:
            return True
        if self.on_nonfinite == "raise":
            raise _nonfinite.NonFiniteGradientError(
                f"{type(self).__name__}: the gradient of "
                f"{_nonfinite.describe(self.param_groups, *bad)} holds NaN or Inf; nothing "
                "was updated. on_nonfinite='raise' refuses such steps; pass "
                "on_nonfinite='skip' to skip them or 'propagate' to apply them."
            )
        self.skipped_steps += 1
        return False

    def _update_group(self, group: dict[str, Any], amp: dict[str, Tensor]) -> None:
        """Update one group; ``amp`` holds GradScaler's grad_scale/found_inf, if any."""
        raise NotImplementedError

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        """``p``'s state dict, with its tensors created on the first step (subclasses)."""
        return self.state[p]

    def _collect(self, group: dict[str, Any]) -> Collected:
        """The params of ``group`` that have a gradient, their gradients and state dicts.

        One pass, since it runs for every parameter on every step: a small model's step is
        dominated by such per-parameter Python work.
        """
        params, grads, states = [], [], []
        any_sparse = False
        state, init = self.state, self._init_state
        for p in group["params"]:
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                if not self.sparse_grads_supported:
                    raise RuntimeError(
                        f"{type(self).__name__} does not support sparse gradients, "
                        "please consider SparseAdam instead"
                    )
                any_sparse = True
            params.append(p)
            grads.append(g)
            p_state = state.get(p)  # no entry is made for a param that is not stepped
            states.append(p_state if p_state else init(p, group))
        return Collected(params, grads, states, any_sparse)

    def _backend(
        self, group: dict[str, Any], params: list[Tensor], sparse: bool = False
    ) -> tuple[str, str]:
        """(backend, device type) that updates ``params`` of ``group``."""
        return _backend(*_kernel_key(group, params, sparse))

    def _step_kernel(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        amp: dict[str, Tensor],
        *,
        sparse: bool = False,
    ) -> registry.Kernel:
        """The kernel that updates ``params`` of ``group`` this step (one cached lookup), with
        GradScaler's ``amp`` keywords bound when there are any (so that the usual call passes
        no ``**``: +0.5 µs a call)."""
        if torch.compiler.is_compiling():
            # torch.compile(opt.step): plain torch ops Dynamo can trace (it cannot trace a
            # numba call or a Triton launch), chosen when the optimizer was made, so that the
            # trace calls no cached lookup (Dynamo warns on lru_cache'd functions).
            kernel = _TRACEABLE[self.algorithm]
            return functools.partial(kernel, **amp) if amp else kernel
        adapted = _adapted_kernel(self.algorithm, *_kernel_key(group, params, sparse))
        kernel = adapted.for_params(params)
        return functools.partial(kernel, **amp) if amp else kernel


def _kernel_key(
    group: dict[str, Any], params: list[Tensor], sparse: bool
) -> tuple[bool | None, bool | None, bool, bool, bool, str]:
    """What the choice of kernel depends on: the group's flags, sparse gradients, device."""
    return (
        group.get("foreach"),
        group.get("fused"),
        bool(group.get("differentiable", False)),
        bool(group.get("capturable", False)),
        sparse,
        _device_type(params[0]) if params else "cpu",
    )


def _device_type(t: Tensor) -> str:
    return "cpu" if t.is_cpu else t.device.type  # is_cpu: no torch.device object made


def _backend(
    foreach: bool | None,
    fused: bool | None,
    differentiable: bool,
    capturable: bool,
    sparse: bool,
    device_type: str,
) -> tuple[str, str]:
    backend = registry.choose_backend(
        foreach=foreach, fused=fused, differentiable=differentiable, capturable=capturable
    )
    if sparse:
        backend = "forloop"  # only plain torch ops accept sparse gradients
    return backend, device_type


@functools.lru_cache(maxsize=64)
def _adapted_kernel(algorithm: str, *key: Any) -> wrappers.Adapted:
    """The kernel for ``_kernel_key`` ``key``, adapted to DTensor shards and half precision;
    built once per combination."""
    backend, device_type = _backend(*key)
    differentiable = key[2]
    record = registry.resolve(algorithm, backend, device_type)
    # float32 copies of half tensors would cut the autograd graph of a differentiable step.
    upcast_half = not differentiable and not record.handles_half
    return wrappers.Adapted(record.kernel(algorithm), upcast_half=upcast_half)


registry.on_change(_adapted_kernel.cache_clear)  # registry.set_default changes the choice
