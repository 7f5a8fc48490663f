"""A parallel launch that waited for a busy core makes small groups run serially for a while
(kernels._batching.Threads): the decision, with a fake clock (no timing is asserted)."""

from __future__ import annotations

import numpy as np
import pytest

from adamkit.kernels import _batching
from adamkit.kernels._batching import ChunkTables, Threads


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(_batching.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(Threads, "launched", True)
    monkeypatch.setattr(Threads, "usable", True)
    monkeypatch.setattr(Threads, "contended_until", 0.0)
    return now


def _launch(clock, work, parallel_seconds):
    ran = []

    def parallel(chunks, bounds):
        ran.append("parallel")
        clock[0] += parallel_seconds

    def serial(chunks):
        ran.append("serial")

    tables = ChunkTables(np.zeros((2, 3), np.int64), np.array([0, 1, 2]))
    Threads.launch(parallel, serial, tables, (), work=work)
    return ran[0]


def test_a_slow_small_launch_makes_small_groups_serial_for_a_while(clock):
    assert _launch(clock, 50_000, 5e-3) == "parallel"  # waited 5 ms for a core
    assert _launch(clock, 50_000, 0.0) == "serial"
    assert _launch(clock, Threads.SMALL_WORK, 0.0) == "parallel"  # large groups still split
    clock[0] += Threads.CONTENDED_SECONDS + 0.01
    assert _launch(clock, 50_000, 1e-5) == "parallel"  # probes again, and is quick
    assert _launch(clock, 50_000, 0.0) == "parallel"


def test_a_quick_launch_or_unknown_work_keeps_the_parallel_loop(clock):
    assert _launch(clock, 50_000, 2e-5) == "parallel"
    assert _launch(clock, 50_000, 0.0) == "parallel"
    assert _launch(clock, 0, 5e-3) == "parallel"  # work unknown: no check
    assert _launch(clock, 50_000, 0.0) == "parallel"
