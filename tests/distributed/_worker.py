"""Run under torchrun (2 gloo ranks on CPU) by test_distributed.py.

``python -m torch.distributed.run --standalone --nproc_per_node 2 _worker.py OUT PHASE``
PHASE "train": DDP, ZeRO and FSDP2 runs of N_STEPS, and an FSDP2 run of K_STEPS saved with
torch.distributed.checkpoint. PHASE "resume": fresh processes load that checkpoint and take the
remaining steps. Rank 0 writes full parameters (and kernel-call counts) to OUT/<name>.pt.
"""

from __future__ import annotations

import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

import adamkit
from adamkit.kernels import spec_kernels
from adamkit.kernels.wrappers import to_local

N_STEPS, K_STEPS, BATCH = 6, 3, 8
LR = 1e-2


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 5), torch.nn.Linear(5, 4)
    )


def global_batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 8, generator=gen), torch.randn(BATCH, 4, generator=gen))
            for _ in range(n)]  # fmt: skip


def local(batch, rank: int, world: int):
    x, y = batch
    return x[rank::world], y[rank::world]


CALLS = {"fast": 0, "slow": 0}


def count_kernel_paths() -> None:
    """Count fused-kernel calls that take the numba loops vs the for-loop fallback (the
    tensors the loops cannot take)."""
    run, split = spec_kernels.run_loops, spec_kernels.split

    def counted_run(*a, **k):
        CALLS["fast"] += 1
        return run(*a, **k)

    def counted_split(*a, **k):
        batches, other, empty = split(*a, **k)
        CALLS["slow"] += bool(other)
        return batches, other, empty

    spec_kernels.run_loops, spec_kernels.split = counted_run, counted_split


def train(model, opt, batches, rank, world) -> None:
    for batch in batches:
        x, y = local(batch, rank, world)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def full_params(model) -> list[torch.Tensor]:
    out = []
    for p in model.parameters():
        p = p.detach()
        out.append(p.full_tensor() if hasattr(p, "full_tensor") else p.clone())
    return out


def save(out: Path, name: str, model, rank: int, **extra) -> None:
    params = full_params(model)  # collective for DTensors: every rank takes part
    if rank == 0:
        torch.save({"params": params, "calls": dict(CALLS), **extra}, out / f"{name}.pt")
    CALLS.update(fast=0, slow=0)


def fsdp2_model(world: int):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    model = make_model()
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer, mesh=mesh)
    return fully_shard(model, mesh=mesh)


def phase_train(out: Path, rank: int, world: int) -> None:
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    batches = global_batches(N_STEPS)

    ddp = DDP(make_model())
    train(ddp, adamkit.Adam(ddp.parameters(), lr=LR), batches, rank, world)
    save(out, "ddp", ddp.module, rank)

    zero_model = DDP(make_model())
    zero = ZeroRedundancyOptimizer(zero_model.parameters(), optimizer_class=adamkit.Adam, lr=LR)
    train(zero_model, zero, batches, rank, world)
    save(out, "zero", zero_model.module, rank)

    model = fsdp2_model(world)
    train(model, adamkit.Adam(model.parameters(), lr=LR), batches, rank, world)
    save(out, "fsdp2", model, rank)

    skip_on_all_ranks(out, rank, world, batches)
    low_memory(out, rank, world, batches)

    model = fsdp2_model(world)
    opt = adamkit.Adam(model.parameters(), lr=LR)
    train(model, opt, batches[:K_STEPS], rank, world)
    save_dcp(model, opt, out / "dcp")


LOW_MEMORY = {"state_precision": "8bit", "min_8bit_size": 0}


def low_memory(out: Path, rank: int, world: int, batches) -> None:
    """Low-memory state: 8-bit in DDP (every rank's params and state saved, to compare), bf16
    and 8-bit under FSDP2 (each with a DCP checkpoint after K_STEPS)."""
    ddp = DDP_of(make_model())
    opt = adamkit.Adam(ddp.parameters(), lr=LR, **LOW_MEMORY)
    train(ddp, opt, batches, rank, world)
    torch.save(
        {
            "params": [p.detach().clone() for p in ddp.parameters()],
            "state": [dict(opt.state[p]) for p in ddp.parameters()],
        },
        out / f"ddp_8bit_rank{rank}.pt",
    )
    model = fsdp2_model(world)
    train(model, adamkit.Adam(model.parameters(), lr=LR, state_precision="bf16"), batches,
          rank, world)  # fmt: skip
    save(out, "fsdp2_bf16", model, rank)
    fsdp2_8bit_against_local_shards(out, rank, world, batches)
    for name, options in (("dcp_bf16", {"state_precision": "bf16"}), ("dcp_8bit", LOW_MEMORY)):
        model = fsdp2_model(world)
        opt = adamkit.Adam(model.parameters(), lr=LR, **options)
        train(model, opt, batches[:K_STEPS], rank, world)
        save_dcp(model, opt, out / name)


