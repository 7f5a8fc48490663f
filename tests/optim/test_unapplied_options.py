"""Options that do not apply to every tensor say so: which state format each parameter got,
param_rounding on a group without half-precision params, AdamW(lazy_sparse=True)'s fix."""

from __future__ import annotations

import csv
import warnings

import pytest
import torch

import adamkit
from adamkit.diagnostics import Recorder, snapshot, state_formats


def _params():
    return {
        "big": torch.nn.Parameter(torch.randn(8192)),
        "small": torch.nn.Parameter(torch.randn(10)),  # under min_8bit_size (4096)
        "double": torch.nn.Parameter(torch.randn(8192, dtype=torch.float64)),
        "complex": torch.nn.Parameter(torch.randn(8192, dtype=torch.complex64)),
        "half": torch.nn.Parameter(torch.randn(8192).to(torch.bfloat16)),
    }


def _step(opt, params):
    for p in params.values():
        p.grad = torch.ones_like(p)
    opt.step()


@pytest.mark.parametrize("precision", ["8bit", "bf16", "fp32"])
def test_state_formats_show_what_each_tensor_got(precision):
    params = _params()
    opt = adamkit.AdamW(list(params.items()), state_precision=precision)
    low = {"big": precision, "half": precision}
    small = precision if precision == "bf16" else "fp32"  # only 8-bit has a size floor
    expected = {"small": small, "double": "fp32", "complex": "fp32", **low}
    assert state_formats(opt) == expected  # known before the first step
    _step(opt, params)
    assert state_formats(opt) == expected
    per = snapshot(opt, per_param=True)
    assert {name: row["state_format"] for name, row in per.items()} == expected
    # ... and they are what the state holds: 8-bit codes are uint8, bf16 state bfloat16.
    dtype = {"8bit": torch.uint8, "bf16": torch.bfloat16}
    for name, p in params.items():
        got = opt.state[p]["exp_avg"].dtype
        assert got == dtype.get(expected[name], p.dtype), name


def test_state_formats_per_group_and_for_torch_optimizers():
    a, b = torch.nn.Parameter(torch.randn(8192)), torch.nn.Parameter(torch.randn(8192))
    opt = adamkit.Adam(
        [{"params": [a]}, {"params": [b], "state_precision": "fp32"}], state_precision="8bit"
    )
    assert state_formats(opt) == {"group0.param0": "8bit", "group1.param0": "fp32"}
    assert state_formats(torch.optim.Adam([a])) == {"group0.param0": "fp32"}
    assert set(state_formats(adamkit.SGD([a], lr=0.1)).values()) == {"fp32"}


def test_per_param_recording_has_the_state_format_column(tmp_path):
    params = _params()
    opt = adamkit.Adam(list(params.items()), state_precision="8bit")
    path = tmp_path / "diag.csv"
    with Recorder(opt, csv=path, per_param=True):
        _step(opt, params)
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0])[:4] == ["call", "label", "step", "state_format"]
    assert {r["label"]: r["state_format"] for r in rows}["small"] == "fp32"


def test_param_rounding_on_float32_params_warns_once_at_the_first_step():
    w = torch.nn.Parameter(torch.randn(100))
    opt = adamkit.Adam([w], param_rounding="stochastic")  # no warning when made
    w.grad = torch.ones(100)
    with pytest.warns(
        UserWarning, match=r"param_rounding='stochastic' has no effect while .* float32"
    ):
        opt.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()  # once


def test_param_rounding_on_a_group_with_half_params_or_nearest_says_nothing():
    w = torch.nn.Parameter(torch.randn(100))
    h = torch.nn.Parameter(torch.randn(100).to(torch.bfloat16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for opt in (
            adamkit.Adam([w, h], param_rounding="kahan"),  # a group with a bfloat16 param
            adamkit.Adam([w], state_precision="8bit"),  # param_rounding="nearest"
        ):
            for p in (w, h):
                p.grad = torch.ones_like(p)
            opt.step()
    # per group: only the group without half params is named
    opt = adamkit.Adam([{"params": [h]}, {"params": [w]}], param_rounding="stochastic")
    with pytest.warns(UserWarning) as record:
        opt.step()
    assert len(record) == 1 and "float32" in str(record[0].message)


def test_adamw_lazy_sparse_under_its_default_decay_gives_the_fix():
    w = [torch.nn.Parameter(torch.zeros(3, 2))]
    with pytest.raises(ValueError) as info:
        adamkit.AdamW(w, lazy_sparse=True)
    message = str(info.value)
    assert "weight_decay=0.01 (AdamW's default)" in message
    assert "AdamW(..., lazy_sparse=True, weight_decay=0)" in message
    opt = adamkit.AdamW(w, lazy_sparse=True, weight_decay=0)  # the fix works
    assert opt.lazy_sparse
    with pytest.raises(ValueError, match=r"Adam\(\.\.\., lazy_sparse=True, amsgrad=False\)"):
        adamkit.Adam(w, amsgrad=True, lazy_sparse=True)
