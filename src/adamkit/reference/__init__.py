"""The NumPy float64 reference: Adam, SGD-momentum and RMSProp as pure functions.

Each module has ``init(param) -> state`` and ``step(param, grad, state, hyper) ->
(param, state, aux)`` for one array; :func:`run` lifts a step function to a list of arrays.
This is the oracle every other layer of adamkit is tested against.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import (
    adafactor,
    adam,
    adamax,
    ademamix,
    adopt,
    cautious,
    lion,
    nadam,
    radam,
    rmsprop,
    schedule_free,
    sgd,
    stable_adamw,
)


def run(
    step_fn: Callable[..., tuple[np.ndarray, Any, Any]],
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray | None],
    states: Sequence[Any],
    hyper: Any,
) -> tuple[list[np.ndarray], list[Any], list[Any]]:
    """Apply a one-array ``step_fn`` to many arrays; ``None`` grads leave param and state alone."""
    new_params, new_states, auxes = [], [], []
    for param, grad, state in zip(params, grads, states, strict=True):
        if grad is None:
            new_params.append(param)
            new_states.append(state)
            auxes.append(None)
            continue
        p, s, a = step_fn(param, grad, state, hyper)
        new_params.append(p)
        new_states.append(s)
        auxes.append(a)
    return new_params, new_states, auxes


__all__ = ["adafactor", "adam", "adamax", "nadam", "radam", "rmsprop", "run", "sgd"]
__all__ += ["ademamix", "adopt", "cautious", "lion", "schedule_free", "stable_adamw"]
