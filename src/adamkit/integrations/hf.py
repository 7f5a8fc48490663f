"""A Hugging Face ``transformers.Trainer`` callback that records the optimizer's diagnostics:
pass ``RecorderCallback(every=50, csv="diag.csv")`` in ``Trainer(..., callbacks=[...])``.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from . import RecorderOptions


class RecorderCallback(RecorderOptions, TrainerCallback):
    """Attach a :class:`~adamkit.diagnostics.Recorder` (same arguments) to the Trainer's
    optimizer when training begins, and close it when training ends. ``recorder`` holds it
    (its ``rows`` when neither ``csv`` nor ``tensorboard`` is given)."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        optimizer = kwargs.get("optimizer")
        if optimizer is None:
            raise RuntimeError("RecorderCallback: the Trainer passed no optimizer")
        self._attach(optimizer)  # unwraps AcceleratedOptimizer

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._detach()
