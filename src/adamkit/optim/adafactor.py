"""Adafactor: a drop-in for ``torch.optim.Adafactor`` (torch 2.13), with a fused CPU step.

The math is in :mod:`adamkit.reference.adafactor`. ``foreach=True``/``False`` run torch's own
functional update (``torch.optim._adafactor.adafactor``), so those results are torch's bit for
bit; the default on CPU is :mod:`adamkit.kernels.adafactor_cpu`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim._adafactor import adafactor as torch_adafactor

from ..algorithms import _checks as check
from ..algorithms.state_formats import KAHAN_KEY, tensor_seed
from ..kernels.lowbit_torch import param_stores
from ..kernels.wrappers import HALF_DTYPES
from ..reference import adafactor as reference
from ._base import KernelOptimizer, new_step
from ._checkpoint import Slot, expected_shape
from ._lowmem import param_streams
from ._lowmem_options import ROUNDINGS

_MATRIX_LAYOUT = {"step": Slot.STEP, "row_var": Slot.ROW_FACTOR, "col_var": Slot.COL_FACTOR}
_VECTOR_LAYOUT = {"step": Slot.STEP, "variance": Slot.LIKE_PARAM}
_KAHAN_LAYOUT = {KAHAN_KEY: Slot.OPTIONAL_LIKE_PARAM}  # a half param's, with "kahan"


def _torch_forloop(params: list[Tensor], grads: list[Tensor], states: list[dict], **kw: Any):
    _torch_kernel(params, grads, states, foreach=False, **kw)


def _torch_kernel(
    params: list[Tensor], grads: list[Tensor], states: list[dict], *, foreach: bool, **kw: Any
) -> None:
    torch_adafactor(
        params, grads,
        [s.get("row_var") for s in states], [s.get("col_var") for s in states],
        [s.get("variance") for s in states], [s["step"] for s in states],
        foreach=foreach, **kw,
    )  # fmt: skip


class Adafactor(KernelOptimizer, torch.optim.Adafactor):
    __doc__ = (
        (reference.__doc__ or "").split(">>>")[0]
        + """
    Arguments, defaults and state are torch.optim.Adafactor's: ``step``, and ``row_var``
    (..., n, 1) and ``col_var`` (..., 1, m) for a param of two or more dimensions, ``variance``
    for a vector; its checkpoints load both ways.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: the cap of the relative step size ρ_t = min(lr, 1/√t), default 1e-2; also the
            decay's rate.
        beta2_decay: τ in β̂2_t = 1 - t^τ, a number <= 0, default -0.8.
        eps: (ε1, ε2), default (None, 1e-3): ε1 floors the second-moment estimate (None: the
            machine epsilon of the group's first param dtype, as torch's for-loop, its CPU
            default; with foreach=True, torch's foreach picks the dtype), ε2 the param's RMS.
        d: the clipping threshold of the update's RMS, a number >= 1 (math.inf: no clipping).
        weight_decay: λ, decoupled: φ·(1 - lr·λ) before the update; default 0.
        maximize: ascend the objective instead of descending it.
        foreach: True or False for torch's own foreach or for-loop update (results equal
            torch.optim.Adafactor's bit for bit).
        fused: True for adamkit's single-kernel step (float32/float64 contiguous CPU params;
            others take torch's for-loop). With neither foreach nor fused set, that is the
            default on CPU; other devices take torch's foreach update.
        on_nonfinite: "propagate" (default), "skip" or "raise" for a step whose gradient
            holds NaN or Inf (see :class:`adamkit.Adam`).
        param_rounding: how a bfloat16/float16 param takes its new value: "nearest"
            (default: torch's step in the param's dtype, bit for bit), or the step computed
            in float32 (on float32 copies of the param, its gradient and its factors, which
            stay in the param's dtype, rounded to nearest) and the param rounded
            "stochastic"ally (unbiased, from a random stream of the param's own that a
            resumed run draws alike) or with "kahan" summation (the rounding error kept in
            state ``kahan_comp`` and added back at the next step). A group may set its own.

    An empty param is not changed (torch's step raises ZeroDivisionError on it); its step
    count advances.

    Example:
        >>> import torch, adamkit
        >>> w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        >>> opt = adamkit.Adafactor([w])
        >>> w.grad = torch.tensor([3.0, -0.5])
        >>> opt.step()  # α = RMS(w)·min(lr, 1) = 0.0158; u = ±1, RMS 1, so w - α·sign(g)
        >>> w.data
        tensor([ 0.9842, -1.9842])
    """
    )

    algorithm: ClassVar[str] = "adafactor"
    group_key_defaults: ClassVar[dict[str, Any]] = {"foreach": None, "maximize": False}

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fused: bool | None = None,
        on_nonfinite: str = "propagate",
        param_rounding: str = "nearest",
    ) -> None:
        _check_rounding(param_rounding)
        self.__dict__["param_rounding"] = param_rounding  # (read by validate_group below)
        defaults: dict[str, Any] = dict(
            lr=lr, beta2_decay=beta2_decay, eps=eps, d=d, weight_decay=weight_decay,
            foreach=foreach, maximize=maximize,
        )  # fmt: skip
        if fused is not None:
            defaults["fused"] = fused
        super().__init__(params, defaults, on_nonfinite=on_nonfinite)

    def validate_group(self, group: dict[str, Any]) -> None:
        """torch's checks in torch's words; NaN and Inf are refused too (but d=math.inf)."""
        _at_least("lr", group["lr"], 0.0, "Learning rate should be >= 0")
        beta2_decay = check.as_number("beta2_decay", group["beta2_decay"])
        if not (math.isfinite(beta2_decay) and beta2_decay <= 0):
            raise ValueError(
                f"beta2_decay should be <= 0 but is: {group['beta2_decay']}; it must be a "
                "finite number <= 0"
            )
        eps = group["eps"]
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise ValueError(f"Invalid eps: {eps!r}; eps must be a pair (eps1 or None, eps2)")
        if eps[0] is not None:
            _at_least("eps[0]", eps[0], 0.0, "epsilon1 should be >= 0", "None or ")
        _at_least("eps[1]", eps[1], 0.0, "epsilon2 should be >= 0")
        d = check.as_number("d", group["d"])
        if not d >= 1.0:  # (math.inf is allowed: no clipping)
            raise ValueError(
                f"Clipping threshold d should be >= 1 but is: {group['d']}; d must be a "
                "number >= 1 (math.inf: no clipping)"
            )
        _at_least("weight_decay", group["weight_decay"], 0.0, "weight_decay should be >= 0")
        if group.get("fused") and group.get("foreach"):
            raise ValueError("`fused` and `foreach` cannot be `True` together; set one of them")
        _check_rounding(self._rounding(group))

    def _rounding(self, group: Mapping[str, Any]) -> str:
        return group.get("param_rounding", self.__dict__.get("param_rounding", "nearest"))

    def param_state_layout(self, group: dict[str, Any], param: Tensor) -> dict[str, Slot]:
        """The state keys of ``param``: factored for two or more dimensions, as torch's; a
        half param may keep Kahan's compensation."""
        layout = _MATRIX_LAYOUT if param.dim() > 1 else _VECTOR_LAYOUT
        return {**layout, **_KAHAN_LAYOUT} if param.dtype in HALF_DTYPES else layout

    @property
    def _step_supports_amp_scaling(self) -> bool:
        return False  # GradScaler unscales before step, as for torch's Adafactor

    def refuse_before_step(self) -> None:
        """Raise, before any group is updated: torch's errors for complex params and sparse
        gradients (torch raises them after updating the groups before), and state that no
        longer fits its param (a param reshaped or cast after a step: torch fails mid-step,
        and the fused kernel must never read state of another size)."""
        for gi, group in enumerate(self.param_groups):
            for pi, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if torch.is_complex(p):
                    raise RuntimeError("Adafactor does not support complex parameters")
                if p.grad.is_sparse:
                    raise RuntimeError("Adafactor does not support sparse gradients")
                state = self.state.get(p)
                if state and not _fits(state, p, p.grad.dtype):
                    _check_state_fits(state, p, f"param {pi} of group {gi}")

    def _init_state(self, p: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        state = self.state[p]
        state["step"] = new_step(p, group)
        grad = p.grad
        assert grad is not None
        if grad.dim() > 1:
            state["row_var"] = grad.new_zeros(expected_shape(grad, Slot.ROW_FACTOR))
            state["col_var"] = grad.new_zeros(expected_shape(grad, Slot.COL_FACTOR))
        else:
            state["variance"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
        return state

    def _update_group(self, group: dict[str, Any], amp: dict[str, Tensor]) -> None:
        if amp:
            raise RuntimeError(
                "Adafactor: grad scaling must happen before step() (GradScaler unscales for it)"
            )
        params, grads, states, _ = self._collect(group)
        if not params:
            return
        eps1, eps2 = group["eps"]
        hyper = dict(
            d=group["d"], lr=group["lr"], beta2_decay=group["beta2_decay"],
            weight_decay=group["weight_decay"], eps1=eps1, eps2=eps2, maximize=group["maximize"],
        )  # fmt: skip
        if eps1 is None:  # torch's for-loop rule (step_eps1); its foreach is left to it below
            hyper["eps1"] = torch.finfo(params[0].dtype).eps
        collected = params
        empty = [i for i, p in enumerate(params) if p.numel() == 0]
        for i in empty:  # nothing to update (torch would divide by √0); the count advances
            states[i]["step"] += 1
        if empty:
            keep = [i for i in range(len(params)) if params[i].numel() > 0]
            params, grads, states = ([xs[i] for i in keep] for xs in (params, grads, states))
            if not params:
                return
        rounding = self._rounding(group)
        rounded = [i for i, p in enumerate(params) if _conform_kahan(p, states[i], rounding)]
        if rounded:  # (ε1 resolved for the whole group, as one kernel call would)
            streams = param_streams(self, group)
            group = {**group, "eps": (step_eps1(group, collected), eps2)}
            hyper = {**hyper, "eps1": group["eps"][0]}
            self._step_in_float32(group, rounded, params, grads, states, hyper, streams)
            keep = sorted(set(range(len(params))) - set(rounded))
            params, grads, states = ([xs[i] for i in keep] for xs in (params, grads, states))
            if not params:
                return
        self._dispatch(group, params, grads, states, hyper)

    def _dispatch(self, group, params, grads, states, hyper) -> None:
        """The step of ``params`` by the kernel the group asks for."""
        foreach, fused = group.get("foreach"), group.get("fused")
        explicit_torch = foreach is not None or fused is False
        if explicit_torch or torch.compiler.is_compiling() or not params[0].is_cpu:
            use_foreach = bool(foreach) or not params[0].is_cpu
            if use_foreach:  # torch's foreach resolves ε1 None by its own rule (a dtype bucket's)
                hyper = {**hyper, "eps1": group["eps"][0]}
            _torch_kernel(params, grads, states, foreach=use_foreach, **hyper)
            return
        self._fused(params, grads, states, hyper)

    def _step_in_float32(self, group, idx, params, grads, states, hyper, streams) -> None:
        """The half params at ``idx``, rounded "stochastic" or "kahan": the step on float32
        copies (the factors too, stored back to nearest), then the param rounded, drawing
        from its random stream in ``streams``."""
        rounding = self._rounding(group)
        copies = []
        for i in idx:
            p, state = params[i], states[i]
            p32 = p.detach().to(torch.float32)
            if rounding == "kahan":
                p32 += state[KAHAN_KEY].to(torch.float32)
            factors = {k: v.to(torch.float32) for k, v in state.items() if k in _FACTORS}
            copies.append((p32, grads[i].to(torch.float32), {**factors, "step": state["step"]}))
        self._dispatch(group, *(list(xs) for xs in zip(*copies, strict=True)), hyper)
        for i, (p32, _, state32) in zip(idx, copies, strict=True):
            p, state = params[i], states[i]
            seed = tensor_seed(float(state["step"]), p.numel(), streams[id(p)])
            for key, value in param_stores(p, p32, rounding, seed).items():
                (p.detach() if key == "param" else state[key]).copy_(value)
            for key in _FACTORS & state.keys():
                state[key].copy_(state32[key])

    def _fused(
        self, params: list[Tensor], grads: list[Tensor], states: list[dict], hyper: dict[str, Any]
    ) -> None:
        """adamkit's kernel for the tensors it takes, torch's for-loop for the rest."""
        from ..kernels import numba_import

        numba_import.prepare()
        from ..kernels import adafactor_cpu  # (imports numba: only once a fused step runs)

        lr = check.as_number("lr", hyper["lr"])
        rest = []
        for p, g, state in zip(params, grads, states, strict=True):
            if not adafactor_cpu.takes(p, g, state):
                rest.append((p, g, state))
                continue
            step = state["step"]
            step += 1
            adafactor_cpu.step(
                p, g, state, t=float(step), lr=lr, beta2_decay=float(hyper["beta2_decay"]),
                eps1=float(hyper["eps1"]), eps2=float(hyper["eps2"]), d=float(hyper["d"]),
                weight_decay=float(hyper["weight_decay"]), maximize=bool(hyper["maximize"]),
            )  # fmt: skip
        if rest:
            _torch_forloop(*(list(xs) for xs in zip(*rest, strict=True)), **hyper)


_FACTORS = {"row_var", "col_var", "variance"}


def _check_rounding(rounding: Any) -> None:
    if rounding not in ROUNDINGS:
        raise ValueError(
            f"Invalid param_rounding: {rounding!r}; expected one of "
            f"{', '.join(map(repr, ROUNDINGS))}"
        )


def _conform_kahan(p: Tensor, state: dict[str, Any], rounding: str) -> bool:
    """Whether half param ``p`` is stepped in float32 and rounded by ``rounding``; Kahan's
    compensation made where it is missing (a checkpoint without it: zeros), and folded
    back into the param where the rounding is no longer "kahan"."""
    comp = state.get(KAHAN_KEY)
    if p.dtype not in HALF_DTYPES:
        return False
    if rounding == "kahan" and comp is None:
        state[KAHAN_KEY] = torch.zeros_like(p, memory_format=torch.contiguous_format)
    elif rounding != "kahan" and comp is not None:
        p.detach().add_(state.pop(KAHAN_KEY))
    return rounding != "nearest"


def step_eps1(group: Mapping[str, Any], params: Sequence[Tensor]) -> float | None:
    """The ε1 a step of ``params`` (the group's params with a gradient, in order) uses: the
    group's, or for None torch's choice, which depends on the path: its foreach (``foreach=
    True``, or a device other than the CPU) takes the machine epsilon of its first dtype
    bucket (in the order of torch's grouping, not the params': float64 before float32, say),
    its for-loop and adamkit's fused step that of the first param's dtype."""
    eps1 = group["eps"][0]
    if eps1 is not None or not params:
        return eps1
    stepped = [p for p in params if p.numel()]  # (torch's foreach is handed these)
    foreach = stepped and (bool(group.get("foreach")) or not stepped[0].is_cpu)
    if not foreach:
        return torch.finfo(params[0].dtype).eps
    if len({p.dtype for p in stepped}) > 1:
        buckets = torch.optim.Optimizer._group_tensors_by_device_and_dtype([stepped])
        return torch.finfo(next(iter(buckets))[1]).eps
    return torch.finfo(stepped[0].dtype).eps


def _fits(state: dict[str, Any], p: Tensor, dtype: torch.dtype) -> bool:
    """Whether ``p``'s state has the keys, shapes and dtype its step reads (the quick check,
    run for every param on every step; :func:`_check_state_fits` says what is wrong)."""
    shape = p.shape
    if len(shape) > 1:
        row, col = state.get("row_var"), state.get("col_var")
        return (
            isinstance(row, Tensor) and isinstance(col, Tensor)
            and row.dtype == dtype and col.dtype == dtype
            and row.shape[:-1] == shape[:-1] and row.shape[-1] == 1
            and col.shape[:-2] == shape[:-2] and col.shape[-2:] == (1, shape[-1])
        )  # fmt: skip
    variance = state.get("variance")
    return isinstance(variance, Tensor) and variance.dtype == dtype and variance.shape == shape


def _check_state_fits(state: dict[str, Any], p: Tensor, where: str) -> None:
    dtype = p.grad.dtype if p.grad is not None else p.dtype
    layout = _MATRIX_LAYOUT if p.dim() > 1 else _VECTOR_LAYOUT
    for key, slot in layout.items():
        if slot is Slot.STEP:
            continue
        value = state.get(key)
        if not isinstance(value, Tensor):
            kind = "two or more dimensions" if p.dim() > 1 else "fewer than two dimensions"
            raise RuntimeError(
                f"Adafactor: {where} has {kind} (shape {tuple(p.shape)}) but its state has no "
                f"{key!r} (keys {sorted(state)}): the param changed shape after a step; nothing "
                "was updated. Load a checkpoint that fits it, or clear its state "
                "(optimizer.state.pop(param))."
            )
        expected = expected_shape(p, slot)
        if tuple(value.shape) != expected or value.dtype != dtype:
            raise RuntimeError(
                f"Adafactor: {where} is {tuple(p.shape)} {dtype} but its state {key!r} is "
                f"{tuple(value.shape)} {value.dtype} (expected {expected} {dtype}): the "
                "param changed shape or dtype after a step; nothing was updated. Load a "
                "checkpoint that fits it, or clear its state (optimizer.state.pop(param))."
            )


def _at_least(name: str, value: Any, low: float, torch_words: str, also: str = "") -> None:
    """torch's message (what was wrong), then what adamkit accepts; NaN and Inf refused."""
    number = check.as_number(name, value)
    if not (math.isfinite(number) and number >= low):
        raise ValueError(
            f"{torch_words} but is: {value}; {name} must be {also}a finite number >= {low:g}"
        )
