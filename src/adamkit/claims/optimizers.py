"""The optimizers the claims compare: the four rules the claims name (SGD, Momentum, RMSProp,
Adam) and Adam's variants (AdEMAMix, ADOPT, Lion, Schedule-Free AdamW, StableAdamW, Cautious
Adam, Adafactor), measured beside them where a claim compares optimizers.

A variant runs at its class's defaults except the learning rate, which each experiment sets, and
AdEMAMix's and StableAdamW's weight decay: their default λ = 0.01 would shrink the weights where
Adam's do not, and the claims are about the update rules. Cautious Adam is Adam with timm's
cautious mask (``adamkit.optim.Adam(cautious=True)``), so it takes Adam's betas and ε.
Adafactor is torch.optim.Adafactor's: its learning rate is the cap ρ of a relative step size,
ρ_t = min(ρ, 1/√t), each step scaled by the parameter's RMS. Each claim's verdict stays its own
comparison (Adam against the rules it names); the variants' numbers are reported beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch

from .. import optim
from ..viz.plot import COLORS as CLASSIC_COLORS
from ..viz.trajectory import make_optimizer

NAMES = ("SGD", "Momentum", "RMSProp", "Adam")
VARIANTS = (
    "AdEMAMix", "ADOPT", "Lion", "Schedule-Free", "StableAdamW", "Cautious Adam", "Adafactor",
)  # fmt: skip
ALL = NAMES + VARIANTS
# The explorer's colours; the variants' lines are dashed there and here.
COLORS = {
    **CLASSIC_COLORS,
    "AdEMAMix": "#bcbd22",
    "ADOPT": "#393b79",
    "Lion": "#111111",
    "Schedule-Free": "#e6550d",
    "StableAdamW": "#637939",
    "Cautious Adam": "#843c39",
    "Adafactor": "#7b4173",
}
LINESTYLES = {n: "--" if n in VARIANTS else "-" for n in ALL}


def make(name: str, params: Iterable[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Optimizer ``name`` over ``params``, ready to step (Schedule-Free in train mode)."""
    params = list(params)
    if name in NAMES:
        return make_optimizer(name, params, lr, (0.9, 0.999))
    if name == "AdEMAMix":
        return optim.AdEMAMix(params, lr=lr, weight_decay=0.0)
    if name == "ADOPT":
        return optim.ADOPT(params, lr=lr)
    if name == "Lion":
        return optim.Lion(params, lr=lr)
    if name == "Schedule-Free":
        opt = optim.ScheduleFreeAdamW(params, lr=lr)
        opt.train()
        return opt
    if name == "StableAdamW":
        return optim.StableAdamW(params, lr=lr, weight_decay=0.0)
    if name == "Cautious Adam":
        return optim.Adam(params, lr=lr, betas=(0.9, 0.999), cautious=True)
    if name == "Adafactor":
        return optim.Adafactor(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(ALL)}")


@contextmanager
def evaluating(opt: torch.optim.Optimizer) -> Iterator[None]:
    """The parameters as one evaluates them: Schedule-Free's hold y (where the gradient is
    taken) while training, and its average x in eval mode; the others' are what they are."""
    if not isinstance(opt, optim.ScheduleFreeAdamW):
        yield
        return
    opt.eval()
    try:
        yield
    finally:
        opt.train()


def listed(values: dict[str, float], names: Iterable[str], fmt: str = ".3g") -> str:
    """'AdEMAMix 1.2, ADOPT 3.4, …': a verdict's report of ``names``."""
    return ", ".join(f"{n} {values[n]:{fmt}}" for n in names)
