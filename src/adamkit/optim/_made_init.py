"""An optimizer's ``__init__`` made from its torch namesake's signature.

A spec-built optimizer takes torch's arguments, in torch's order and with torch's defaults
(its param groups hold exactly torch's keys), and adamkit's own options after them, keyword
only: ``fused`` where torch's class has none (a group key only when given), ``on_nonfinite``
and the low-memory options. Nothing of that is written per class.

An algorithm torch does not have (Lion) takes its spec's hyperparameters, in the spec's order
with its defaults (those of the implementation it follows), then ``maximize`` and ``foreach``
as torch's optimizers take them, keyword only; its groups hold those keys.
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


_POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD
# The options of torch's optimizers that an algorithm torch lacks takes too: (default, annotation)
TORCH_OPTIONS = {"maximize": (False, bool), "foreach": (None, bool | None)}


def torch_class(spec: AlgorithmSpec) -> type[torch.optim.Optimizer] | None:
    """torch.optim's class of ``spec`` (None for an algorithm torch does not have)."""
    return getattr(torch.optim, spec.torch_name, None)


def group_signature(spec: AlgorithmSpec) -> inspect.Signature:
    """``__init__(self, params, ...)`` whose arguments after ``params`` are the group keys:
    torch's class's, or for an algorithm torch lacks the spec's hyperparameters and
    :data:`TORCH_OPTIONS`."""
    cls = torch_class(spec)
    if cls is not None:
        return inspect.signature(cls.__init__)
    parameters = [inspect.Parameter(name, _POSITIONAL) for name in ("self", "params")]
    parameters += [
        inspect.Parameter(h.name, _POSITIONAL, default=h.default) for h in spec.hyperparameters
    ]
    parameters += [
        inspect.Parameter(name, _KEYWORD, default=default, annotation=annotation)
        for name, (default, annotation) in TORCH_OPTIONS.items()
    ]
    return inspect.Signature(parameters)


def signature(spec: AlgorithmSpec) -> inspect.Signature:
    """torch's ``__init__`` signature for ``spec`` (:func:`group_signature`), then adamkit's
    keyword-only options."""
    torch_signature = group_signature(spec)
    parameters = list(torch_signature.parameters.values())
    names = {p.name for p in parameters}
    extra = {} if "fused" in names else {"fused": (None, bool | None)}
    if spec.cautious:
        extra["cautious"] = (False, bool)
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
    torch_has_fused = "fused" in group_signature(spec).parameters

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            bound = made.bind(self, *args, **kwargs)
        except TypeError as error:  # name the class and what it takes
            takes = ", ".join(name for name in made.parameters if name != "self")
            raise TypeError(f"{type(self).__name__}: {error}; it takes {takes}") from None
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        del arguments["self"]
        params = arguments.pop("params")
        on_nonfinite = arguments.pop("on_nonfinite")
        low_memory = tuple(arguments.pop(k) for k in ("state_precision", "min_8bit_size"))
        low_memory += (arguments.pop("param_rounding"),)
        if not torch_has_fused and arguments["fused"] is None:
            del arguments["fused"]  # param groups stay exactly torch's
        if not arguments.get("cautious", True):
            del arguments["cautious"]  # (as fused: a group key only when asked for)
        base_init(self, params, arguments, on_nonfinite=on_nonfinite, low_memory=low_memory)

    __init__.__signature__ = made  # type: ignore[attr-defined]
    source = "torch.optim." if torch_class(spec) is not None else "the spec of "
    __init__.__doc__ = f"Arguments of {source}{spec.torch_name}, then adamkit's options."
    return __init__
