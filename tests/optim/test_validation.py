"""Out-of-range hyperparameters raise ValueError naming the argument and the bad value."""

from __future__ import annotations

import math

import pytest
import torch

import adamkit

BAD = [
    (adamkit.Adam, {"lr": -1e-3}, r"Invalid lr: -0\.001; expected a finite number >= 0"),
    (adamkit.Adam, {"lr": math.nan}, r"Invalid lr: nan"),
    (adamkit.Adam, {"lr": math.inf}, r"Invalid lr: inf"),
    (
        adamkit.Adam,
        {"lr": torch.tensor([1e-3, 1e-3])},
        r"lr as a Tensor must have exactly 1 element",
    ),
    (
        adamkit.Adam,
        {"betas": (1.0, 0.999)},
        r"Invalid betas\[0\]: 1\.0; expected a number in \[0, 1\)",
    ),
    (adamkit.Adam, {"betas": (0.9, -0.1)}, r"Invalid betas\[1\]: -0\.1"),
    (adamkit.Adam, {"betas": (0.9,)}, r"Invalid betas: \(0\.9,\); expected a pair"),
    (adamkit.Adam, {"eps": -1e-8}, r"Invalid eps: -1e-08"),
    (adamkit.Adam, {"weight_decay": -0.1}, r"Invalid weight_decay: -0\.1"),
    (adamkit.AdamW, {"weight_decay": math.nan}, r"Invalid weight_decay: nan"),
    (adamkit.SGD, {"lr": math.nan}, r"Invalid lr: nan"),
    (adamkit.SGD, {"momentum": -0.5}, r"Invalid momentum: -0\.5"),
    (adamkit.SGD, {"dampening": 1.5}, r"Invalid dampening: 1\.5; expected a number in \[0, 1\]"),
    (adamkit.SGD, {"nesterov": True}, r"Nesterov momentum requires a momentum and zero dampening"),
    (
        adamkit.SGD,
        {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
        r"got momentum=0\.9, dampening=0\.1",
    ),
    (adamkit.RMSprop, {"alpha": 1.5}, r"Invalid alpha: 1\.5"),
    (adamkit.RMSprop, {"eps": -1.0}, r"Invalid eps: -1\.0"),
    (adamkit.RMSprop, {"lr": "fast"}, r"lr must be a number; got 'fast' of type str"),
]


@pytest.mark.parametrize(("cls", "kwargs", "message"), BAD)
def test_bad_hyperparameter_raises_value_error(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_bad_param_group_is_rejected_and_optimizer_unchanged():
    opt = adamkit.Adam([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match=r"Invalid lr: -1\.0"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))], "lr": -1.0})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize("cls", [adamkit.Adam, adamkit.AdamW, adamkit.SGD])
def test_fused_with_foreach_or_differentiable_is_refused(cls):
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(RuntimeError, match="cannot be `True` together"):
        cls(p, fused=True, foreach=True)
    with pytest.raises(RuntimeError, match="does not support `differentiable`"):
        cls(p, fused=True, differentiable=True)


@pytest.mark.parametrize("cls", [adamkit.Adam, adamkit.AdamW, adamkit.SGD, adamkit.RMSprop])
def test_valid_edge_values_are_accepted(cls):
    p = [torch.nn.Parameter(torch.zeros(2))]
    kwargs = {"lr": 0.0, "weight_decay": 0.0}
    if cls in (adamkit.Adam, adamkit.AdamW):
        kwargs.update(betas=(0.0, 0.0), eps=0.0)
    cls(p, **kwargs)
