"""``Recorder``: sample :func:`snapshot` every N optimizer steps into CSV, TensorBoard or memory.

It attaches with the optimizer's step post-hook, so the training loop does not change, and
detaches on :meth:`Recorder.close` (or leaving its ``with`` block). An optimizer without a
recorder runs no diagnostics code at all.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any, TextIO

import torch

from .elementwise import algorithm_of, unwrap
from .snapshot import QUANTITIES, flatten, snapshot


class Recorder:
    """Record the optimizer's diagnostics every ``every`` steps.

    Args:
        optimizer: an adamkit (or torch.optim) Adam, AdamW, SGD or RMSprop.
        every: sample after every N-th call of ``optimizer.step()`` (N ≥ 1).
        csv: path of a CSV file to write, one row per sample and group (or parameter).
        tensorboard: a log directory for ``torch.utils.tensorboard`` (needs ``tensorboard``).
        per_param: one row per parameter instead of per param group (with its
            ``state_format``: "fp32", "bf16" or "8bit").
        max_elements: see :func:`adamkit.diagnostics.snapshot`.

    With neither ``csv`` nor ``tensorboard``, rows are kept in :attr:`rows`.

    Example:
        >>> import torch, adamkit
        >>> from adamkit.diagnostics import Recorder
        >>> w = torch.nn.Parameter(torch.zeros(3))
        >>> opt = adamkit.Adam([w], lr=0.1)
        >>> with Recorder(opt, every=2) as rec:
        ...     for _ in range(4):
        ...         w.grad = torch.tensor([1.0, -2.0, 0.5])
        ...         opt.step()
        >>> [row["step"] for row in rec.rows], round(rec.rows[-1]["effective_lr.max"], 3)
        ([2, 4], 0.2)
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        every: int = 1,
        csv: str | Path | None = None,
        tensorboard: str | Path | None = None,
        per_param: bool = False,
        max_elements: int = 1 << 16,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"Invalid every: {every!r}; expected a whole number >= 1")
        optimizer = unwrap(optimizer)  # accelerate's/Lightning's wrappers: the one inside
        self.optimizer = optimizer
        self.algorithm = algorithm_of(optimizer)
        self.every = every
        self.per_param = per_param
        self.max_elements = max_elements
        # Per parameter, the format of its state ("fp32", "bf16", "8bit") too.
        formats = ["state_format"] if per_param else []
        self.columns = ["call", "label", "step", *formats, *QUANTITIES[self.algorithm]]
        self.rows: list[dict[str, Any]] = []
        self._keep_rows = csv is None and tensorboard is None
        self._csv_file: TextIO | None = None
        self._csv: Any = None
        self._writer: Any = None
        if csv is not None:
            self._csv_file = open(csv, "w", newline="")
            self._csv = _csv_writer(self._csv_file, self.columns)
        if tensorboard is not None:
            self._writer = _summary_writer(tensorboard)
        self._calls = 0
        # Eager under torch.compile(opt.step): a snapshot reads state on the host (numba,
        # NumPy), which Dynamo cannot trace (the compiled step failed inside it). torch.optim's
        # constructor has imported torch._dynamo already, so this costs no import.
        self._handle = optimizer.register_step_post_hook(torch.compiler.disable(self._after_step))

    def _after_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self._calls += 1
        if self._calls % self.every:
            return
        self.record()

    def record(self) -> list[dict[str, Any]]:
        """Take one sample now and write it; returns its rows."""
        summaries = snapshot(
            self.optimizer, per_param=self.per_param, max_elements=self.max_elements
        )
        labelled = (
            summaries.items()
            if self.per_param
            else ((f"group{i}", s) for i, s in enumerate(summaries))
        )
        rows = []
        for label, summary in labelled:
            if not summary:
                continue
            row = {"call": self._calls, "label": label, **flatten(summary)}
            if row["step"] is None:  # torch.optim.SGD keeps no step count: the calls seen
                row["step"] = self._calls
            rows.append(row)
            if self._csv is not None:
                self._csv.writerow(row)
            if self._writer is not None:
                for key, value in row.items():
                    if key not in ("call", "label", "step", "state_format"):
                        self._writer.add_scalar(f"{label}/{key}", value, row["step"] or self._calls)
        if self._keep_rows:
            self.rows.extend(rows)
        return rows

    def close(self) -> None:
        """Detach from the optimizer and close the files."""
        self._handle.remove()
        if self._csv_file is not None:
            self._csv_file.close()
            self._csv_file = self._csv = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _csv_writer(file: TextIO, columns: list[str]) -> Any:
    writer = csv.DictWriter(file, fieldnames=columns, restval="")
    writer.writeheader()
    return writer


def _summary_writer(logdir: str | Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:  # torch raises this when the tensorboard package is missing
        raise ImportError(
            "Recorder(tensorboard=...) needs the tensorboard package: pip install tensorboard"
        ) from error
    return SummaryWriter(log_dir=str(logdir))
