"""What every fused CPU kernel does around its numba loop: sort the tensors into those the
loops can take by address and those that go to the for-loop kernel (:func:`split`), and check
that a state's sizes fit its params. The launch itself, serial or parallel over chunk tables,
is :mod:`adamkit.kernels._threads`'.

Written once for every algorithm: :mod:`adamkit.kernels.spec_kernels` calls these with each
algorithm's roles and loops.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ._tensors import LIKE, NUMPY_DTYPES, REAL_DTYPES, BoundedCache, resolved


@functools.lru_cache(maxsize=64)
def flag_array(*flags: bool) -> np.ndarray:
    return np.array(flags, dtype=np.uint8)


@functools.lru_cache(maxsize=256)
def complement(dtype: torch.dtype, weight: float) -> float:
    """``1 - weight`` as torch's lerp computes it: in the data's dtype, after rounding weight."""
    to_scalar = NUMPY_DTYPES[dtype]
    return float(to_scalar(1) - to_scalar(weight))


class _Batch(NamedTuple):
    """The tensors of one real dtype that the loops take: their indices, element counts and
    the data addresses of each of their roles (one row per tensor), and the resolved copies of
    gradients whose addresses the rows hold (kept alive until the loops have run)."""

    idx: list[int]
    numels: list[int]
    rows: list[list[int]]
    copies: list[Tensor]
    array: np.ndarray | None = None  # the rows as an array, where already made

    def addresses(self) -> np.ndarray:
        if self.array is not None:
            return self.array
        return np.array(self.rows, dtype=np.int64)


# A role after the params: its tensors and what each must be for the loops to use its memory
# in place. None marks state an option leaves out: the loops get the grad's address there (the
# first role), memory they only read, so a loop that reads it anyway does not alias a store.
# Memory read by address must hold the values the tensor means: a tensor with torch's lazy
# conjugate or negative bit (autograd makes such gradients for ordinary complex code) holds
# the un-conjugated, un-negated values. A written tensor with such a bit sends its param to the
# for-loop kernel (torch's answer or torch's error); a gradient, only read, is resolved into a
# copy first.
LIKE_PARAM = 0  # state: a contiguous CPU tensor of the param's dtype and shape
COUNTER = 1  # step counters: a CPU float64 scalar
READ_ONLY = 2  # grads: as LIKE_PARAM, resolved into a copy if it has a lazy bit
FLOAT32_SCALAR = 3  # per-tensor float32 state (NAdam's mu_product): a CPU float32 scalar
Role = tuple[Sequence[Tensor] | None, int]


Split = tuple[dict[torch.dtype, "_Batch"], list[int], list[int]]


def split(params: Sequence[Tensor], roles: Sequence[Role]) -> Split:
    """The tensors the loops take directly, batched by real dtype; the indices of those that
    need another path; and the indices of empty ones (nothing to update).

    A tensor that is not what its role needs (see LIKE_PARAM, COUNTER) sends its param to
    the other path (where a gradient or state of another shape than its param's is refused:
    :func:`check_sizes`). Runs on every step for every tensor: a training loop whose params
    and state stay the same objects at the same addresses reuses the last split of them
    (:class:`_Reusable`), re-reading only what can change under it; gradients, which may be
    new tensors every step, are checked every time.
    """
    while _DEAD:  # splits whose tensors were collected (weak reference callbacks)
        _SPLITS.discard(_DEAD.pop())
    key = (tuple(map(id, params)), *(_role_ids(ts, kind) for ts, kind in roles))
    reusable = _SPLITS.peek(key)
    if reusable is not None:
        result = reusable.reuse(params, roles)
        if result is not None:
            return result
    result = _split(params, roles)
    # Kept where the loops take every tensor that has elements: a param sent to the for-loop
    # by a passing oddity (one non-contiguous gradient) must get the loops back after it.
    if not result[1] and not any(batch.copies for batch in result[0].values()):
        _SPLITS.put(key, _Reusable(key, params, roles, result))
    return result


def dense_strides(t: Tensor) -> tuple[int, ...] | None:
    """``t``'s strides if its elements fill its memory span without gaps or overlaps with its
    dimensions in some order (channels_last, a transpose of a contiguous tensor), else None.
    The loops walk such a span in memory order: elementwise, tensors that share the strides
    pair the same elements there as in logical order."""
    expected = 1
    dims = zip(t.stride(), t.shape, strict=True)
    for stride, size in sorted((st, sz) for st, sz in dims if sz != 1):
        if stride != expected:
            return None
        expected *= size
    return tuple(t.stride())


def in_layout(t: Tensor, strides: tuple[int, ...] | None) -> bool:
    """Whether ``t`` is laid out as its param: contiguous (``strides`` None), or with the
    param's ``strides`` (:func:`dense_strides`)."""
    return t.is_contiguous() if strides is None else t.stride() == strides


