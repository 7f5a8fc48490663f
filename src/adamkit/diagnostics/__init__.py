"""See how m̂ and √v̂ steer learning: summaries of the optimizer state during training.

* :func:`snapshot` — per group (or parameter): effective learning rate α/(√v̂+ε), RMS of m̂
  and √v̂, signal-to-noise |m̂|/√v̂, update size, ε-dominated fraction, momentum agreement.
* :class:`Recorder` — sample it every N steps into CSV, TensorBoard or memory.
"""

from .recorder import Recorder
from .snapshot import QUANTITIES, flatten, snapshot, summarize

__all__ = ["QUANTITIES", "Recorder", "flatten", "snapshot", "summarize"]
