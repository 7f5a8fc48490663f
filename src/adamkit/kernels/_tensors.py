"""Small helpers shared by the kernels: tensor views and lists, dtypes, a bounded cache."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

# The numba loops' element dtype, and elements per tensor element, of each dtype they take
# (complex tensors go through their real views); the NumPy type of each element dtype; and an
# empty array of it, which tells a loop what it finds at an address.
REAL_DTYPES = {
    torch.float32: (torch.float32, 1),
    torch.float64: (torch.float64, 1),
    torch.complex64: (torch.float32, 2),
    torch.complex128: (torch.float64, 2),
}
NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
LIKE = {dtype: np.empty(0, np_dtype) for dtype, np_dtype in NUMPY_DTYPES.items()}


def real_view(t: Tensor) -> Tensor:
    """View a complex tensor as real (…, 2); real tensors are returned unchanged."""
    return torch.view_as_real(t) if t.is_complex() else t


def has_lazy_bits(t: Tensor) -> bool:
    """Whether ``t``'s memory holds other values than it means: torch's lazy conjugate bit
    (complex tensors only) or negative bit. Code that reads memory by address must not take
    such a tensor as it is (see :func:`resolved`)."""
    return t.is_neg() or (t.is_complex() and t.is_conj())


def resolved(t: Tensor) -> Tensor:
    """``t`` with its lazy conjugate/negative bits applied (a copy where it has any)."""
    return t.resolve_conj().resolve_neg()


def real_views(tensors: Sequence[Tensor]) -> list[Tensor]:
    """:func:`real_view` over a list."""
    return [real_view(t) for t in tensors]


def pick(seq: Sequence[Any], idx: Sequence[int]) -> list[Any]:
    """The entries ``idx`` of a per-parameter list; an empty list (state a configuration does
    not have) stays empty."""
    return [seq[i] for i in idx] if seq else []


def add_one(steps: Sequence[Tensor]) -> None:
    """Add one to each step counter, in one foreach op."""
    if steps:
        torch._foreach_add_(list(steps), 1)


def scalar(x: float | Tensor) -> float:
    """A hyperparameter as a Python float (tensor hyperparameters hold one element)."""
    if type(x) is float:  # the common case, without isinstance's ~0.1 µs
        return x
    return x.item() if isinstance(x, Tensor) else x


def group_by_device_and_dtype(params: Sequence[Tensor]) -> list[list[int]]:
    """Indices of ``params`` grouped so that each group shares a device and a dtype.

    torch's ``_foreach_*`` ops need the tensors of one call on one device with one dtype.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, p in enumerate(params):
        groups.setdefault((p.device, p.dtype), []).append(i)
    return list(groups.values())


def step_arithmetic_dtype() -> torch.dtype:
    """The dtype torch.optim does step-tensor arithmetic in (its step counter's dtype).

    adamkit counts steps in float64 (exact past 2^24); bias corrections computed from a
    step tensor use torch's dtype so that results match torch.optim bit for bit.
    """
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class BoundedCache:
    """{key: value} that keeps the ``size`` most recently used entries (tables the kernels
    rebuild only when the tensors' sizes or addresses change)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The value for ``key``, made by ``make()`` on a miss."""
        value = self._used(key, _MISSING)
        if value is _MISSING:
            value = make()
            self.put(key, value)
        return value

    def peek(self, key: Hashable) -> Any:
        """The value for ``key`` (now the most recently used), or None."""
        return self._used(key, None)

    def _used(self, key: Hashable, missing: Any) -> Any:
        """The value for ``key``, now the most recently used, or ``missing``."""
        entries = self._entries
        value = entries.get(key, missing)
        if value is not missing:
            try:
                entries.move_to_end(key)
            except KeyError:  # evicted meanwhile by another thread: the value still holds
                pass
        return value

    def discard(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def put(self, key: Hashable, value: Any) -> None:
        entries = self._entries
        entries[key] = value
        if len(entries) > self.size:
            try:
                entries.popitem(last=False)
            except KeyError:  # emptied meanwhile by another thread
                pass


_MISSING = object()


def increment(steps: Sequence[Tensor], found_inf: Tensor | None = None) -> None:
    """Advance each parameter's step counter by one, unless GradScaler found an Inf: then the
    counts stay (on the device without synchronising when they live there)."""
    if not steps:
        return
    add_one(steps)
    if found_inf is None:
        return
    if all(s.device == found_inf.device for s in steps):
        torch._foreach_sub_(list(steps), [found_inf.to(steps[0].dtype)] * len(steps))
    elif found_inf.item():  # step counts on the host: one synchronisation
        torch._foreach_sub_(list(steps), 1)
