"""torch.optim's foreach/fused/differentiable/capturable flags → adamkit's backends."""

from __future__ import annotations

import pytest

from adamkit.kernels import registry


@pytest.mark.parametrize(
    ("flags", "backend"),
    [
        ({"foreach": None, "fused": None}, "fused"),  # neither set: the fastest
        ({"foreach": None, "fused": True}, "fused"),
        ({"foreach": None, "fused": False}, "forloop"),  # as torch: not the default choice
        ({"foreach": True, "fused": None}, "foreach"),
        ({"foreach": True, "fused": False}, "foreach"),
        ({"foreach": False, "fused": None}, "forloop"),
        ({"foreach": None, "fused": None, "differentiable": True}, "forloop"),
        ({"foreach": None, "fused": None, "capturable": True}, "forloop"),
        ({"foreach": None, "fused": True, "capturable": True}, "fused"),
    ],
)
def test_choose_backend(flags, backend):
    flags = {"differentiable": False, **flags}
    assert registry.choose_backend(**flags) == backend
