"""adamkit: Adam, momentum and RMSProp — exact to the equations, fast, and observable.

Drop-in replacements for torch.optim's optimizers (same arguments, state and checkpoints),
a NumPy reference of the equations (:mod:`adamkit.reference`) and the kernels that run them
(:mod:`adamkit.kernels`).
"""

from .optim import (
    ADOPT,
    SGD,
    Adafactor,
    Adam,
    Adamax,
    AdamW,
    AdEMAMix,
    Lion,
    NAdam,
    NonFiniteGradientError,
    RAdam,
    RMSprop,
    ScheduleFreeAdamW,
    StableAdamW,
    StateDictError,
)

__version__ = "0.1.0"
__all__ = [
    "ADOPT",
    "SGD",
    "AdEMAMix",
    "Adafactor",
    "Adam",
    "AdamW",
    "Adamax",
    "Lion",
    "NAdam",
    "NonFiniteGradientError",
    "RAdam",
    "RMSprop",
    "ScheduleFreeAdamW",
    "StableAdamW",
    "StateDictError",
    "__version__",
]
