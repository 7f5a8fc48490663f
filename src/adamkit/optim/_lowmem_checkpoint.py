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

import torch
from torch import Tensor

from ..algorithms.state_formats import ABSMAX_SUFFIX, CODES_SUFFIX, KAHAN_KEY, SLOT_KINDS
from ..kernels.lowbit_torch import canonical_entry, dequantized_entry, saved_entry
from ..kernels.wrappers import _dtensor_type
from . import _conform
from ._checkpoint import StateDictError
from ._lowmem_options import _OPTION_NAMES


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


class LowMemoryCheckpoint:
    """The state_dict and load_state_dict of :class:`adamkit.optim._lowmem.LowMemoryState`:
    low-memory state saved as it is stored, and a checkpoint of any precision loaded into this
    optimizer's (``_conform_entry`` and ``state_layout`` are the optimizer's)."""

    param_groups: list[dict[str, Any]]
    state: Any

    def state_dict(self) -> dict[str, Any]:
        """torch's state_dict, low-memory state as it is stored, except the 8-bit state of
        DTensor params (FSDP2): its block scales belong to the rank's local shard, so it is
        saved as float32 DTensors sharded like the param, which torch.distributed.checkpoint
        lays out (and reshards) as any other state; loading encodes it again."""
        sd = super().state_dict()  # type: ignore[misc]
        dtensor = _dtensor_type()
        state = sd["state"]
        for pid, entry in state.items():
            if not any(key.endswith(ABSMAX_SUFFIX) for key in entry):
                continue
            if dtensor is not None and any(isinstance(v, dtensor) for v in entry.values()):
                state[pid] = dequantized_entry(entry)
            else:  # a new dict: torch's state_dict shares the optimizer's own
                state[pid] = saved_entry(entry)
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state_dict in any precision (adamkit's or torch.optim's): it is checked as
        torch's format, loaded, then each parameter's state is put in this optimizer's
        precision. An entry already in that precision is taken as it is (a same-mode round
        trip is bitwise); a torch fp32 entry is quantized; an 8-bit or bf16 one loaded into
        an fp32 optimizer is dequantized."""
        if not (isinstance(state_dict, Mapping) and {"state", "param_groups"} <= state_dict.keys()):
            super().load_state_dict(state_dict)  # type: ignore[misc]  # its error names it
            return
        saved, full = checked_low_memory_state(self, state_dict)
        # torch's loader takes the param groups from the checkpoint: a group's own
        # low-memory options (adamkit's alone) stay when the checkpoint has none.
        own = [{k: g[k] for k in _OPTION_NAMES if k in g} for g in self.param_groups]
        super().load_state_dict({**state_dict, "state": full})  # type: ignore[misc]
        for group, options in zip(self.param_groups, own, strict=True):
            for key, value in options.items():
                group.setdefault(key, value)
        self.__dict__["_conformed"] = {}
        for saved_group, group in zip(state_dict["param_groups"], self.param_groups, strict=True):
            for pid, p in zip(saved_group["params"], group["params"], strict=True):
                entry = self.state.get(p)
                if entry and pid in saved:
                    self._reformat(p, group, entry, saved[pid])
                    if _conform.holds_low_memory(entry):
                        self.__dict__["_low_memory_seen"] = True

    def _reformat(
        self, p: Tensor, group: dict[str, Any], entry: dict[str, Any], saved: Mapping[str, Any]
    ) -> None:
        """After torch's loader put ``p``'s checkpoint entry in ``entry`` as float tensors:
        its low-memory tensors back as saved (checked), then the entry conformed to this
        optimizer's options, so a same-format round trip is bitwise and any other is a
        conversion by value."""
        for key in [key for key in entry if key in SLOT_KINDS]:
            original, scales = saved.get(key), saved.get(key + ABSMAX_SUFFIX)
            if scales is not None:
                entry[key], entry[key + ABSMAX_SUFFIX] = original.to(p.device), scales.to(p.device)
            elif isinstance(original, Tensor) and original.dtype == torch.bfloat16:
                entry[key] = original.to(p.device)
        if isinstance(saved.get(KAHAN_KEY), Tensor):
            entry[KAHAN_KEY] = saved[KAHAN_KEY].to(p.device)
        self._conform_entry(p, group, entry, self.state_layout(group))  # type: ignore[attr-defined]
