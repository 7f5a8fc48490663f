"""Drop-in torch.optim optimizers whose math lives in :mod:`adamkit.kernels`."""

from ._checkpoint import StateDictError
from ._nonfinite import NonFiniteGradientError
from .adam import Adam, AdamW
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["SGD", "Adam", "AdamW", "NonFiniteGradientError", "RMSprop", "StateDictError"]
