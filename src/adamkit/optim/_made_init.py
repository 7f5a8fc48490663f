"""An optimizer's ``__init__`` made from its torch namesake's signature.

A spec-built optimizer takes torch's arguments, in torch's order and with torch's defaults
(its param groups hold exactly torch's keys), and adamkit's own options after them, keyword
only: ``fused`` where torch's class has none (a group key only when given), ``on_nonfinite``
and the low-memory options. Nothing of that is written per class.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from ..algorithms import AlgorithmSpec

_KEYWORD = inspect.Parameter.KEYWORD_ONLY
# adamkit's options: (default, annotation)
ADAMKIT_OPTIONS = {
    "on_nonfinite": ("propagate", str),
    "state_precision": ("fp32", str),
    "min_8bit_size": (4096, int),
    "param_rounding": ("nearest", str),
}


def torch_class(spec: AlgorithmSpec) -> type[torch.optim.Optimizer]:
    return getattr(torch.optim, spec.torch_name)


def signature(spec: AlgorithmSpec) -> inspect.Signature:
    """torch's ``__init__`` signature for ``spec``, then adamkit's keyword-only options."""
    torch_signature = inspect.signature(torch_class(spec).__init__)
    parameters = list(torch_signature.parameters.values())
    names = {p.name for p in parameters}
    extra = {} if "fused" in names else {"fused": (None, bool | None)}
    extra.update(ADAMKIT_OPTIONS)
    parameters += [
        inspect.Parameter(name, _KEYWORD, default=default, annotation=annotation)
        for name, (default, annotation) in extra.items()
    ]
    return torch_signature.replace(parameters=parameters, return_annotation=None)


def made_init(spec: AlgorithmSpec, base_init: Callable[..., None]) -> Callable[..., None]:
    """``__init__(self, params, <torch's arguments>, *, <adamkit's options>)`` that calls
    ``base_init(self, params, defaults, on_nonfinite=..., low_memory=...)``."""
    made = signature(spec)
    torch_has_fused = "fused" in inspect.signature(torch_class(spec).__init__).parameters

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = made.bind(self, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        del arguments["self"]
        params = arguments.pop("params")
        on_nonfinite = arguments.pop("on_nonfinite")
        low_memory = tuple(arguments.pop(k) for k in ("state_precision", "min_8bit_size"))
        low_memory += (arguments.pop("param_rounding"),)
        if not torch_has_fused and arguments["fused"] is None:
            del arguments["fused"]  # param groups stay exactly torch's
        base_init(self, params, arguments, on_nonfinite=on_nonfinite, low_memory=low_memory)

    __init__.__signature__ = made  # type: ignore[attr-defined]
    __init__.__doc__ = f"Arguments of torch.optim.{spec.torch_name}, then adamkit's options."
    return __init__
