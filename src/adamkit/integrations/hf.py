"""A Hugging Face ``transformers.Trainer`` callback that records the optimizer's diagnostics:
pass ``RecorderCallback(every=50, csv="diag.csv")`` in ``Trainer(..., callbacks=[...])``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..diagnostics import Recorder


class RecorderCallback(TrainerCallback):
    """Attach a :class:`~adamkit.diagnostics.Recorder` (same arguments) to the Trainer's
    optimizer when training begins, and close it when training ends. ``recorder`` holds it
    (its ``rows`` when neither ``csv`` nor ``tensorboard`` is given)."""

    def __init__(
        self,
        *,
        every: int = 1,
        csv: str | Path | None = None,
        tensorboard: str | Path | None = None,
        per_param: bool = False,
    ) -> None:
        self.options = {"every": every, "csv": csv, "tensorboard": tensorboard}
        self.options["per_param"] = per_param
        self.recorder: Recorder | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        optimizer = kwargs.get("optimizer")
        if optimizer is None:
            raise RuntimeError("RecorderCallback: the Trainer passed no optimizer")
        self.recorder = Recorder(optimizer, **self.options)  # unwraps AcceleratedOptimizer

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.recorder is not None:
            self.recorder.close()
