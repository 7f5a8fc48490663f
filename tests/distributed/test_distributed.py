"""DDP, ZeroRedundancyOptimizer and FSDP2 (2 gloo ranks on CPU) against one process, and a
torch.distributed.checkpoint resume against an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import adamkit
from adamkit.kernels import fused_cpu

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch without distributed")

WORKER = Path(__file__).with_name("_worker.py")
sys.path.insert(0, str(WORKER.parent))
import _worker  # noqa: E402

TIMEOUT_S = 180  # per phase; a hung rank fails the test instead of stalling CI


def _torchrun(script: Path, *args: str) -> str:
    """Run ``script`` on 2 ranks and return its output; on timeout kill the process group."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(script), *args]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "OMP_NUM_THREADS": "1",
        "PYTHONFAULTHANDLER": "1",  # a crashing rank prints its Python stack
    }
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"{script.name} {' '.join(args)} did not finish in {TIMEOUT_S} s")
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-20000:]
    return text


def _warm_kernel_cache() -> None:
    """Compile (and cache on disk) the fused kernels here, once, so the two ranks load them
    instead of compiling and writing numba's cache files at the same moment."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # with a long tensor, the parallel loop compiles too
    try:
        for n in (4, fused_cpu.SPLIT_MIN_ELEMENTS):
            w = torch.zeros(n, requires_grad=True)
            w.grad = torch.ones(n)
            adamkit.Adam([w]).step()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, dict]:
    _warm_kernel_cache()
    out = tmp_path_factory.mktemp("distributed")
    _torchrun(WORKER, str(out), "train")
    _torchrun(WORKER, str(out), "resume")  # new processes: all ranks restarted
    return {
        name: torch.load(out / f"{name}.pt")
        for name in ("ddp", "zero", "fsdp2", "dcp_resumed", "skip")
    }


@pytest.fixture(scope="module")
def single_process() -> list[torch.Tensor]:
    model = _worker.make_model()
    opt = adamkit.Adam(model.parameters(), lr=_worker.LR)
    _worker.train(model, opt, _worker.global_batches(_worker.N_STEPS), rank=0, world=1)
    return [p.detach() for p in model.parameters()]


@pytest.mark.parametrize("name", ["ddp", "zero", "fsdp2"])
def test_matches_single_process_training(results, single_process, name):
    params = results[name]["params"]
    assert len(params) == len(single_process)
    for i, (a, b) in enumerate(zip(params, single_process, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{name}: param {i}")
    # and they trained: far from the initial weights
    assert not torch.allclose(params[0], _worker.make_model()[0].weight.detach())


@pytest.mark.parametrize("name", ["ddp", "zero", "fsdp2", "dcp_resumed"])
def test_fused_kernel_ran_on_local_tensors_without_fallback(results, name):
    calls = results[name]["calls"]
    assert calls["fast"] > 0 and calls["slow"] == 0, calls


def test_nan_in_one_ranks_shard_makes_every_rank_skip(results):
    # per rank: [params unchanged (1.0), skipped_steps]
    assert results["skip"]["per_rank"] == [[1.0, 1.0], [1.0, 1.0]]


def test_dcp_resume_matches_uninterrupted_fsdp2_bitwise(results):
    for i, (a, b) in enumerate(
        zip(results["dcp_resumed"]["params"], results["fsdp2"]["params"], strict=True)
    ):
        assert torch.equal(a, b), f"param {i}"


def test_example_trains_and_resumes_from_its_checkpoint(tmp_path):
    _warm_kernel_cache()
    example = Path(__file__).parents[2] / "examples" / "train_fsdp.py"
    ckpt = str(tmp_path / "ckpt")
    first = _torchrun(example, "--epochs", "1", "--checkpoint", ckpt)
    assert "epoch 1:" in first and (tmp_path / "ckpt" / ".metadata").exists()
    second = _torchrun(example, "--epochs", "2", "--checkpoint", ckpt)
    assert "resumed from" in second and "epoch 2:" in second and "epoch 1:" not in second
