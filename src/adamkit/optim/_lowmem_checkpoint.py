"""Low-memory checkpoints: checking their fields against the params before anything loads,
and :func:`dequantized_state_dict`, the way to a checkpoint torch.optim loads.

An 8-bit slot is saved as ``<key>_codes`` (uint8, shaped like the param) and
``<key>_absmax`` (float32, one scale per 256 elements): torch.optim does not read those keys,
so it raises KeyError at its first step instead of training on codes. A bfloat16 slot is saved
under torch's key (torch casts it to the param's dtype, losing nothing); Kahan's compensation
as ``kahan_comp``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..algorithms.state_formats import ABSMAX_SUFFIX, CODES_SUFFIX, KAHAN_KEY, SLOT_KINDS
from ..kernels.lowbit_torch import canonical_entry, dequantized_entry
from ._checkpoint import StateDictError


def dequantized_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``state_dict`` with every low-memory state slot as a float32 tensor under torch's key:
    a checkpoint of an 8-bit or bf16 optimizer that ``torch.optim.Adam``/``AdamW`` (and
    adamkit's optimizers in any precision) load. The input is not changed.

    Example:
        >>> import torch, adamkit
        >>> w = torch.nn.Parameter(torch.randn(8192))
        >>> opt = adamkit.Adam([w], state_precision="8bit")
        >>> w.grad = torch.randn(8192); opt.step()
        >>> sd = opt.state_dict()
        >>> sd["state"][0]["exp_avg_codes"].dtype, sd["state"][0]["exp_avg_absmax"].shape
        (torch.uint8, torch.Size([32]))
        >>> full = adamkit.optim.dequantized_state_dict(sd)
        >>> sorted(full["state"][0]), full["state"][0]["exp_avg"].dtype
        (['exp_avg', 'exp_avg_sq', 'step'], torch.float32)
        >>> torch.optim.Adam([w]).load_state_dict(full)
    """
    if not isinstance(state_dict, Mapping) or "state" not in state_dict:
        raise StateDictError(
            "Cannot dequantize: expected an optimizer state_dict (a mapping with keys "
            "'state' and 'param_groups')"
        )
    state = {}
    for pid, entry in state_dict["state"].items():
        try:
            state[pid] = dequantized_entry(entry) if isinstance(entry, Mapping) else entry
        except ValueError as error:
            raise StateDictError(
                f"Cannot load optimizer state_dict: state of parameter id {pid!r}: {error}; "
                "nothing was loaded."
            ) from None
    return {**state_dict, "state": state}


def checked_low_memory_state(
    optimizer: Any, state_dict: Mapping[str, Any]
) -> tuple[Mapping[Any, Any], Mapping[Any, Any]]:
    """(the state_dict's per-parameter entries with 8-bit codes under their slot's key, the
    same dequantized to torch's format), after checking every low-memory field against its
    parameter (codes, scales, Kahan's compensation); raises :class:`StateDictError` naming the
    field, before anything is loaded. torch's fields are checked by the loader as before."""
    saved = state_dict["state"]
    if not isinstance(saved, Mapping):
        return saved, saved
    params = {}
    for gi, (saved_group, group) in enumerate(
        zip(state_dict["param_groups"], optimizer.param_groups, strict=False)
    ):
        for pi, (pid, p) in enumerate(zip(saved_group["params"], group["params"], strict=False)):
            params[pid] = (gi, pi, p)
    canonical, full = {}, {}
    for pid, entry in saved.items():
        if not isinstance(entry, Mapping) or pid not in params:
            canonical[pid] = full[pid] = entry  # the loader's own check names it
            continue
        gi, pi, p = params[pid]
        try:
            _check_low_memory_fields(entry, p)
            canonical[pid] = canonical_entry(entry)
            full[pid] = dequantized_entry(canonical[pid])  # codes, scales: dtypes, sizes
        except ValueError as error:
            raise StateDictError(
                f"Cannot load optimizer state_dict: state of parameter {pi} in group {gi}: "
                f"{error}; nothing was loaded."
            ) from None
    return canonical, full


def _check_low_memory_fields(entry: Mapping[str, Any], p: Tensor) -> None:
    shape = tuple(p.shape)
    for key, value in entry.items():
        slot = key.removesuffix(CODES_SUFFIX)
        is_codes = slot in SLOT_KINDS and (slot != key or key + ABSMAX_SUFFIX in entry)
        if is_codes or key == KAHAN_KEY:
            if not isinstance(value, Tensor):
                raise ValueError(f"{key!r} is {type(value).__name__}; expected a tensor")
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"{key!r} has shape {tuple(value.shape)}; the parameter has {shape}"
                )
        if key == KAHAN_KEY and not (value.is_floating_point() and bool(value.isfinite().all())):
            raise ValueError(
                f"{key!r} (Kahan's compensation) has dtype {value.dtype} or non-finite "
                f"values; expected a finite floating-point tensor of shape {shape}"
            )