def still_in_place(
    t: Tensor, address: int, dtype: torch.dtype, shape: torch.Size, strides=None
) -> bool:
    """Whether state tensor ``t`` is where and what a split found it: at ``address``, of
    ``dtype``, ``shape`` and layout (:func:`in_layout`). (The loops write that many bytes
    there: a state tensor ``set_`` or ``resize_`` in place, or given new memory that the
    allocator put at the old address, must not be written as it was.)"""
    return (
        t.data_ptr() == address and t.dtype is dtype and t.shape == shape and in_layout(t, strides)
    )


def loops_take_gradient(
    g: Tensor, dtype: torch.dtype, shape: torch.Size, complex_: bool, strides=None
) -> bool:
    """Whether the loops read gradient ``g`` of a param of ``dtype``, ``shape`` and layout in
    place (a split's READ_ONLY check, for the tensors a cached step re-reads every time)."""
    return (
        g.dtype is dtype
        and g.is_cpu
        and g.shape == shape
        and in_layout(g, strides)
        and not g.is_neg()
        and not (complex_ and g.is_conj())
    )


def _strides(p: Tensor) -> tuple[int, ...] | None:
    return None if p.is_contiguous() else tuple(p.stride())


def _role_ids(tensors: Sequence[Tensor] | None, kind: int) -> tuple[int, ...] | None:
    # gradients are not part of the key: they are checked on every step
    return None if tensors is None or kind == READ_ONLY else tuple(map(id, tensors))


class _Reusable:
    """A split, and what it read that can change without the tensors' identities changing:
    each batched param's address, dtype, shape and layout bits (``p.data = ...`` keeps the
    object), each state tensor's address. It leaves the cache as soon as one of the tensors of
    its key is collected (a weak reference's callback), so the ids in its key stay theirs and
    it keeps no tensor alive."""

    def __init__(
        self, key: tuple[Any, ...], params: Sequence[Tensor], roles: Sequence[Role], result: Split
    ) -> None:
        batches, self.other, self.empty = result

        def evict(_: Any, key: tuple[Any, ...] = key) -> None:
            # Only noted here: a collection may run inside the cache's own dict operations.
            # The next split drops it, before any lookup could meet a reused id.
            _DEAD.append(key)

        kept = [*params, *(t for ts, kind in roles if ts is not None and kind != READ_ONLY
                           for t in ts)]  # fmt: skip
        self.watchers = [weakref.ref(t, evict) for t in kept]
        kinds = [kind for _, kind in roles]
        self.grad_role = kinds.index(READ_ONLY) if READ_ONLY in kinds else None
        self.state_roles = [
            r for r, (ts, kind) in enumerate(roles) if ts is not None and kind != READ_ONLY
        ]
        # a role an option leaves out holds role 0's address (see LIKE_PARAM)
        self.copies_of_first = [1 + r for r, (ts, _) in enumerate(roles) if ts is None]
        self.batches = [
            (
                dtype, batch, [(params[i].dtype, params[i].shape, _strides(params[i]))
                               for i in batch.idx],
                [
                    [(1 + r, roles[r][0][i].dtype, roles[r][0][i].shape) for r in self.state_roles]
                    for i in batch.idx
                ],
                any(params[i].is_complex() for i in batch.idx), batch.addresses(),
            )
            for dtype, batch in batches.items()
        ]  # fmt: skip

    def reuse(self, params: Sequence[Tensor], roles: Sequence[Role]) -> Split | None:
        """The split again, with this step's gradient addresses; None where anything it read
        has changed (the caller splits from scratch)."""
        try:
            return self._reuse(params, roles)
        except RuntimeError:  # layouts without strides or storage (sparse CSR, mkldnn)
            return None

    def _reuse(self, params: Sequence[Tensor], roles: Sequence[Role]) -> Split | None:
        for i in self.empty:
            if params[i].numel():
                return None
        grads = None if self.grad_role is None else roles[self.grad_role][0]
        state = [(1 + r, roles[r][0]) for r in self.state_roles]
        batches: dict[torch.dtype, _Batch] = {}
        for dtype, batch, layouts, state_layouts, has_complex, addresses in self.batches:
            grad_addresses = []
            for i, (param_dtype, shape, strides), row, held in zip(
                batch.idx, layouts, batch.rows, state_layouts, strict=True
            ):
                p = params[i]
                # (a new dtype may come with the same address where the allocator reused it)
                if (
                    p.data_ptr() != row[0]
                    or p.dtype is not param_dtype
                    or p.shape != shape
                    or not in_layout(p, strides)
                    or p.is_neg()
                    or (has_complex and p.is_conj())
                ):
                    return None
                for (column, state_dtype, state_shape), (_, tensors) in zip(
                    held, state, strict=True
                ):
                    t = tensors[i]
                    if not still_in_place(t, row[column], state_dtype, state_shape, strides):
                        return None
                if grads is not None:
                    g = grads[i]
                    if not loops_take_gradient(g, param_dtype, shape, has_complex, strides):
                        return None
                    grad_addresses.append(g.data_ptr())
            if grads is not None:
                addresses[:, 1 + self.grad_role] = grad_addresses
                for column in self.copies_of_first:
                    addresses[:, column] = addresses[:, 1]
            batches[dtype] = _Batch(batch.idx, batch.numels, batch.rows, [], addresses)
        return batches, list(self.other), list(self.empty)


