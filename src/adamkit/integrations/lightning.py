"""A Lightning callback that records the optimizer's diagnostics: pass
``RecorderCallback(every=50, csv="diag.csv")`` in ``lightning.Trainer(callbacks=[...])``.
"""

from __future__ import annotations

from typing import Any

import lightning

from . import RecorderOptions


class RecorderCallback(RecorderOptions, lightning.Callback):
    """Attach a :class:`~adamkit.diagnostics.Recorder` (same arguments) to the module's first
    optimizer when fitting starts, and close it when fitting ends. ``recorder`` holds it (its
    ``rows`` when neither ``csv`` nor ``tensorboard`` is given)."""

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.optimizers:
            raise RuntimeError("RecorderCallback: configure_optimizers returned no optimizer")
        self._attach(trainer.optimizers[0])

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._detach()
