"""One numba driver for every algorithm spec: the fused CPU loop, written once.

Each spec's ``element`` (see :mod:`adamkit.algorithms._spec`) is recompiled here with numba's
versions of its operations and inlined into a generic chunk loop, the same shape as the
hand-written loops of :mod:`adamkit.kernels._numba_cpu`: one pass over p, g and the state,
vectorized by LLVM, per-tensor scalars computed in the call from each tensor's counters, and
a parallel form that runs one chunk table per thread. Measured on a 1M-element float32 NAdam
step: as fast as the hand-written Adam loop (the element inlines to the same code shape).

Adding an algorithm needs nothing here: the entry points of each spec and *cell* (which of
the three slots it stores, from the spec's ``slot_flags`` and the group's flags: compile-time
literals, so LLVM vectorizes) are generated on first use by :mod:`adamkit.kernels._numba_codegen`,
each in a file of its own for numba's cache. :data:`LOOPS` maps a spec's name to its
``(serial, parallel)`` loops, which pick the cell from the ``flags`` they are called with.

A cell with a pass before the update (the spec's ``reduction``, or the count of the cautious
mask; see :mod:`adamkit.algorithms._spec`) is generated apart: the pass computes each
chunk's terms by the spec's arithmetic, unreassociated, and adds them up (an integer count, or
the float terms summed by 256-element blocks in :func:`_numba_cpu._block_total`, the one
function allowed to reassociate: both vectorize), the threads' partial sums are added in a
fixed order between two parallel regions, and the update then reads each tensor's sum and
count as ``k[4]``, ``k[5]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numba
import numpy as np

from ..algorithms import SPECS, AlgorithmSpec
from ..algorithms._spec import (
    CAUTIOUS_COUNT,
    CAUTIOUS_FLAG,
    MASK_FLOOR,
    NO_REDUCTION,
    recompiled,
)
from ..algorithms.state_formats import BLOCK
from . import _numba_cache, _numba_codegen
from ._numba_cpu import (
    _OPTIONS,
    _block_total,
    _float64_cell,
    _lerp,
    _nan_max,
    _pointer,
    _sign,
    _view,
)

_numba_cache.install()
_jit = numba.njit(**_OPTIONS)
_jit_parallel = numba.njit(parallel=True, **_OPTIONS)
_inline = numba.njit(inline="always", error_model="numpy")


@_inline
def _where(condition, if_true, if_false):
    return if_true if condition else if_false


@_inline
def _to_float32(x):
    return np.float32(x)


OPS = {
    "where": _where,
    "sqrt": math.sqrt,
    "absolute": abs,
    "nan_max": _nan_max,
    "lerp": _lerp,
    "sign": _sign,
    "to_float32": _to_float32,
}


def compiled(function):
    """``function`` with numba's operations in place of :mod:`adamkit.algorithms._ops`',
    inlined wherever it is called (its module's helper functions too)."""
    return _inline(recompiled(function, OPS, helpers=_inline))


_FLOAT32_LIKE = np.empty(0, np.float32)

# Address rows: p, g, three state slots (a slot a spec does not have holds the grad's address,
# memory the loop reads and never stores), the float64 step counter, and the float32 scalar
# state (NAdam's mu_product; the step counter's address where a spec has none).
STEP, AUX = 5, 6


@_inline
def _float32_cell(address):
    return numba.carray(_pointer(address, _FLOAT32_LIKE), (1,))


@_inline
def _advance(advance, addresses, b, has_aux, step_column, aux_column):
    """Each tensor's counters one step on (their addresses in the two columns given: the
    low-memory kernel's rows have more columns before them)."""
    for t in range(addresses.shape[0]):
        step = _float64_cell(addresses[t, step_column])
        aux = _float32_cell(addresses[t, aux_column])
        new_step, new_aux = advance(step[0], aux[0], b)
        if has_aux:
            aux[0] = new_aux
        step[0] = new_step


@_inline
def _tensor_table(tensor_scalars, addresses, b, like, step_column, aux_column):
    """Each tensor's scalars from its counters, rounded to ``like``'s dtype (one row each;
    columns 4 and 5, a reduction's, start at 0)."""
    n = addresses.shape[0]
    table = np.zeros((n, 6), like.dtype)
    for t in range(n):
        step = _float64_cell(addresses[t, step_column])[0]
        k = tensor_scalars(step, _float32_cell(addresses[t, aux_column])[0], b)
        table[t, 0], table[t, 1], table[t, 2], table[t, 3] = k[0], k[1], k[2], k[3]
    return table


@_inline
def _row(table, t):
    return (table[t, 0], table[t, 1], table[t, 2], table[t, 3], table[t, 4], table[t, 5])


@_inline
def _elements(element, p, g, s0, s1, s2, h, k, f, store0, store1, store2, cautious):
    # store0..2 and cautious arrive as constants: a store a spec does not have is compiled out,
    # and the loop vectorizes (a runtime-guarded store to memory the loop reads fails LLVM's
    # alias check).
    for i in range(p.size):
        new_p, a, b, c, base, u, g_seen = element(p[i], g[i], s0[i], s1[i], s2[i], h, k, f)
        if cautious:  # k[4]: 1/max(mean(mask), floor); k[5]: 0
            new_p = base - u * (k[4] if u * g_seen > 0 else k[5])
        p[i] = new_p
        if store0:
            s0[i] = a
        if store1:
            s1[i] = b
        if store2:
            s2[i] = c


@_inline
def _reduced(element, reduction, p, g, s0, s1, s2, h, k, f, cautious, lo, total):
    """``total`` plus a chunk's sum of the spec's reduction term, or of the cautious mask's
    count (an integer sum: exact in any order, so LLVM vectorizes it) (read only: the
    element's results are not stored). The chunk starts at element ``lo`` of its tensor; the
    terms are summed by the tensor's blocks of ``BLOCK``, each by :func:`_block_total`, and
    added to ``total`` one after another, as the low-memory kernel does."""
    if cautious:
        count = 0
        for i in range(p.size):
            _, _, _, _, _, u, g_seen = element(p[i], g[i], s0[i], s1[i], s2[i], h, k, f)
            count += u * g_seen > 0
        return total + count
    terms = np.empty(min(p.size, BLOCK), p.dtype)
    start = 0
    while start < p.size:
        end = min(start + BLOCK - (lo + start) % BLOCK, p.size)
        for j in range(end - start):
            i = start + j
            _, a, b, c, _, _, g_seen = element(p[i], g[i], s0[i], s1[i], s2[i], h, k, f)
            terms[j] = reduction(g_seen, a, b, c, h, k, f)
        total += _block_total(terms[: end - start])
        start = end
    return total


@_inline
def _reduce(chunk_sum, chunks, addresses, like, h, table, f, totals):
    """Add each chunk's reduction (``chunk_sum``: the cell's :func:`_reduced`) and element
    count to its tensor's row of ``totals``."""
    for c in range(chunks.shape[0]):
        t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        row = addresses[t]
        totals[t, 0] = chunk_sum(
            _view(row[0], lo, hi, like), _view(row[1], lo, hi, like),
            _view(row[2], lo, hi, like), _view(row[3], lo, hi, like),
            _view(row[4], lo, hi, like), h, _row(table, t), f, lo, totals[t, 0],
        )  # fmt: skip
        totals[t, 1] += hi - lo


@_inline
def _finish(table, totals, cautious):
    """The reduction's columns of the tensor table: the sum and the count for the spec's
    element, or the cautious scale 1/max(mean(mask), floor) and a 0 for the driver."""
    for t in range(table.shape[0]):
        total, n = totals[t, 0], totals[t, 1]
        if not cautious:
            table[t, 4], table[t, 5] = total, n
        else:
            table[t, 4] = 1.0 / max(total / n, MASK_FLOOR) if n > 0 else 1.0
            table[t, 5] = 0.0


@_inline
def _scalars(hyper, flags):
    h = (hyper[0], hyper[1], hyper[2], hyper[3], hyper[4], hyper[5], hyper[6], hyper[7])
    f = (flags[0] != 0, flags[1] != 0, flags[2] != 0, flags[3] != 0)
    return h, f


@_inline
def _update(element, store0, store1, store2, cautious, chunks, addresses, like, h, table, f):
    """The element over the chunks (rows: tensor, first, end), each with its table row."""
    for c in range(chunks.shape[0]):
        t, lo, hi = chunks[c, 0], chunks[c, 1], chunks[c, 2]
        row = addresses[t]
        _elements(
            element,
            _view(row[0], lo, hi, like),
            _view(row[1], lo, hi, like),
            _view(row[2], lo, hi, like),
            _view(row[3], lo, hi, like),
            _view(row[4], lo, hi, like),
            h, _row(table, t), f, store0, store1, store2, cautious,
        )  # fmt: skip


@_inline
def _chunks(
    element, advance_fn, tensor_scalars, has_aux, store0, store1, store2,
    chunks, addresses, like, hyper, bias, flags, advance,
):  # fmt: skip
    """The spec's update over the chunks. The spec's functions arrive as arguments (numba
    specializes this loop for each) and its constants as literals."""
    b = (bias[0], bias[1], bias[2], bias[3], bias[4], bias[5], bias[6], bias[7])
    if advance:
        _advance(advance_fn, addresses, b, has_aux, STEP, AUX)
    h, f = _scalars(hyper, flags)
    table = _tensor_table(tensor_scalars, addresses, b, like, STEP, AUX)
    _update(element, store0, store1, store2, False, chunks, addresses, like, h, table, f)


@_inline
def _chunks_reducing(
    element, tensor_scalars, chunk_sum, store0, store1, store2, cautious,
    chunks, addresses, like, hyper, bias, flags, totals,
):  # fmt: skip
    """:func:`_chunks` with a pass before the update (the spec's reduction, or the mask count
    of ``cautious``): ``totals`` holds each tensor's sum and count, or has no rows when this
    call sees every chunk and reduces them itself first (the counters are advanced before)."""
    b = (bias[0], bias[1], bias[2], bias[3], bias[4], bias[5], bias[6], bias[7])
    h, f = _scalars(hyper, flags)
    table = _tensor_table(tensor_scalars, addresses, b, like, STEP, AUX)
    if totals.shape[0] == 0:
        totals = np.zeros((addresses.shape[0], 2))
        _reduce(chunk_sum, chunks, addresses, like, h, table, f, totals)
    _finish(table, totals, cautious)
    _update(element, store0, store1, store2, cautious, chunks, addresses, like, h, table, f)


@_inline
def _partial_sums(chunk_sum, chunks, bounds, addresses, like, h, table, f, partial):
    """The pass before the update, thread k adding table k's sums into ``partial[k]``."""
    for k in numba.prange(bounds.size - 1):
        _reduce(
            chunk_sum, chunks[bounds[k] : bounds[k + 1]], addresses, like, h, table, f,
            partial[k],
        )  # fmt: skip


@_inline
def _parallel_totals(
    partial_sums, tensor_scalars, chunks, bounds, addresses, data, like, step_column,
    aux_column, hyper, bias, flags,
):  # fmt: skip
    """Each tensor's (sum, count) from the pass before the update (the threads' partial
    sums, added in a fixed order). ``data``: what the loops take after the addresses (the
    data's ``like``, or the low-memory kernel's element counts); the table's dtype is
    ``like``'s, its counters in the columns given."""
    b = (bias[0], bias[1], bias[2], bias[3], bias[4], bias[5], bias[6], bias[7])
    h, f = _scalars(hyper, flags)
    table = _tensor_table(tensor_scalars, addresses, b, like, step_column, aux_column)
    n = addresses.shape[0]
    partial = np.zeros((bounds.size - 1, n, 2))
    partial_sums(chunks, bounds, addresses, data, h, table, f, partial)
    totals = np.zeros((n, 2))
    for k in range(partial.shape[0]):
        for t in range(n):
            totals[t, 0] += partial[k, t, 0]
            totals[t, 1] += partial[k, t, 1]
    return totals


@_inline
def _advance_all(advance_fn, addresses, bias, has_aux):
    b = (bias[0], bias[1], bias[2], bias[3], bias[4], bias[5], bias[6], bias[7])
    _advance(advance_fn, addresses, b, has_aux, STEP, AUX)


@_inline
def _parallel(advance_fn, has_aux, serial, chunks, bounds, addresses, like, hyper, bias, flags,
              advance, last):  # fmt: skip
    """Table k of ``chunks[bounds[k]:bounds[k + 1]]`` on thread k by ``serial`` (its last
    argument ``last``: False for advance, or a reduction's totals); counters advanced once,
    before any thread reads them."""
    if advance:
        b = (bias[0], bias[1], bias[2], bias[3], bias[4], bias[5], bias[6], bias[7])
        _advance(advance_fn, addresses, b, has_aux, STEP, AUX)
    for k in numba.prange(bounds.size - 1):
        serial(chunks[bounds[k] : bounds[k + 1]], addresses, like, hyper, bias, flags, last)


# --- the entry points: generated per spec and cell (see _numba_codegen), never written out.
# The cell's constants (scalar state or not; which of the three slots it stores) are literals.
_CELL_SOURCE = """\
# adamkit's fused CPU loops of spec {name!r}, cell {cell} (the slots stored): generated by
# adamkit.kernels._numba_driver, do not edit. The driver sets the globals (its helpers, np,
# and the spec's ELEMENT, ADVANCE, SCALARS and REDUCTION).
# sources sha256 {digest}


@_jit
def {function}_chunks_{cell}(chunks, addresses, like, hyper, bias, flags, advance):
    _chunks(
        ELEMENT, ADVANCE, SCALARS, {has_aux}, {stores},
        chunks, addresses, like, hyper, bias, flags, advance,
    )


@_jit_parallel
def {function}_parallel_{cell}(chunks, bounds, addresses, like, hyper, bias, flags, advance):
    _parallel(
        ADVANCE, {has_aux}, {function}_chunks_{cell},
        chunks, bounds, addresses, like, hyper, bias, flags, advance, False,
    )
"""
# A cell with a pass before the update (cell name ...r1: the spec's reduction, ...r2: the
# cautious mask's count): the counters, that pass and the update one after the other, each
# pass a parallel region of its own.
_REDUCING_CELL_SOURCE = """\
# adamkit's fused CPU loops of spec {name!r}, cell {cell} (the slots stored, the pass before
# the update): generated by adamkit.kernels._numba_driver, do not edit. The driver sets the
# globals (its helpers, np, and the spec's ELEMENT, ADVANCE, SCALARS and REDUCTION).
# sources sha256 {digest}


@_jit
def {function}_sum_{cell}(p, g, s0, s1, s2, h, k, f, lo, total):
    return _reduced(ELEMENT, REDUCTION, p, g, s0, s1, s2, h, k, f, {cautious}, lo, total)


@_jit
def {function}_main_{cell}(chunks, addresses, like, hyper, bias, flags, totals):
    _chunks_reducing(
        ELEMENT, SCALARS, {function}_sum_{cell}, {stores}, {cautious},
        chunks, addresses, like, hyper, bias, flags, totals,
    )


@_jit
def {function}_chunks_{cell}(chunks, addresses, like, hyper, bias, flags, advance):
    if advance:
        _advance_all(ADVANCE, addresses, bias, {has_aux})
    {function}_main_{cell}(chunks, addresses, like, hyper, bias, flags, np.zeros((0, 2)))


@_jit_parallel
def {function}_partial_{cell}(chunks, bounds, addresses, like, h, table, f, partial):
    _partial_sums(
        {function}_sum_{cell}, chunks, bounds, addresses, like, h, table, f, partial
    )


@_jit_parallel
def {function}_update_{cell}(chunks, bounds, addresses, like, hyper, bias, flags, totals):
    _parallel(
        ADVANCE, {has_aux}, {function}_main_{cell},
        chunks, bounds, addresses, like, hyper, bias, flags, False, totals,
    )


@_jit
def {function}_parallel_{cell}(chunks, bounds, addresses, like, hyper, bias, flags, advance):
    if advance:
        _advance_all(ADVANCE, addresses, bias, {has_aux})
    totals = _parallel_totals(
        {function}_partial_{cell}, SCALARS, chunks, bounds, addresses, like, like, STEP, AUX,
        hyper, bias, flags,
    )
    {function}_update_{cell}(chunks, bounds, addresses, like, hyper, bias, flags, totals)
"""
_COMPILED: dict[tuple[Callable[..., Any], ...], tuple[Any, ...]] = {}


@_inline
def _no_reduction(g, s0, s1, s2, h, k, f):
    return g


def spec_functions(spec: AlgorithmSpec) -> dict[str, Any]:
    """The spec's ``element``, ``advance``, ``tensor_scalars`` and ``reduction`` compiled with
    numba's operations (once per function), under the names the generated entry points use."""
    key = (spec.element, spec.advance, spec.tensor_scalars, spec.reduction)
    if key not in _COMPILED:
        _COMPILED[key] = tuple(_no_reduction if f is None else compiled(f) for f in key)
    return dict(zip(("ELEMENT", "ADVANCE", "SCALARS", "REDUCTION"), _COMPILED[key], strict=True))


# measured with an empty NUMBA_CACHE_DIR on a 2-core machine (docs/benchmarks.md)
COMPILE_ESTIMATE = "about 2 s"


def cell(
    spec: AlgorithmSpec, stored: tuple[bool, ...], mode: int = NO_REDUCTION
) -> tuple[Any, Any]:
    """The (serial, parallel) numba entry points of ``spec`` storing the slots ``stored``,
    with the pass before the update that ``mode`` says (the spec's ``reduction_mode``):
    generated and imported on first use, compiled (or loaded from numba's cache) at their
    first call."""
    function = _numba_codegen.identifier(spec)
    code = _numba_codegen.cell_code(stored) + (f"r{mode}" if mode != NO_REDUCTION else "")
    digest = _numba_codegen.sources_hash(spec)
    template = _CELL_SOURCE if mode == NO_REDUCTION else _REDUCING_CELL_SOURCE
    source = template.format(
        name=spec.name, cell=code, digest=digest, function=function,
        has_aux=spec.scalar_state is not None, stores=", ".join(map(str, stored)),
        cautious=mode == CAUTIOUS_COUNT,
    )  # fmt: skip
    namespace = {
        "_jit": _jit, "_jit_parallel": _jit_parallel, "_chunks": _chunks, "np": np,
        "_chunks_reducing": _chunks_reducing, "_parallel": _parallel,
        "_reduced": _reduced,
        "_parallel_totals": _parallel_totals, "_partial_sums": _partial_sums,
        "_advance_all": _advance_all, "STEP": STEP, "AUX": AUX,
    }  # fmt: skip
    module = _numba_codegen.load(
        f"loops_{function}_{code}_{digest[:16]}",
        source,
        lambda: {**namespace, **spec_functions(spec)},
    )
    entry_points = (
        getattr(module, f"{function}_chunks_{code}"),
        getattr(module, f"{function}_parallel_{code}"),
    )
    _numba_codegen.announce_compile(entry_points, spec.torch_name, COMPILE_ESTIMATE)
    return entry_points


class Loops(NamedTuple):
    """A spec's loops, ``serial(chunks, addresses, like, hyper, bias, flags, advance)`` and
    ``parallel(chunks, bounds, addresses, like, hyper, bias, flags, advance)``: each runs the
    cell the group's ``flags`` select (its entry points made the first time they do).
    ``cell(flags)`` is that cell's (serial, parallel) pair, for a caller that keeps it."""

    serial: Callable[..., None]
    parallel: Callable[..., None]
    cell: Callable[[np.ndarray], tuple[Any, Any]]


def loops(spec: AlgorithmSpec) -> Loops:
    """The loops of any spec (see :class:`Loops`)."""
    by_flags: dict[bytes, tuple[Any, Any]] = {}

    def pick(flags: np.ndarray) -> tuple[Any, Any]:
        key = flags.tobytes()
        found = by_flags.get(key)
        if found is None:
            cautious = flags.size > CAUTIOUS_FLAG and bool(flags[CAUTIOUS_FLAG])
            found = by_flags[key] = cell(
                spec, _numba_codegen.stored_slots(spec, flags), spec.reduction_mode(cautious)
            )
        return found

    def serial(chunks, addresses, like, hyper, bias, flags, advance) -> None:
        pick(flags)[0](chunks, addresses, like, hyper, bias, flags, advance)

    def parallel(chunks, bounds, addresses, like, hyper, bias, flags, advance) -> None:
        pick(flags)[1](chunks, bounds, addresses, like, hyper, bias, flags, advance)

    serial.__name__ = serial.__qualname__ = f"{spec.name}_chunks"
    parallel.__name__ = parallel.__qualname__ = f"{spec.name}_parallel"
    return Loops(serial, parallel, pick)


class _SpecLoops(Mapping[str, Loops]):
    """``LOOPS[name]``: the loops of ``SPECS[name]``, made when first asked for (a spec
    registered later has its loops too)."""

    def __init__(self) -> None:
        self._made: dict[str, tuple[AlgorithmSpec, Loops]] = {}

    def __getitem__(self, name: str) -> Loops:
        spec = SPECS[name]
        made = self._made.get(name)
        if made is None or made[0] is not spec:
            made = self._made[name] = (spec, loops(spec))
        return made[1]

    def __iter__(self) -> Iterator[str]:
        return iter(SPECS)

    def __len__(self) -> int:
        return len(SPECS)


LOOPS: Mapping[str, Loops] = _SpecLoops()

# ``<spec>_chunks`` / ``<spec>_parallel``, as the hand-written pairs were: one numba entry point
# per spec that picks the cell by flags (so its first call compiles every cell).
_DISPATCH_SOURCE = """\
# adamkit's fused CPU loops of spec {name!r}: every cell behind one entry point that picks
# the cell by flags, generated by adamkit.kernels._numba_driver, do not edit. The driver
# sets the globals _jit and each cell's entry points.
# sources sha256 {digest}


@_jit
def {function}_chunks(chunks, addresses, like, hyper, bias, flags, advance):
{serial}


@_jit
def {function}_parallel(chunks, bounds, addresses, like, hyper, bias, flags, advance):
{parallel}
"""


def _branches(spec: AlgorithmSpec, call: str) -> str:
    """A function body calling ``call`` (formatted with each cell's code) in the right cell."""
    lines = []
    every = _numba_codegen.cells(spec)
    for i, stored in enumerate(every):
        code = _numba_codegen.cell_code(stored)
        if len(every) == 1:
            return f"    {call.format(code)}"
        test = _numba_codegen.conditions(spec, stored)
        lines.append("    else:" if i == len(every) - 1 else f"    {'el' if i else ''}if {test}:")
        lines.append(f"        {call.format(code)}")
    return "\n".join(lines)


def dispatching(spec: AlgorithmSpec) -> Any:
    """The module of ``spec``'s flag-dispatching entry points (``<name>_chunks``, ...)."""
    function = _numba_codegen.identifier(spec)
    digest = _numba_codegen.sources_hash(spec)
    source = _DISPATCH_SOURCE.format(
        name=spec.name, digest=digest, function=function,
        serial=_branches(spec, "CHUNKS_{}(chunks, addresses, like, hyper, bias, flags, advance)"),
        parallel=_branches(
            spec, "PARALLEL_{}(chunks, bounds, addresses, like, hyper, bias, flags, advance)"
        ),
    )  # fmt: skip

    def namespace() -> dict[str, Any]:
        made: dict[str, Any] = {"_jit": _jit}
        for stored in _numba_codegen.cells(spec):
            code = _numba_codegen.cell_code(stored)
            made[f"CHUNKS_{code}"], made[f"PARALLEL_{code}"] = cell(
                spec, stored, spec.reduction_mode(False)
            )
        return made

    return _numba_codegen.load(f"dispatch_{function}_{digest[:16]}", source, namespace)


def __getattr__(name: str) -> Any:
    for spec in SPECS.values():
        function = _numba_codegen.identifier(spec)
        if name in (f"{function}_chunks", f"{function}_parallel"):
            return getattr(dispatching(spec), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
