"""One numba driver for every algorithm spec: the fused CPU loop, written once.

Each spec's ``element`` (see :mod:`adamkit.algorithms._spec`), recompiled with numba's versions
of its operations (:mod:`adamkit.kernels._numba_spec`), is inlined into a generic chunk loop,
the same shape as the hand-written loops of :mod:`adamkit.kernels._numba_cpu`: one pass over
p, g and the state, vectorized by LLVM, per-tensor scalars computed in the call from each
tensor's counters, and a parallel form that runs one chunk table per thread. Measured on a
1M-element float32 NAdam step: as fast as the hand-written Adam loop (the element inlines to
the same code shape).

Adding an algorithm needs nothing here: the entry points of each spec and *cell* (which of
the three slots it stores, from the spec's ``slot_flags`` and the group's flags: compile-time
literals, so LLVM vectorizes) are generated on first use by :mod:`adamkit.kernels._numba_codegen`,
each in a file of its own for numba's cache. :data:`LOOPS` maps a spec's name to its
``(serial, parallel)`` loops, which pick the cell from the ``flags`` they are called with.

A cell with a pass before the update (the spec's ``reduction``, or the count of the cautious
mask; see :mod:`adamkit.algorithms._spec`) is generated apart: the pass
(:mod:`adamkit.kernels._numba_reduce`, shared with the low-memory kernel), the threads' partial
sums added in a fixed order between two parallel regions, then the update, which reads each
tensor's sum and count as ``k[4]``, ``k[5]``. The spec's functions compiled with numba's
operations, and the counters and tables the loops read, are :mod:`adamkit.kernels._numba_spec`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numba
import numpy as np

from ..algorithms import SPECS, AlgorithmSpec
from ..algorithms._spec import CAUTIOUS_COUNT, CAUTIOUS_FLAG, NO_REDUCTION
from . import _numba_cache, _numba_codegen
from ._numba_cpu import _OPTIONS, _view
from ._numba_reduce import _finish, _parallel_totals, _partial_sums, _reduce, _reduced
from ._numba_spec import _advance, _row, _scalars, _tensor_table, spec_functions

_numba_cache.install()
_jit = numba.njit(**_OPTIONS)
_jit_parallel = numba.njit(parallel=True, **_OPTIONS)
_inline = numba.njit(inline="always", error_model="numpy")


# Address rows: p, g, three state slots (a slot a spec does not have holds the grad's address,
# memory the loop reads and never stores), the float64 step counter, and the float32 scalar
# state (NAdam's mu_product; the step counter's address where a spec has none).
STEP, AUX = 5, 6


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
