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
from adamkit.kernels import _threads

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
        for n in (4, _threads.SPLIT_MIN_ELEMENTS):
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
        for name in (
            "ddp", "zero", "fsdp2", "dcp_resumed", "skip", "fsdp2_bf16", "dcp_bf16_resumed",
            "fsdp2_8bit", "dcp_8bit_resumed", "ddp_8bit_rank0", "ddp_8bit_rank1",
        )
    }  # fmt: skip


_STATE_KEYS = ["0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias"]


def _single_process_run(**options) -> list[torch.Tensor]:
    model = _worker.make_model()
    opt = adamkit.Adam(model.parameters(), lr=_worker.LR, **options)
    _worker.train(model, opt, _worker.global_batches(_worker.N_STEPS), rank=0, world=1)
    return [p.detach() for p in model.parameters()]


@pytest.fixture(scope="module")
def single_process() -> list[torch.Tensor]:
    return _single_process_run()


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


def test_ddp_with_8bit_state_keeps_ranks_identical_and_matches_one_process(results):
    rank0, rank1 = results["ddp_8bit_rank0"], results["ddp_8bit_rank1"]
    for a, b in zip(rank0["params"], rank1["params"], strict=True):
        assert torch.equal(a, b)
    for a, b in zip(rank0["state"], rank1["state"], strict=True):
        assert a.keys() == b.keys() and "exp_avg_absmax" in a
        assert all(torch.equal(a[key], b[key]) for key in a)
    # A full-batch gradient differs from the ranks' average by rounding, and a rounding
    # difference can move an 8-bit code by one (up to 1/8 of m), so the one-process run is
    # fed the ranks' average itself: sum over ranks of (local loss / world), which DDP's
    # allreduce computes bit for bit. Then the optimizer must agree bitwise.
    model = _worker.make_model()
    opt = adamkit.Adam(model.parameters(), lr=_worker.LR, **_worker.LOW_MEMORY)
    for batch in _worker.global_batches(_worker.N_STEPS):
        opt.zero_grad()
        for rank in range(2):
            x, y = _worker.local(batch, rank, 2)
            (torch.nn.functional.mse_loss(model(x), y) / 2).backward()
        opt.step()
    for i, (a, b) in enumerate(zip(rank0["params"], model.parameters(), strict=True)):
        assert torch.equal(a, b.detach()), f"param {i}"
    one = [opt.state[p] for group in opt.param_groups for p in group["params"]]
    for a, b in zip(rank0["state"], one, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.allclose(rank0["params"][0], _worker.make_model()[0].weight.detach())


def test_fsdp2_with_bf16_state_matches_one_process_and_resumes_bitwise(results):
    params = _single_process_run(state_precision="bf16")
    sharded = results["fsdp2_bf16"]["params"]
    # Each shard draws its stochastic rounding from its own local indices, so the runs round
    # differently: bf16 state is within 2^-8 of its value, so each of the 6 steps (of size
    # ≤ lr) moves a param by at most ~1% of lr differently.
    bound = _worker.N_STEPS * 0.01 * _worker.LR
    for i, (a, b) in enumerate(zip(sharded, params, strict=True)):
        assert (a - b).abs().max() <= bound, f"param {i}"
        assert (a - _worker.make_model().state_dict()[_STATE_KEYS[i]]).abs().max() > 10 * bound
    for i, (a, b) in enumerate(zip(results["dcp_bf16_resumed"]["params"], sharded, strict=True)):
        assert torch.equal(a, b), f"param {i}"


def test_fsdp2_with_8bit_state_is_the_local_shards_own_8bit_step(results):
    # per rank, params and state equal bit for bit those of a plain 8-bit Adam over copies
    # of the rank's local shards fed the same local gradients (_worker.py)
    run = results["fsdp2_8bit"]
    assert run["agree_per_rank"] == [1.0, 1.0]
    initial = _worker.make_model().state_dict()
    for i, p in enumerate(run["params"]):
        assert not torch.allclose(p, initial[_STATE_KEYS[i]]), f"param {i} did not train"


def test_fsdp2_8bit_checkpoint_is_float32_and_resumes_bitwise(results):
    # the state_dict holds float32 DTensors sharded like the params (the block scales
    # belong to local shards, which a distributed checkpoint cannot lay out); loading encodes
    # them again, to the same codes: the resumed run equals the uninterrupted one
    assert results["fsdp2_8bit"]["state_dict_slots"] == {
        "exp_avg": "torch.float32", "exp_avg_sq": "torch.float32",
    }  # fmt: skip
    for i, (a, b) in enumerate(
        zip(results["dcp_8bit_resumed"]["params"], results["fsdp2_8bit"]["params"], strict=True)
    ):
        assert torch.equal(a, b), f"param {i}"