def save_dcp(model, opt, path: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, opt)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path))


def fsdp2_8bit_against_local_shards(out: Path, rank: int, world: int, batches) -> None:
    """FSDP2 with 8-bit state, and beside it on each rank a plain 8-bit Adam over copies of
    the rank's local shards, fed the same local (reduce-scattered) gradients: the sharded
    optimizer must be that one, bit for bit, params and state. Saved: full params, per rank
    whether they agreed, and the dtypes of the state_dict's state slots."""
    model = fsdp2_model(world)
    opt = adamkit.Adam(model.parameters(), lr=LR, **LOW_MEMORY)
    shards = [torch.nn.Parameter(p.detach().to_local().clone()) for p in model.parameters()]
    shadow = adamkit.Adam(shards, lr=LR, **LOW_MEMORY)
    for batch in batches:
        x, y = local(batch, rank, world)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        for p, s in zip(model.parameters(), shards, strict=True):
            s.grad = p.grad.to_local().clone()
        opt.step()
        shadow.step()
    agree = all(
        torch.equal(p.detach().to_local(), s.detach())
        and opt.state[p].keys() == shadow.state[s].keys()
        and all(torch.equal(to_local(v), shadow.state[s][key]) for key, v in opt.state[p].items())
        for p, s in zip(model.parameters(), shards, strict=True)
    )
    gathered = [torch.zeros(1) for _ in range(world)]
    dist.all_gather(gathered, torch.tensor([float(agree)]))
    saved = opt.state_dict()["state"][0]
    slots = {key: str(value.dtype) for key, value in saved.items() if key != "step"}
    agree_per_rank = [g.item() for g in gathered]
    save(out, "fsdp2_8bit", model, rank, agree_per_rank=agree_per_rank, state_dict_slots=slots)


def DDP_of(model):
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model)


def skip_on_all_ranks(out: Path, rank: int, world: int, batches) -> None:
    """A NaN in rank 1's shard only: with on_nonfinite="skip" every rank skips the step."""
    model = fsdp2_model(world)
    opt = adamkit.Adam(model.parameters(), lr=LR, on_nonfinite="skip")
    train(model, opt, batches[:1], rank, world)
    before = full_params(model)
    x, y = local(batches[1], rank, world)
    opt.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    if rank == 1:
        next(model.parameters()).grad.to_local().view(-1)[0] = float("nan")
    opt.step()
    after = full_params(model)
    unchanged = torch.tensor(
        [float(all(torch.equal(a, b) for a, b in zip(before, after, strict=True)))]
    )
    skipped = torch.tensor([float(opt.skipped_steps)])
    gathered = [torch.zeros(2) for _ in range(world)]
    dist.all_gather(gathered, torch.cat([unchanged, skipped]))
    if rank == 0:
        torch.save({"per_rank": [g.tolist() for g in gathered]}, out / "skip.pt")


def phase_resume(out: Path, rank: int, world: int) -> None:
    resume_from(out / "dcp", "dcp_resumed", out, rank, world)
    resume_from(out / "dcp_bf16", "dcp_bf16_resumed", out, rank, world, state_precision="bf16")
    resume_from(out / "dcp_8bit", "dcp_8bit_resumed", out, rank, world, **LOW_MEMORY)


def resume_from(checkpoint: Path, name: str, out: Path, rank: int, world: int, **options) -> None:
    """Fresh FSDP2 model and optimizer, loaded from the DCP checkpoint after K_STEPS, trained
    to N_STEPS and saved as ``name``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model = fsdp2_model(world)
    opt = adamkit.Adam(model.parameters(), lr=LR, **options)
    model_sd, optim_sd = get_state_dict(model, opt)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(checkpoint))
    set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    train(model, opt, global_batches(N_STEPS)[K_STEPS:], rank, world)
    save(out, name, model, rank)


def main() -> None:
    out, phase = Path(sys.argv[1]), sys.argv[2]
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    rank, world = dist.get_rank(), dist.get_world_size()
    count_kernel_paths()
    try:
        {"train": phase_train, "resume": phase_resume}[phase](out, rank, world)
        # Let every rank's outstanding gloo work finish before the group goes: a collective
        # still in flight at interpreter exit can abort the process (its worker thread needs
        # the GIL while Python finalizes; seen with torch 2.13 about once in ten runs).
        dist.barrier()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
    # Everything is written. Leave without Python's finalization: even after the barrier,
    # torch 2.13's gloo backend occasionally aborts the process there ("terminate called
    # without an active exception": a gloo thread releasing finished work needs the GIL while
    # the interpreter shuts down, pytorch/pytorch#179291), which would fail a correct run.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
