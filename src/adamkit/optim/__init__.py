"""Drop-in torch.optim optimizers whose math lives in :mod:`adamkit.kernels`."""

from ._checkpoint import StateDictError
from ._lowmem_checkpoint import dequantized_state_dict
from ._nonfinite import NonFiniteGradientError
from .adafactor import Adafactor
from .adam import Adam, AdamW
from .adam_family import Adamax, NAdam, RAdam
from .ademamix import AdEMAMix
from .adopt import ADOPT
from .lion import Lion
from .rmsprop import RMSprop
from .schedule_free import ScheduleFreeAdamW
from .sgd import SGD
from .stable_adamw import StableAdamW

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
    "dequantized_state_dict",
]
