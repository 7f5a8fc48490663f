"""Callbacks that attach a :class:`~adamkit.diagnostics.Recorder` to training stacks.

Each module imports its stack when imported (``adamkit.integrations.hf`` needs transformers,
``adamkit.integrations.lightning`` needs lightning); ``import adamkit`` imports neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class RecorderOptions:
    """What both callbacks take: a :class:`~adamkit.diagnostics.Recorder`'s options, and the
    recorder once training has begun."""

    def __init__(
        self,
        *,
        every: int = 1,
        csv: str | Path | None = None,
        tensorboard: str | Path | None = None,
        per_param: bool = False,
    ) -> None:
        self.options: dict[str, Any] = {
            "every": every,
            "csv": csv,
            "tensorboard": tensorboard,
            "per_param": per_param,
        }
        self.recorder: Any = None

    def _attach(self, optimizer: Any) -> None:
        from ..diagnostics import Recorder

        self.recorder = Recorder(optimizer, **self.options)  # unwraps wrapped optimizers

    def _detach(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