def _split(
    params: Sequence[Tensor], roles: Sequence[Role]
) -> tuple[dict[torch.dtype, _Batch], list[int], list[int]]:
    """:func:`split` from scratch: every tensor's every attribute read (~30 reads of 50-150 ns
    per Adam parameter)."""
    float64 = torch.float64
    batches: dict[torch.dtype, _Batch] = {}
    other, empty = [], []
    copies: list[Tensor] = []
    seen: set[int] = set()  # param addresses: a repeated param takes the for-loop kernel
    spans: list[tuple[int, int]] = []  # each batched param's memory, and its index
    owners: list[int] = []
    for i, p in enumerate(params):
        dtype = p.dtype
        real = REAL_DTYPES.get(dtype)
        row = None
        try:
            # has_lazy_bits, inlined: the conjugate bit is read only for complex dtypes.
            ok = real is not None and p.is_cpu
            strides = None  # contiguous; else a dense layout in another order (channels_last)
            if ok and not p.is_contiguous():
                strides = dense_strides(p)
                ok = strides is not None
            complex_ = ok and real[1] == 2
            ok = ok and not (p.is_neg() or (complex_ and p.is_conj()))
            n = p.numel() if ok else 0
            if n:
                shape = p.shape
                address = p.data_ptr()
                # The same tensor twice in a group (torch warns, then updates it twice, each
                # time with its counter one further): the for-loop kernel does as torch.
                ok = address not in seen
                seen.add(address)
                row = [address]
                for ts, kind in roles if ok else ():
                    if ts is None:
                        row.append(row[1])
                        continue
                    t = ts[i]
                    if kind == COUNTER or kind == FLOAT32_SCALAR:
                        want = float64 if kind == COUNTER else torch.float32
                        ok = t.dtype is want and t.is_cpu and t.numel() == 1
                    else:
                        ok = (
                            t.dtype is dtype
                            and t.is_cpu  # a CUDA pointer written from the CPU would crash
                            # The shape, not only the size: a param replaced by one of
                            # another shape (p.data = p.data.t().contiguous()) would pair its
                            # elements with the wrong moments; check_sizes refuses it there.
                            and t.shape == shape
                            and in_layout(t, strides)
                        )
                        if ok and (t.is_neg() or (complex_ and t.is_conj())):
                            ok = kind == READ_ONLY
                            t = resolved(t)
                            copies.append(t)
                    if not ok:
                        break
                    row.append(t.data_ptr())
        except RuntimeError:  # layouts without strides or storage (sparse CSR, mkldnn)
            ok = False
        if not ok:
            other.append(i)
        elif row is None:
            empty.append(i)
        else:
            real_dtype, width = real
            batch = batches.get(real_dtype)
            if batch is None:
                batch = batches[real_dtype] = _Batch([], [], [], copies)
            batch.idx.append(i)
            batch.numels.append(n * width)
            batch.rows.append(row)
            spans.append((address, address + n * width * LIKE[real_dtype].itemsize))
            owners.append(i)
    if len(spans) > 1:
        overlapping = _OVERLAPS.get(tuple(spans), lambda: _overlapping(spans))
        if overlapping:
            views = {owners[k] for k in overlapping}
            batches = _without(batches, views)
            other = sorted(other + list(views))
    if other and spans:  # a batched param sharing memory with one the for-loop takes
        moved = set(other)
        live = [k for k, i in enumerate(owners) if i not in moved]
        reach = [e for e in map(_extent, (params[i] for i in other)) if e is not None]
        hit = _overlapping([spans[k] for k in live] + reach)
        views = {owners[live[j]] for j in hit if j < len(live)}
        if views:  # both in the for-loop: torch's order (the loops ran before it)
            batches = _without(batches, views)
            other = sorted(other + list(views))
    return batches, other, empty


