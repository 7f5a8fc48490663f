"""A fused low-memory CPU step's loop calls, kept to run again: each batch of tensors of one
cell (slot formats, param mode) with its address rows, run again with new gradients and the
group's scalars as they are then (:mod:`adamkit.optim._step_plan` decides when), one call per
batch, parallel over blocks where there is enough work."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..algorithms import AlgorithmSpec, GroupScalars
from ..algorithms.state_formats import BLOCK
from ._threads import SPLIT_MIN_ELEMENTS, Threads, chunk_tables
from .spec_kernels import hyper_key, loop_arrays, new_loop_arrays, plain_hyper_key, scalar_arrays


class Batch(NamedTuple):
    """The fused CPU kernel's tensors of one (slot formats, param mode): their positions in
    the call, element counts and address rows (:data:`_GRAD_COLUMN` their gradients')."""

    formats: tuple[int, ...]
    mode: int
    idx: list[int]
    numels: np.ndarray
    addresses: np.ndarray
    blocks: tuple[int, ...]  # per tensor


_GRAD_COLUMN = 1  # in an address row (_numba_formats.G)


class LowMemoryReplay(NamedTuple):
    """A fused low-memory CPU step's loop calls, to run again on the same tensors with new
    gradients (:mod:`adamkit.optim._step_plan` decides when)."""

    spec: AlgorithmSpec
    loops: tuple[Any, Any]
    batches: tuple[Batch, ...]

    def scalars(
        self, group: dict[str, Any], plain: tuple[Any, ...] | None = None
    ) -> tuple[Any, ...] | None:
        """The loops' scalar arrays for the group's hyperparameters as they are now.
        ``plain``: as :meth:`adamkit.kernels.spec_kernels.Replay.scalars`."""
        if plain is None:
            return loop_arrays(self.spec.name, torch.float32, hyper_key(self.spec, group))
        key = plain_hyper_key(self.spec, group, plain)
        return new_loop_arrays(self.spec.name, torch.float32, key)

    @staticmethod
    def arrays(scalars: tuple[Any, Any, Any]) -> tuple[Any, ...]:
        return scalar_arrays(GroupScalars(*scalars), torch.float32)

    def run(
        self, grads: Sequence[Tensor], arrays: tuple[Any, ...], read_grads: bool = True
    ) -> None:
        """Step with ``grads`` (checked by the caller) and :meth:`scalars`: each batch in one
        call, parallel over blocks where there is enough work."""
        serial, parallel = self.loops
        for formats, mode, idx, numels, addresses, blocks in self.batches:
            if read_grads:
                addresses[:, _GRAD_COLUMN] = [grads[i].data_ptr() for i in idx]
            tables = chunk_tables(blocks, torch.get_num_threads(), SPLIT_MIN_ELEMENTS // BLOCK, 1)
            args = (addresses, numels, *arrays)
            if len(tables.bounds) > 2 and Threads.usable:
                Threads.launch(
                    functools.partial(_launch_parallel, parallel, formats, mode),
                    functools.partial(_launch_serial, serial, formats, mode),
                    tables,
                    args,
                    work=int(numels.sum()),
                )
            else:
                serial(formats, mode, tables.chunks, *args, True)


def _launch_parallel(parallel, formats, mode, chunks, bounds, *args) -> None:
    parallel(formats, mode, chunks, bounds, *args)


def _launch_serial(serial, formats, mode, chunks, *args) -> None:
    serial(formats, mode, chunks, *args, True)
