"""Launching a fused CPU kernel's numba loop: one chunk table per thread for a group long
enough to split (cut on cache lines), and the one place that decides whether a parallel launch
may run (:class:`Threads`: numba's threading layer usable, not after a fork, not while the
machine's cores are busy with other processes)."""

from __future__ import annotations

import os
import threading
import time
from typing import NamedTuple

import numpy as np
import torch

from ._tensors import BoundedCache

# Groups with at least this many elements are split across threads; below it, launching the
# parallel loop costs more than the second thread saves (measured: 49k float32 Adam elements
# take 21 µs on one thread and 13 µs on two, launch included).
SPLIT_MIN_ELEMENTS = 1 << 14
_ALIGN = 64  # split points fall on multiples of this many elements (whole cache lines)


class ChunkTables(NamedTuple):
    """Rows (tensor, first element, end element); rows bounds[k]:bounds[k+1] are thread k's."""

    chunks: np.ndarray
    bounds: np.ndarray

    def table(self, k: int) -> np.ndarray:
        return self.chunks[self.bounds[k] : self.bounds[k + 1]]


_CHUNK_TABLES = BoundedCache(64)


def chunk_tables(
    numels: tuple[int, ...],
    workers: int,
    split_min: int = SPLIT_MIN_ELEMENTS,
    align: int = _ALIGN,
) -> ChunkTables:
    """One chunk table per worker, covering every element once, with equal shares of elements;
    cached by the sizes. (The low-memory kernel counts in blocks: ``split_min`` and ``align``
    in its units.)"""
    return _CHUNK_TABLES.get(
        (numels, workers, split_min, align),
        lambda: _make_chunk_tables(numels, workers, split_min, align),
    )


def _make_chunk_tables(
    numels: tuple[int, ...], workers: int, split_min: int, align: int
) -> ChunkTables:
    total = sum(numels)
    parts = workers if total >= split_min and workers > 1 else 1
    edges = [total * k // parts // align * align for k in range(parts)] + [total]
    tables: list[list[tuple[int, int, int]]] = [[] for _ in range(parts)]
    start = 0  # first element of tensor t in the concatenation of all tensors
    for t, n in enumerate(numels):
        for k in range(parts):
            lo, hi = max(start, edges[k]), min(start + n, edges[k + 1])
            if lo < hi:
                tables[k].append((t, lo - start, hi - start))
        start += n
    tables = [rows for rows in tables if rows]
    rows = [row for rows in tables for row in rows]
    return ChunkTables(
        np.array(rows, dtype=np.int64).reshape(-1, 3),
        np.cumsum([0] + [len(rows) for rows in tables], dtype=np.int64),
    )


class Threads:
    """Whether numba's parallel loops may be launched in this process: the one place that
    decides serial vs parallel.

    numba's OpenMP thread pool does not survive fork(): a child forked after a launch that
    launches again is aborted. Such a child runs the serial loops instead. The ``workqueue``
    layer (numba's fallback when no OpenMP or TBB is found) aborts when two threads launch at
    once, so under it the serial loops are used too. Which layer numba loads is known only
    after its first launch, so the first launch holds a lock: a second thread arriving
    meanwhile waits for it, then follows what it found.
    """

    usable = True
    launched = False
    first_launch = threading.Lock()
    # A parallel launch waits for every worker thread. When the machine's cores are busy with
    # other processes that is a scheduler time slice: a 50k-element Adam step took 0.047 ms
    # quiet and 4.1 ms beside two busy processes on 2 cores (0.056 ms on one thread). So a
    # launch that took far longer than its work needs marks the machine contended, and for
    # the next CONTENDED_SECONDS groups under SMALL_WORK elements run serially; then a
    # parallel launch probes again.
    SMALL_WORK = 1 << 20
    CONTENDED_SECONDS = 1.0
    contended_until = 0.0

    @classmethod
    def launch(cls, parallel, serial, tables: ChunkTables, args, work: int = 0) -> None:
        """Run ``parallel`` (or ``serial`` where it cannot be used); ``work`` is the number of
        elements (0: unknown, no contention check)."""
        if cls.launched:  # the usual case: no lock
            if not cls.usable:
                serial(tables.chunks, *args)
            elif 0 < work < cls.SMALL_WORK:
                cls._small(parallel, serial, tables, args, work)
            else:
                cls._parallel(parallel, tables, args)
            return
        with cls.first_launch:
            if not cls.launched:
                cls._parallel(parallel, tables, args)
                import numba  # imported by the loop just launched; not at adamkit's import

                cls.usable = numba.threading_layer() != "workqueue"
                cls.launched = True
                return
        cls.launch(parallel, serial, tables, args)

    # numba's OpenMP pool sets the process's OpenMP thread count, which torch's is, to numba's
    # own when it launches: a first step would move torch from torch.set_num_threads(2) to
    # every core. numba is given torch's count (the tables' parts are as many), and torch's
    # is put back if numba's cap (NUMBA_NUM_THREADS) is below it.
    given = threading.local()  # what numba was last given, per thread (numba's is per thread)

    @classmethod
    def _parallel(cls, parallel, tables: ChunkTables, args) -> None:
        threads = torch.get_num_threads()
        if threads != getattr(cls.given, "threads", 0):
            import numba

            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
            cls.given.threads = threads
        parallel(tables.chunks, tables.bounds, *args)
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)

    @classmethod
    def _small(cls, parallel, serial, tables: ChunkTables, args, work: int) -> None:
        start = time.monotonic()
        if start < cls.contended_until:
            serial(tables.chunks, *args)
            return
        cls._parallel(parallel, tables, args)
        took = time.monotonic() - start
        if took > 1e-3 + 2e-9 * work:  # 2 ns an element is generous for any of the loops
            cls.contended_until = start + took + cls.CONTENDED_SECONDS

    @classmethod
    def after_fork_in_child(cls) -> None:
        cls.first_launch = threading.Lock()  # the parent's may have been held at the fork
        if cls.launched:
            cls.usable = False


os.register_at_fork(after_in_child=Threads.after_fork_in_child)


def run_loops(serial, parallel, numels: tuple[int, ...], *args) -> None:
    """``serial(chunks, *args)`` over all elements, or ``parallel(chunks, bounds, *args)`` with
    one chunk table per thread when the group is long enough to be worth splitting."""
    tables = chunk_tables(numels, torch.get_num_threads())
    launch_loops(serial, parallel, tables, sum(numels), args)


def launch_loops(serial, parallel, tables: ChunkTables, work: int, args) -> None:
    """:func:`run_loops` with its chunk ``tables`` made (``work``: their elements)."""
    if len(tables.bounds) > 2 and Threads.usable:
        Threads.launch(parallel, serial, tables, args, work=work)
    else:
        serial(tables.chunks, *args)