def _extent(t: Tensor) -> tuple[int, int] | None:
    """The memory (start, end) that strided tensor ``t`` reaches, or None (no elements, no
    strides)."""
    try:
        if not t.numel():
            return None
        last = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride(), strict=True))
        start = t.data_ptr()
    except RuntimeError:  # layouts without strides or storage (sparse CSR, mkldnn)
        return None
    return start, start + (last + 1) * t.element_size()


def share_memory(tensors: Sequence[Tensor]) -> bool:
    """Whether two of ``tensors`` reach the same memory (views of one storage)."""
    extents = [e for e in map(_extent, tensors) if e is not None]
    return len(extents) > 1 and bool(_overlapping(extents))


_OVERLAPS = BoundedCache(64)  # by the params' memory spans, which rarely change
_SPLITS = BoundedCache(16)  # _Reusable splits, by the ids of the params and state
_DEAD: list[tuple[Any, ...]] = []  # keys of splits to drop (see _Reusable)


def _overlapping(spans: Sequence[tuple[int, int]]) -> frozenset[int]:
    """The positions of the spans (start, end) whose memory overlaps another span's: params
    that are views of one storage. torch updates them one after another; the loops might
    split them across threads, so they take the for-loop kernel."""
    hit: set[int] = set()
    reach, reaching = -1, -1  # the furthest end so far, and whose it is
    for k in sorted(range(len(spans)), key=lambda k: spans[k][0]):
        start, end = spans[k]
        if start < reach:
            hit.update((k, reaching))
        if end > reach:
            reach, reaching = end, k
    return frozenset(hit)


def _without(batches: dict[torch.dtype, _Batch], drop: set[int]) -> dict[torch.dtype, _Batch]:
    """``batches`` less the params whose indices are in ``drop``."""
    out: dict[torch.dtype, _Batch] = {}
    for dtype, batch in batches.items():
        keep = [j for j, i in enumerate(batch.idx) if i not in drop]
        if keep:
            out[dtype] = _Batch(
                [batch.idx[j] for j in keep],
                [batch.numels[j] for j in keep],
                [batch.rows[j] for j in keep],
                batch.copies,
            )
    return out


class StateSizeError(RuntimeError):
    """A gradient or state tensor whose size is not its parameter's (a RuntimeError, as
    torch.optim's own error for it is)."""


def check_sizes(params: Sequence[Tensor], roles: Sequence[Sequence[Tensor | None]], names) -> None:
    """Raise :class:`StateSizeError` naming the first tensor of ``roles`` (one list per role,
    per param or empty) whose shape is not its param's."""
    for r, ts in enumerate(roles):
        for i, t in enumerate(ts):
            if t is not None and t.shape != params[i].shape:
                name = names[r] if r < len(names) else f"role {r}"
                raise StateSizeError(
                    f"{name} of a parameter of shape {tuple(params[i].shape)} has shape "
                    f"{tuple(t.shape)}; every gradient and state tensor must have its "
                    "parameter's shape. Was the parameter replaced (p.data = ...) or resized "
                    "after its first step? Then drop its state (del optimizer.state[p]) so "
                    "that it starts afresh; nothing was updated."
                )
