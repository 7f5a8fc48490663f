"""Resume is bitwise: N steps straight == k steps, torch.save, load in a new process, N-k more."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

import adamkit

KERNELS = {"forloop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {}}
CONFIGS = {
    "Adam": {"amsgrad": True, "weight_decay": 0.1},
    "AdamW": {},
    "SGD": {"lr": 0.01, "momentum": 0.9, "nesterov": True},
    "RMSprop": {"centered": True, "momentum": 0.5},
}
N, K = 8, 3


def _params0(gen):
    shapes = [(7, 13), (0,), (), (1031,)]
    params = [torch.randn(s, generator=gen) for s in shapes]
    return [*params, torch.randn(5, 3, generator=gen, dtype=torch.complex64)]


def _steps(opt, params, plan):
    for grads in plan:
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()


def test_resume_in_a_new_process_is_bitwise_identical(tmp_path: Path):
    gen = torch.Generator().manual_seed(0)
    params0 = _params0(gen)
    plan = [[torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params0] for _ in range(N)]
    runs, straight = {}, {}
    for opt_name, config in CONFIGS.items():
        for kernel, flags in KERNELS.items():
            name = f"{opt_name}-{kernel}"
            cls = getattr(adamkit, opt_name)
            flags = {**config, **flags}
            params = [p.clone().requires_grad_() for p in params0]
            opt = cls(params, **flags)
            _steps(opt, params, plan)
            straight[name] = ([p.detach() for p in params], opt.state_dict())

            params = [p.clone().requires_grad_() for p in params0]
            opt = cls(params, **flags)
            _steps(opt, params, plan[:K])
            runs[name] = {
                "optimizer": opt_name,
                "flags": flags,
                "params": [p.detach().clone() for p in params],
                "state_dict": opt.state_dict(),
                "remaining_grads": plan[K:],
            }
    torch.save({"runs": runs}, tmp_path / "checkpoint.pt")
    worker = Path(__file__).with_name("_resume_worker.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run(
        [sys.executable, str(worker), str(tmp_path / "checkpoint.pt"), str(tmp_path / "out.pt")],
        check=True,
        timeout=300,
        env=env,
    )
    resumed = torch.load(tmp_path / "out.pt", weights_only=True)
    assert resumed.keys() == straight.keys()
    for name, (params, state_dict) in straight.items():
        for i, (a, b) in enumerate(zip(params, resumed[name]["params"], strict=True)):
            assert torch.equal(a, b), f"{name}: param {i}"
        got = resumed[name]["state"]
        assert got["param_groups"] == state_dict["param_groups"], name
        for idx, entry in state_dict["state"].items():
            for key, value in entry.items():
                other = got["state"][idx][key]
                assert other.dtype == value.dtype and torch.equal(other, value), (name, idx, key)
