"""See how m̂ and √v̂ steer learning: summaries of the optimizer state during training.

* :func:`snapshot` — per group (or parameter): effective learning rate α/(√v̂+ε), RMS of m̂
  and √v̂, signal-to-noise |m̂|/√v̂, update size, ε-dominated fraction, momentum agreement.
* :class:`Recorder` — sample it every N steps into CSV, TensorBoard or memory.
* :func:`plot_recording` — a picture of a Recorder's CSV (or rows) for your own model.
* :func:`state_formats` — the format of each parameter's state: "fp32", "bf16" or "8bit".
* :func:`unwrap` — the optimizer inside accelerate's or Lightning's wrapper.
"""

from .elementwise import unwrap
from .plot import plot_recording
from .recorder import Recorder
from .snapshot import QUANTITIES, flatten, snapshot, state_formats, summarize

__all__ = [
    "QUANTITIES",
    "Recorder",
    "flatten",
    "plot_recording",
    "snapshot",
    "state_formats",
    "summarize",
    "unwrap",
]
