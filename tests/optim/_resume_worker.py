"""Run by test_resume.py in a fresh process: load checkpoints, take the remaining steps."""

from __future__ import annotations

import sys

import torch

import adamkit


def main(in_path: str, out_path: str) -> None:
    saved = torch.load(in_path, weights_only=True)
    results = {}
    for name, run in saved["runs"].items():
        cls = getattr(adamkit, run["optimizer"])
        params = [p.clone().requires_grad_() for p in run["params"]]
        opt = cls(params, **run["flags"])
        opt.load_state_dict(run["state_dict"])
        for grads in run["remaining_grads"]:
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()
        results[name] = {"params": [p.detach() for p in params], "state": opt.state_dict()}
    torch.save(results, out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
