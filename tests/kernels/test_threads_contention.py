"""A parallel launch that waited for a busy core makes small groups run serially for a while
(kernels._threads.Threads): the decision, with a fake clock (no timing is asserted)."""

from __future__ import annotations

import numpy as np
import pytest

from adamkit.kernels import _threads
from adamkit.kernels._threads import ChunkTables, Threads


@pytest.fixture
def clock(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(_threads.time, "monotonic", lambda: now[0])
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


_KEEPS_TORCH_THREADS = """
import torch, adamkit
torch.set_num_threads({torch_threads})
for precision in ("fp32", "8bit"):
    p = torch.nn.Parameter(torch.randn(1 << 21))
    p.grad = torch.randn(1 << 21)
    opt = adamkit.AdamW([p], state_precision=precision)
    for _ in range(2):
        opt.step()
        assert torch.get_num_threads() == {torch_threads}, (precision, torch.get_num_threads())
print("kept", torch.get_num_threads())
"""


@pytest.mark.parametrize(("torch_threads", "numba_threads"), [(2, 4), (3, 2)])
def test_a_parallel_launch_leaves_torchs_thread_count_as_the_user_set_it(
    torch_threads, numba_threads
):
    # numba's OpenMP pool set the process's OpenMP thread count, torch's, to its own at a
    # launch: torch.set_num_threads(2) became NUMBA_NUM_THREADS after the first step.
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_NUM_THREADS": str(numba_threads)}
    code = _KEEPS_TORCH_THREADS.format(torch_threads=torch_threads)
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"kept {torch_threads}" in done.stdout
