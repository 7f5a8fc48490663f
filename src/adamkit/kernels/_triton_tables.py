"""How the Triton kernels see their tensors: block and address tables, grouping, scalars.

One launch covers every tensor of a group: each group gets tables of data addresses (one int64
per tensor for p, g and each state) and a block table (for every block of BLOCK elements:
which tensor, and where in it it starts). Tables are cached by the tensors' addresses and
sizes, so a training loop whose tensors stay put (static grads, CUDA graphs) builds them once.
Shared by the written-out kernels (:mod:`adamkit.kernels.triton_kernels`) and the generic
spec driver (:mod:`adamkit.kernels.triton_driver`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import triton.language as tl
from torch import Tensor

from ._tensors import BoundedCache, has_lazy_bits, real_view, resolved

BLOCK = 1024
TL = {
    torch.float32: tl.float32,
    torch.float64: tl.float64,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
}


@dataclass
class Plan:
    """Device tables for one launch over a set of tensors."""

    block_tensor: Tensor
    block_start: Tensor
    numels: Tensor
    addresses: list[Tensor]  # one int64 table per role (p, g, state...)
    n_blocks: int


_PLANS = BoundedCache(32)  # block tables by sizes, address tables by addresses
_SCALARS = BoundedCache(32)


def plan(roles: list[list[Tensor]], device: torch.device) -> Plan:
    """Block and address tables for tensors ``roles[r][i]`` (sizes from role 0). Block tables
    are cached by the sizes, address tables by the addresses of each role separately, so new
    gradient tensors each step cost one small address table, not new block tables."""
    numels = tuple(t.numel() for t in roles[0])

    def make_blocks() -> tuple[Tensor, Tensor, Tensor, int]:
        blocks = [math.ceil(n / BLOCK) for n in numels]
        block_tensor = torch.repeat_interleave(
            torch.arange(len(numels), dtype=torch.int32), torch.tensor(blocks, dtype=torch.int64)
        )
        block_start = torch.cat([torch.arange(b, dtype=torch.int64) * BLOCK for b in blocks])
        as_table = torch.tensor(numels, dtype=torch.int64, device=device)
        return block_tensor.to(device), block_start.to(device), as_table, sum(blocks)

    block_tensor, block_start, numel_table, n_blocks = _PLANS.get(
        ("blocks", device, numels), make_blocks
    )
    addresses = []
    for ts in roles:
        ptrs = tuple(t.data_ptr() for t in ts)
        addresses.append(
            _PLANS.get(
                ("addresses", device, ptrs),
                lambda ptrs=ptrs: torch.tensor(ptrs, dtype=torch.int64, device=device),
            )
        )
    return Plan(block_tensor, block_start, numel_table, addresses, n_blocks)


def scalars(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    """A small constant tensor of hyperparameters, cached (no copy while they stay the same)."""
    return _SCALARS.get(
        (values, device, dtype),
        lambda: torch.tensor(values, dtype=dtype, device=device),
    )


def compute_dtype(param_dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if param_dtype == torch.float64 else torch.float32


def fits(tensors: Sequence[Tensor]) -> bool:
    """Whether the launches can read and write these tensors by address (lazy conjugate or
    negative bits: the memory holds other values than the tensor means)."""
    return all(
        t.is_contiguous() and not t.is_sparse and not has_lazy_bits(t) and real_view(t).dtype in TL
        for t in tensors
    )


def readable(grads: Sequence[Tensor]) -> list[Tensor]:
    """Gradients as the launches read them: lazy conjugate/negative bits resolved (a copy)."""
    return [resolved(g) if has_lazy_bits(g) else g for g in grads]


def groups(params: Sequence[Tensor], *per_param: Sequence[Tensor | None]):
    """(indices the kernels take, grouped by device and dtypes) and the leftover indices."""
    groups: dict[tuple, list[int]] = {}
    other = []
    for i, p in enumerate(params):
        tensors = [p] + [ts[i] for ts in per_param if ts and ts[i] is not None]
        if p.numel() == 0:
            continue
        if not fits(tensors):
            other.append(i)
            continue
        key = (p.device, *(real_view(t).dtype for t in tensors))
        groups.setdefault(key, []).append(i)
    return list(groups.values()), other
