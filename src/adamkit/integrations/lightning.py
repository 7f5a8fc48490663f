"""A Lightning callback that records the optimizer's diagnostics: pass
``RecorderCallback(every=50, csv="diag.csv")`` in ``lightning.Trainer(callbacks=[...])``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning

from ..diagnostics import Recorder


class RecorderCallback(lightning.Callback):
    """Attach a :class:`~adamkit.diagnostics.Recorder` (same arguments) to the module's first
    optimizer when fitting starts, and close it when fitting ends. ``recorder`` holds it (its
    ``rows`` when neither ``csv`` nor ``tensorboard`` is given)."""

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

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.optimizers:
            raise RuntimeError("RecorderCallback: configure_optimizers returned no optimizer")
        self.recorder = Recorder(trainer.optimizers[0], **self.options)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.recorder is not None:
            self.recorder.close()
