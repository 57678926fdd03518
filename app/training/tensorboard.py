"""TensorBoard event files of a run (``ddpm train --tensorboard``), written by the loop.

The loop (:mod:`ddpm_core.app.training.trainer`) hands every log row and every EMA sample
grid to a :class:`Board`; with ``tensorboard`` off (or on a process other than the main
one) it gets a :class:`NullBoard` that does nothing. The writer is ``tensorboardX``'s
``SummaryWriter``, which needs no PyTorch, so a JAX-only install writes the same files
(the ``tensorboard`` extra: ``pip install "ddpm-core[tensorboard]"``).

Files go to ``RUN/tensorboard/``: one ``events.out.tfevents.<time>.<host>.step-<S>.<ns>``
per session, where ``S`` is the step it started from and ``ns`` the nanoseconds of its
start within the second ``<time>``. Tags: ``train/<column>`` for each
number of the log row (``loss``, ``grad_norm``, ``lr``, ``images_per_s``, and any further
column the loop logs), at the row's step; ``samples`` for each grid, at its step.

A resumed run opens its file with ``purge_step = S + 1``: TensorBoard drops the events of
earlier files at steps after the checkpoint (those an interrupted session wrote past it,
which ``log.csv`` drops too), so the curves continue without duplicate steps. TensorBoard
reads the files in name order; the step and the nanoseconds order (and keep apart) two
sessions that start within the same second.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["EXTRA", "TB_DIR", "Board", "NullBoard", "TensorBoardUnavailable", "open_board",
           "require_tensorboard"]

EXTRA = 'pip install "ddpm-core[tensorboard]"'
TB_DIR = "tensorboard"  # under the run directory
_NOT_SCALARS = ("step", "seconds")  # log columns that are not curves


class TensorBoardUnavailable(ImportError):
    """``tensorboard`` was asked for and tensorboardX is not installed."""


def require_tensorboard() -> Any:
    """``tensorboardX.SummaryWriter``.

    Raises
    ------
    TensorBoardUnavailable
        tensorboardX is not installed (the message names the ``tensorboard`` extra).
    """
    try:
        from tensorboardX import SummaryWriter
    except ImportError as e:
        raise TensorBoardUnavailable(f"--tensorboard needs tensorboardX ({e}): {EXTRA}") from e
    return SummaryWriter


class NullBoard:
    """What the loop writes to without ``--tensorboard``: nothing."""

    def scalars(self, row: Mapping[str, Any]) -> None:
        """Ignore a log row."""

    def image(self, step: int, grid: np.ndarray) -> None:
        """Ignore a sample grid."""

    def close(self) -> None:
        """Nothing to close."""


class Board(NullBoard):
    """The event file of one training session (see the module's docstring).

    Parameters
    ----------
    run_dir : path
        The run directory; events go to ``run_dir/tensorboard``.
    start_step : int
        The step this session starts from (0, or the checkpoint's step on resume).
    """

    def __init__(self, run_dir: str | os.PathLike, start_step: int) -> None:
        writer = require_tensorboard()
        self.logdir = Path(run_dir) / TB_DIR
        suffix = f".step-{int(start_step):010d}.{time.time_ns() % 1_000_000_000:09d}"
        self._w = writer(str(self.logdir), purge_step=int(start_step) + 1, flush_secs=30,
                         filename_suffix=suffix)

    def scalars(self, row: Mapping[str, Any]) -> None:
        """Each number of a log row as ``train/<column>`` at ``row["step"]``; flushed."""
        step = int(row["step"])
        for key, value in row.items():
            if key not in _NOT_SCALARS and isinstance(value, (int, float)):
                self._w.add_scalar(f"train/{key}", float(value), step)
        self._w.flush()

    def image(self, step: int, grid: np.ndarray) -> None:
        """A uint8 (H, W, C) sample grid as the image ``samples`` at ``step``; flushed."""
        self._w.add_image("samples", np.asarray(grid), int(step), dataformats="HWC")
        self._w.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._w.close()


def open_board(run_dir: str | os.PathLike, start_step: int, *, enabled: bool) -> NullBoard:
    """A :class:`Board` for ``run_dir`` if ``enabled``, else a :class:`NullBoard`.

    Raises
    ------
    TensorBoardUnavailable
        ``enabled`` and tensorboardX is not installed (the message names the extra).
    """
    return Board(run_dir, start_step) if enabled else NullBoard()
