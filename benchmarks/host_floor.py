"""The floor of a Python optimizer step on the tiny MLP (c): what any step that reads each
gradient's address and launches adamkit's Adam loop once must pay, against adamkit's whole
step and torch's fused Adam, interleaved.

"adamkit host only" is adamkit's step with the loop a no-op: the host's work alone.
The "floor" contender does only this per step: read ``p.grad`` and its ``data_ptr()`` for each
param, write them into a prepared address table and call the numba loop (the same call the
fused kernel makes). Everything else adamkit's step does (hyperparameter reads, tensor checks,
state lookups, hooks) is the difference between the two rows.

    .venv/bin/python benchmarks/host_floor.py [--rounds 15] [--json host_floor.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

import adamkit
from adamkit.algorithms import SPECS
from adamkit.bench import interleaved, mean_seconds, workload_shapes
from adamkit.kernels import _batching, _numba_driver, _threads
from adamkit.kernels._tensors import LIKE
from adamkit.kernels.spec_kernels import hyper_key, loop_arrays

WORKLOAD = "c-tiny-mlp-50k"


def _floor_step(params: list[torch.nn.Parameter], opt: adamkit.Adam):
    """A step of the floor contender, prepared from ``opt``'s state after one real step."""
    spec = SPECS["adam"]
    group = opt.param_groups[0]
    hyper, bias, flags = loop_arrays("adam", torch.float32, hyper_key(spec, group))
    states = [opt.state[p] for p in params]
    roles = [
        ([p.grad for p in params], _batching.READ_ONLY),
        ([s["exp_avg"] for s in states], _batching.LIKE_PARAM),
        ([s["exp_avg_sq"] for s in states], _batching.LIKE_PARAM),
        (None, _batching.LIKE_PARAM),
        ([s["step"] for s in states], _batching.COUNTER),
        ([s["step"] for s in states], _batching.COUNTER),
    ]
    batches, _, _ = _batching._split(params, roles)
    batch = batches[torch.float32]
    addresses, numels = batch.addresses(), tuple(batch.numels)
    serial, parallel = _numba_driver.LOOPS["adam"][:2]
    like = LIKE[torch.float32]

    def step() -> None:
        addresses[:, 1] = [p.grad.data_ptr() for p in params]
        addresses[:, 4] = addresses[:, 1]  # the unused slot reads the gradient
        _threads.run_loops(serial, parallel, numels, addresses, like, hyper, bias, flags, True)

    return step


def _host_only_step(opt: adamkit.Adam):
    """``opt``'s replayed step with the numba loop a no-op: the host's work alone (the params
    do not move)."""

    def no_loop(*args) -> None:
        pass

    opt.step()  # (a first replay: the plan's loop scalars are made)
    (plan,) = opt._step_plans.values()
    plan.scalars = [(*arrays[:3], (no_loop, no_loop)) for arrays in plan.scalars]
    return opt.step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", default="host_floor.json")
    args = parser.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    shapes = workload_shapes(WORKLOAD)
    init = [torch.randn(s, generator=gen) for s in shapes]
    grads = [torch.randn(s, generator=gen) * 1e-2 for s in shapes]

    def made(make):
        params = [torch.nn.Parameter(t.clone()) for t in init]
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        opt = make(params)
        opt.step()  # state, kernel cache load
        return params, opt

    floor_params, floor_opt = made(lambda ps: adamkit.Adam(ps))
    steps = {
        "adamkit default": made(lambda ps: adamkit.Adam(ps))[1].step,
        "floor": _floor_step(floor_params, floor_opt),
        "adamkit host only": _host_only_step(made(lambda ps: adamkit.Adam(ps))[1]),
        "torch fused": made(lambda ps: torch.optim.Adam(ps, fused=True))[1].step,
    }
    samples = interleaved(steps, args.rounds, mean_seconds(200))
    medians = {name: statistics.median(v) * 1e6 for name, v in samples.items()}
    print(f"{'contender':16} {'median us':>10} {'x torch fused':>14}")
    for name, us in medians.items():
        print(f"{name:16} {us:>10.1f} {medians['torch fused'] / us:>13.2f}x")
    with open(args.json, "w") as f:
        json.dump({"workload": WORKLOAD, "torch_threads": torch.get_num_threads(),
                   "median_us": medians}, f, indent=2)  # fmt: skip
    print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
