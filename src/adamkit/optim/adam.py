"""Adam and AdamW: drop-in replacements for torch.optim.Adam and torch.optim.AdamW."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..algorithms import adam as adam_spec
from ..kernels import sparse
from ..kernels._tensors import increment, scalar
from ..kernels.spec_kernels import Replay
from ._spec_optimizer import SpecOptimizer


class Adam(SpecOptimizer, torch.optim.Adam):
    r"""Adam (Kingma & Ba, 2015), with torch.optim.Adam's arguments, defaults and state.

    For each parameter φ with gradient g_t at step t (m_0 = v_0 = 0)::

        m_t = β1·m_{t-1} + (1-β1)·g_t
        v_t = β2·v_{t-1} + (1-β2)·g_t²
        φ_t = φ_{t-1} - α · m̂_t / (√v̂_t + ε),   m̂_t = m_t/(1-β1^t),  v̂_t = v_t/(1-β2^t)

    ε is added after the square root of the bias-corrected v̂ (paper and torch.optim); Keras's
    ε̂ is added to √v_t before bias correction, i.e. ``ε = ε̂/√(1-β2^t)`` here.
    ``weight_decay`` adds λ·φ to the gradient (L2), or with ``decoupled_weight_decay=True``
    multiplies φ by (1 - α·λ) before the update (AdamW). ``amsgrad`` uses the running max of v.
    Complex parameters are optimized as pairs of real coordinates, as torch does.

    Args:
        params: iterable of parameters or of dicts defining parameter groups.
        lr: learning rate α (float or 1-element tensor), default 1e-3.
        betas: (β1, β2), default (0.9, 0.999).
        eps: ε, default 1e-8.
        weight_decay: λ, default 0.
        amsgrad: use AMSGrad's max of v, default False.
        foreach: True for the multi-tensor kernel, False for the for-loop kernel.
        maximize: ascend the objective instead of descending it.
        capturable: keep the step count on the device (no host synchronisation).
        differentiable: keep autograd history through the step (for-loop kernel).
        fused: True for the single-pass kernel. With neither foreach nor fused set,
            adamkit picks the fastest kernel for the device.
        decoupled_weight_decay: AdamW's decoupled weight decay.
        cautious: mask the update where it disagrees in sign with the gradient and
            renormalise by 1/max(mean(mask), 1e-3) (timm's ``caution``; decoupled decay not
            masked; docs/conventions.md). Default False.
        on_nonfinite: what a step does when a gradient holds NaN or Inf: "propagate"
            (default, as torch.optim), "skip" (nothing changes; ``skipped_steps`` counts it)
            or "raise" (:class:`~adamkit.optim.NonFiniteGradientError`, nothing changes).
        lazy_sparse: for sparse gradients (``nn.Embedding(sparse=True)``), update only the
            rows present in the gradient, as torch.optim.SparseAdam does (no weight decay or
            amsgrad; ε placed as SparseAdam places it, before bias correction). Default
            False: exactly Adam on the densified gradient.
        state_precision: how m and v are stored: "fp32" (default: torch's state, exactly),
            "bf16" (bfloat16, stochastic rounding: 4 B/param) or "8bit" (block-wise 8-bit
            codes with one float32 scale per 256 elements: ~2 B/param). The math is float32
            in every case; see docs/low-memory.md.
        min_8bit_size: with "8bit", parameters of fewer elements keep fp32 state (4096).
        param_rounding: how bfloat16/float16 parameters (no float32 master copy) are
            rounded after the step: "nearest" (default), "stochastic" (unbiased, 0 bytes)
            or "kahan" (a compensation buffer in the param's dtype, +2 B/param).

    Example:
        >>> import torch, adamkit
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> opt = adamkit.Adam([w], lr=0.1)
        >>> w.grad = torch.tensor([3.0, -0.5])
        >>> opt.step()
        >>> w.data  # the first step is lr·g/(|g|+ε)
        tensor([-0.1000,  0.1000])
    """

    spec = adam_spec.SPEC
    sparse_grads_supported = True
    option_defaults: ClassVar[dict[str, Any]] = {
        **SpecOptimizer.option_defaults,
        "lazy_sparse": False,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool = False,
        cautious: bool = False,
        on_nonfinite: str = "propagate",
        lazy_sparse: bool = False,
        state_precision: str = "fp32",
        min_8bit_size: int = 4096,
        param_rounding: str = "nearest",
    ) -> None:
        self.lazy_sparse = bool(lazy_sparse)  # read by validate_group during __init__
        if self.lazy_sparse and state_precision != "fp32":
            raise ValueError(
                f"lazy_sparse=True keeps float32 state; it does not combine with "
                f"state_precision={state_precision!r}. Use one of them."
            )
        defaults = {
            "lr": lr,
            # As torch: a tuple (of the 0-dim tensors, for one tensor of two).
            "betas": tuple(betas)
            if isinstance(betas, (tuple, list)) or (isinstance(betas, Tensor) and betas.dim() == 1)
            else betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "foreach": foreach,
            "capturable": capturable,
            "differentiable": differentiable,
            "fused": fused,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        if cautious:  # a group key only when asked for: the groups stay torch's otherwise
            defaults["cautious"] = cautious
        super().__init__(
            params, defaults, on_nonfinite=on_nonfinite,
            low_memory=(state_precision, min_8bit_size, param_rounding),
        )  # fmt: skip

    # (validate_group's own checks read weight_decay and amsgrad, not these)
    checked_alone = SpecOptimizer.checked_alone

    def validate_changed(self, group: dict[str, Any], changed: set[str]) -> bool:
        # lazy_sparse may be set after construction: its checks read the whole group
        return not getattr(self, "lazy_sparse", False) and super().validate_changed(group, changed)

    def validate_group(self, group: dict[str, Any]) -> None:
        super().validate_group(group)
        precision = self.group_options(group)[0]
        if getattr(self, "lazy_sparse", False) and precision != "fp32":
            raise ValueError(
                f"lazy_sparse=True keeps float32 state; it does not combine with "
                f"state_precision={precision!r}. Use one of them."
            )
        if getattr(self, "lazy_sparse", False) and (group["weight_decay"] or group["amsgrad"]):
            name = type(self).__name__
            off = ", ".join(
                f"{key}={value}"
                for key, value in (("weight_decay", 0), ("amsgrad", False))
                if group[key]
            )
            default = (
                " (AdamW's default)" if name == "AdamW" and group["weight_decay"] == 1e-2 else ""
            )
            raise ValueError(
                "lazy_sparse=True supports neither weight decay nor amsgrad (as "
                f"torch.optim.SparseAdam); got weight_decay={group['weight_decay']!r}{default}, "
                f"amsgrad={group['amsgrad']!r}. Pass {name}(..., lazy_sparse=True, "
                f"{off}), or lazy_sparse=False for exact {name}."
            )

    def _update_params(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        any_sparse: bool,
        amp: dict[str, Tensor],
    ) -> Replay | None:
        if any_sparse:
            params, grads, states = self._sparse_gradients(group, params, grads, states)
        if not params:
            return None
        replay = super()._update_params(group, params, grads, states, False, amp)
        return None if any_sparse else replay

    def _sparse_gradients(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
    ) -> tuple[list[Tensor], list[Tensor], list[dict[str, Any]]]:
        """With ``lazy_sparse``, update the params with sparse gradients here (present rows
        only) and return the others; else densify: in exact Adam every row's moments decay."""
        if self.lazy_sparse:
            lazy = [i for i, g in enumerate(grads) if g.is_sparse]
            self._lazy_sparse_update(group, [params[i] for i in lazy], [grads[i] for i in lazy])
            dense = [i for i in range(len(params)) if i not in lazy]
            return [params[i] for i in dense], [grads[i] for i in dense], [states[i] for i in dense]
        return params, [g.to_dense() if g.is_sparse else g for g in grads], states

    def _lazy_sparse_update(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor]
    ) -> None:
        states = [self._init_state(p, group) for p in params]
        steps = [s["step"] for s in states]
        increment(steps)
        beta1, beta2 = group["betas"]
        sparse.lazy_adam(
            params,
            grads,
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            steps,
            lr=scalar(group["lr"]),
            beta1=scalar(beta1),
            beta2=scalar(beta2),
            eps=group["eps"],
            maximize=group["maximize"],
        )


class AdamW(Adam, torch.optim.AdamW):
    r"""AdamW (Loshchilov & Hutter, 2019): Adam with decoupled weight decay.

    φ is multiplied by (1 - α·λ) before the Adam update instead of adding λ·φ to the
    gradient, so the decay is not rescaled by √v̂. Arguments and defaults are those of
    torch.optim.AdamW (``weight_decay=1e-2``); see :class:`Adam` for the rest.

    Example:
        >>> import torch, adamkit
        >>> w = torch.nn.Parameter(torch.ones(1))
        >>> opt = adamkit.AdamW([w], lr=0.1, weight_decay=0.5)
        >>> w.grad = torch.zeros(1)
        >>> opt.step()
        >>> w.data  # decay only: 1 · (1 - 0.1·0.5)
        tensor([0.9500])
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float | Tensor, float | Tensor] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        cautious: bool = False,
        on_nonfinite: str = "propagate",
        lazy_sparse: bool = False,
        state_precision: str = "fp32",
        min_8bit_size: int = 4096,
        param_rounding: str = "nearest",
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
            cautious=cautious,
            on_nonfinite=on_nonfinite,
            lazy_sparse=lazy_sparse,
            state_precision=state_precision,
            min_8bit_size=min_8bit_size,
            param_rounding=param_rounding,
        )

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
