"""Drop-in torch.optim optimizers whose math lives in :mod:`adamkit.kernels`."""

from ._checkpoint import StateDictError
from ._lowmem_checkpoint import dequantized_state_dict
from ._nonfinite import NonFiniteGradientError
from .adam import Adam, AdamW
from .adam_family import Adamax, NAdam, RAdam
from .ademamix import AdEMAMix
from .lion import Lion
from .rmsprop import RMSprop
from .schedule_free import ScheduleFreeAdamW
from .sgd import SGD

__all__ = [
    "SGD",
    "AdEMAMix",
    "Adam",
    "AdamW",
    "Adamax",
    "Lion",
    "NAdam",
    "NonFiniteGradientError",
    "RAdam",
    "RMSprop",
    "ScheduleFreeAdamW",
    "StateDictError",
    "dequantized_state_dict",
]
