"""Out-of-range hyperparameters raise ValueError naming the argument and the bad value."""

from __future__ import annotations

import math

import pytest
import torch

import adamkit

# Each message starts with torch.optim's words, then says what adamkit accepts.
BAD = [
    (
        adamkit.Adam,
        {"lr": -1e-3},
        r"^Invalid learning rate: -0\.001; lr must be a finite number >= 0",
    ),
    (adamkit.Adam, {"lr": math.nan}, r"^Invalid learning rate: nan"),
    (adamkit.Adam, {"lr": math.inf}, r"^Invalid learning rate: inf"),
    (adamkit.Adam, {"lr": torch.tensor([1e-3, 1e-3])}, r"^Tensor lr must be 1-element; got shape"),
    (
        adamkit.Adam,
        {"betas": (1.0, 0.999)},
        r"^Invalid beta parameter at index 0: 1\.0; betas\[0\] must be a number in \[0, 1\)",
    ),
    (adamkit.Adam, {"betas": (0.9, -0.1)}, r"^Invalid beta parameter at index 1: -0\.1"),
    (adamkit.Adam, {"betas": (0.9,)}, r"^Invalid betas: \(0\.9,\); betas must be a pair"),
    (adamkit.Adam, {"eps": -1e-8}, r"^Invalid epsilon value: -1e-08"),
    (adamkit.Adam, {"weight_decay": -0.1}, r"^Invalid weight_decay value: -0\.1"),
    (adamkit.AdamW, {"weight_decay": math.nan}, r"^Invalid weight_decay value: nan"),
    (adamkit.SGD, {"lr": math.nan}, r"^Invalid learning rate: nan"),
    (adamkit.SGD, {"momentum": -0.5}, r"^Invalid momentum value: -0\.5"),
    (
        adamkit.SGD,
        {"dampening": 1.5},
        r"^Invalid dampening value: 1\.5; dampening must be a number in \[0, 1\]",
    ),
    (adamkit.SGD, {"nesterov": True}, r"^Nesterov momentum requires a momentum and zero dampening"),
    (
        adamkit.SGD,
        {"nesterov": True, "momentum": 0.9, "dampening": 0.1},
        r"got momentum=0\.9, dampening=0\.1",
    ),
    (adamkit.RMSprop, {"alpha": 1.5}, r"^Invalid alpha value: 1\.5"),
    (adamkit.RMSprop, {"eps": -1.0}, r"^Invalid epsilon value: -1\.0"),
    (
        adamkit.RMSprop,
        {"lr": "fast"},
        r"^Invalid learning rate: 'fast'; lr must be a number, got str",
    ),
    (adamkit.NAdam, {"momentum_decay": -1.0}, r"^Invalid momentum_decay value: -1\.0"),
    (adamkit.NAdam, {"betas": (0.9, 1.0)}, r"^Invalid beta parameter at index 1: 1\.0"),
    (adamkit.RAdam, {"eps": -1.0}, r"^Invalid epsilon value: -1\.0"),
    (adamkit.RAdam, {"weight_decay": -1}, r"^Invalid weight_decay value: -1; weight_decay must"),
    (adamkit.Adamax, {"lr": -0.01}, r"^Invalid learning rate: -0\.01"),
    (adamkit.Adamax, {"betas": (-0.1, 0.9)}, r"^Invalid beta parameter at index 0: -0\.1"),
]


@pytest.mark.parametrize(("cls", "kwargs", "message"), BAD)
def test_bad_hyperparameter_raises_value_error(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls([torch.nn.Parameter(torch.zeros(2))], **kwargs)


def test_bad_param_group_is_rejected_and_optimizer_unchanged():
    opt = adamkit.Adam([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match=r"Invalid learning rate: -1\.0"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(3))], "lr": -1.0})
    assert len(opt.param_groups) == 1


@pytest.mark.parametrize(
    "cls", [adamkit.Adam, adamkit.AdamW, adamkit.SGD, adamkit.NAdam, adamkit.RAdam, adamkit.Adamax]
)
def test_fused_with_foreach_or_differentiable_is_refused(cls):
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(RuntimeError, match="cannot be `True` together"):
        cls(p, fused=True, foreach=True)
    with pytest.raises(RuntimeError, match="does not support `differentiable`"):
        cls(p, fused=True, differentiable=True)


@pytest.mark.parametrize(
    "cls",
    [
        adamkit.Adam,
        adamkit.AdamW,
        adamkit.SGD,
        adamkit.RMSprop,
        adamkit.NAdam,
        adamkit.RAdam,
        adamkit.Adamax,
    ],
)
def test_valid_edge_values_are_accepted(cls):
    p = [torch.nn.Parameter(torch.zeros(2))]
    kwargs = {"lr": 0.0, "weight_decay": 0.0}
    if cls not in (adamkit.SGD, adamkit.RMSprop):
        kwargs.update(betas=(0.0, 0.0), eps=0.0)
    cls(p, **kwargs)


@pytest.mark.parametrize(("cls", "kwargs", "message"), BAD)
def test_hyperparameters_are_checked_before_params_as_in_torch(cls, kwargs, message):
    # torch's own error tests pass params=None: the hyperparameter error must come first.
    with pytest.raises(ValueError, match=message):
        cls(None, **kwargs)


def test_messages_start_with_torchs_own():
    # The same bad values give torch.optim's message as the start of adamkit's.
    cases = [
        ("Adam", {"lr": -1.0}),
        ("Adam", {"betas": (1.0, 0.9)}),
        ("Adam", {"eps": -1.0}),
        ("SGD", {"momentum": -1.0}),
        ("RMSprop", {"alpha": -1.0}),
        ("NAdam", {"momentum_decay": -1.0}),
        ("RAdam", {"weight_decay": -1.0}),
        ("Adamax", {"betas": (0.5, 1.5)}),
    ]
    for name, kwargs in cases:
        with pytest.raises(ValueError) as theirs:
            getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(1))], **kwargs)
        with pytest.raises(ValueError) as ours:
            getattr(adamkit, name)([torch.nn.Parameter(torch.zeros(1))], **kwargs)
        assert str(ours.value).startswith(str(theirs.value)), (name, kwargs)
