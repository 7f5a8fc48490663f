"""load_state_dict checks everything first: a bad state_dict raises and changes nothing."""

from __future__ import annotations

import copy

import pytest
import torch

import adamkit


def _trained(cls=adamkit.Adam, **config):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = cls(
        [{"params": model[0].parameters()}, {"params": model[1].parameters(), "lr": 0.01}],
        **config,
    )
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(5, 3)).pow(2).sum().backward()
        opt.step()
    return model, opt


def _bad(mutate, cls=adamkit.Adam, **config):
    _, donor = _trained(cls, **config)
    saved = copy.deepcopy(donor.state_dict())
    mutate(saved)
    return saved


CASES = {
    "group count": (lambda sd: sd["param_groups"].pop(), r"1 param group\(s\).*has 2"),
    "param count": (
        lambda sd: sd["param_groups"][1]["params"].pop(),
        r"param group 1 has 1 parameter\(s\) in the state_dict but 2",
    ),
    "state shape": (
        lambda sd: sd["state"][0].__setitem__("exp_avg", torch.zeros(3, 4)),
        r"state of parameter 0 in group 0, key 'exp_avg' has shape \(3, 4\); the parameter "
        r"has \(4, 3\)",
    ),
    "complex state for a real param": (
        lambda sd: sd["state"][1].__setitem__("exp_avg_sq", torch.zeros(4, dtype=torch.complex64)),
        r"key 'exp_avg_sq' has dtype torch.complex64; the parameter is torch.float32, "
        "expected real floating-point",
    ),
    "integer state": (
        lambda sd: sd["state"][1].__setitem__("exp_avg", torch.zeros(4, dtype=torch.int64)),
        r"dtype torch.int64",
    ),
    "missing key": (
        lambda sd: sd["state"][2].pop("exp_avg_sq"),
        r"state of parameter 0 in group 1 has keys \['exp_avg', 'step'\]; expected "
        r"\['exp_avg', 'exp_avg_sq', 'step'\] \(missing \['exp_avg_sq'\]\)",
    ),
    "unexpected key": (
        lambda sd: sd["state"][2].__setitem__("momentum_buffer", torch.zeros(2, 4)),
        r"\(unexpected \['momentum_buffer'\]\)",
    ),
    "fractional step": (
        lambda sd: sd["state"][3].__setitem__("step", torch.tensor(1.5)),
        r"key 'step' is tensor\(1.5000\); expected a step count: a finite integer >= 0",
    ),
    "negative step": (
        lambda sd: sd["state"][3].__setitem__("step", -2),
        r"key 'step' is -2",
    ),
    "bad hyperparameter": (
        lambda sd: sd["param_groups"][0].__setitem__("lr", -1.0),
        r"param group 0: Invalid learning rate: -1.0; lr must be a finite number >= 0",
    ),
    "unknown parameter id": (
        lambda sd: sd["state"].__setitem__(99, {}),
        r"state for parameter id 99, which no param group lists",
    ),
    "not a state_dict": (lambda sd: sd.pop("state"), r"expected a mapping with keys"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_state_dict_raises_and_changes_nothing(case):
    mutate, message = CASES[case]
    _, opt = _trained()
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(adamkit.StateDictError, match=message) as info:
        opt.load_state_dict(_bad(mutate))
    assert str(info.value).endswith("nothing was loaded.")
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for idx, entry in before["state"].items():
        for key, value in entry.items():
            assert torch.equal(after["state"][idx][key], value), (idx, key)


def test_state_dict_errors_are_value_errors():
    # Code that catches torch's ValueError for mismatched groups keeps working.
    assert issubclass(adamkit.StateDictError, ValueError)


def test_sgd_checkpoint_does_not_load_into_adam():
    _, sgd = _trained(adamkit.SGD, lr=0.1, momentum=0.9)
    _, adam = _trained()
    saved = sgd.state_dict()
    for group in saved["param_groups"]:  # make the groups look like Adam's
        group.update({k: v for k, v in adam.param_groups[0].items() if k != "params"})
    with pytest.raises(adamkit.StateDictError, match="missing"):
        adam.load_state_dict(saved)


def test_never_stepped_parameters_and_sgd_none_buffers_load():
    _, opt = _trained(adamkit.SGD, lr=0.1, momentum=0.9)
    saved = copy.deepcopy(opt.state_dict())
    saved["state"][0]["momentum_buffer"] = None
    del saved["state"][1]
    _, fresh = _trained(adamkit.SGD, lr=0.1, momentum=0.9)
    fresh.load_state_dict(saved)
    assert fresh.state_dict()["state"][0]["momentum_buffer"] is None


def test_torch_float32_step_loads_as_exact_float64():
    _, theirs = _trained(torch.optim.Adam)
    _, ours = _trained()
    ours.load_state_dict(theirs.state_dict())
    step = ours.state_dict()["state"][0]["step"]
    assert step.dtype == torch.float64 and step.item() == 2
