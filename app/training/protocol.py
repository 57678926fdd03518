"""What the shared training loop (``ddpm_core.app.training.trainer``) and its parts exchange.

:class:`TrainBackend` is what a framework supplies (``ddpm_core.backends.{torch,jax}``);
:class:`RunTask` is what is trained (``ddpm_core.app.training.tasks.DiffusionTask``,
``ddpm_core.app.training.classifier_train.ClassifierTask``); :class:`HostBatch` is one step's batch
on the host, :class:`TrainData` the training split, :class:`InitWeights` the weights of
``--init``; :func:`lr_at` is the warm-up schedule both backends apply.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ddpm_core.app.run.options import TrainOptions
from ddpm_core.app.run.rundir import RunPaths

__all__ = ["HostBatch", "InitWeights", "NonFiniteLossError", "RunTask", "TrainBackend",
           "TrainData", "lr_at", "warmup_lr"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class HostBatch:
    """One process's share of a step's batch, on the host.

    ``images`` uint8 (b, H, W, C) in 0..255; ``t`` int64 (b,) 0-based steps; ``weights``
    float32 (b,) the loss weights: importance weights 1 / (T p_t), times the per-timestep
    weights of a weighted L_simple (min-SNR); ``t_global`` int64 (B,) the whole batch's
    steps (for the timestep sampler); ``labels`` int64 (b,) the images' classes in [0, K]
    (K, the null label, where the label was dropped), or None for a run without labels.
    ``b = B / world_size``. ``indices`` int64 (b,) the images' rows in the training set and
    ``flips`` bool (b,) their horizontal flips (None without ``random_flip``): for a backend
    that holds the training set on its device (``TrainBackend.hold_data``), ``images`` is
    None and it gathers ``indices`` and flips there.
    """

    images: np.ndarray | None
    t: np.ndarray
    weights: np.ndarray
    t_global: np.ndarray
    labels: np.ndarray | None = None
    indices: np.ndarray | None = None
    flips: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class TrainData:
    """The training split: ``images`` uint8 (N, H, W, C), ``labels`` int64 (N,) in [0, K)
    (None without labels) and the K ``class_names``."""

    images: np.ndarray
    labels: np.ndarray | None = None
    class_names: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        """K (0 without labels)."""
        return len(self.class_names)

    def classes(self) -> dict[str, Any]:
        """The ``classes`` entry of run.json: ``{"num_classes": K, "names": [...]}``."""
        return {"num_classes": self.num_classes, "names": list(self.class_names)}


@dataclasses.dataclass(frozen=True)
class InitWeights:
    """Weights that start a new run (``--init``): canonical PyTorch ``state_dict`` naming,
    NumPy arrays, for the raw model and its EMA."""

    model: dict[str, np.ndarray]
    ema: dict[str, np.ndarray]


class TrainBackend(Protocol):
    """What a framework supplies to :func:`train`.

    ``rank`` / ``world_size``: this process's data slice among the processes that feed
    data; ``shards``: how many parts the global batch is split into (processes or
    devices), which must divide it; ``main``: whether this process writes files.
    Optional: ``hold_data(images) -> bool``, called once with the training set uint8
    (N, H, W, C) before the first step; True when the backend keeps it on its device, and
    its batches then carry indices and flips instead of images (``HostBatch``).
    ``terms``: the names of the loss's parts its :meth:`read_metrics` returns, which
    become log.csv columns (``ddpm_core.app.training.logs.TERM_FIELDS`` for a diffusion
    run trained with the bound, else empty).
    """

    name: str
    rank: int
    world_size: int
    shards: int
    main: bool
    terms: tuple[str, ...]

    def state_path(self, run_dir: str | Path) -> Path:
        """The backend's checkpoint file in ``run_dir``."""

    def start(self, run_dir: str | Path | None, init: InitWeights | None = None
              ) -> tuple[int, dict[str, np.ndarray]]:
        """Build fresh state (weights and EMA from ``init`` if given), or restore
        ``run_dir``'s checkpoint: ``(step, arrays)``."""

    def train_step(self, step: int, batch: HostBatch) -> Any:
        """One optimizer step; returns a handle on its metrics (left on the device)."""

    def read_metrics(self, handles: list[Any]
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Global ``(loss, grad_norm, parts)`` of ``n`` steps, each float64 (n,), in one
        device sync (every process calls it); ``parts`` maps each name of ``terms`` to the
        loss part of each step."""

    def global_losses(self, handle: Any) -> np.ndarray:
        """The whole batch's per-sample losses (B,) of one step, on the host."""

    def save(self, run_dir: str | Path, step: int, arrays: dict[str, np.ndarray]) -> None:
        """Write the weights, EMA weights and the state of ``step`` (main process only)."""

    def sample_grid(self, n: int, seed: int) -> np.ndarray:
        """``n`` EMA samples, uint8 (n, H, W, C) (only for a task with ``grids``)."""

    def summary(self) -> dict[str, Any]:
        """``{"device": str, "world_size": int}`` for the summary."""

    def finish(self, ok: bool = True) -> None:
        """Leave the process group (if one was joined); if ``ok``, wait for every process
        first (after an error the others may never arrive)."""


def warmup_lr(lr: float, warmup_steps: int, step: Any, minimum: Callable[[Any, Any], Any] = min) -> Any:
    """Linear warm-up from 0 to ``lr`` over ``warmup_steps`` steps, then constant:
    ``lr * min(1, (step + 1) / warmup_steps)`` at the 0-based ``step`` (the first update uses
    ``lr / warmup_steps``); ``lr`` when ``warmup_steps <= 0``. ``minimum`` is ``min`` for
    Python numbers and ``jnp.minimum`` inside JAX's traced optimizer schedule."""
    if warmup_steps <= 0:
        return lr
    return lr * minimum(1.0, (step + 1) / warmup_steps)


def lr_at(train: Any, step: int) -> float:
    """The learning rate of update ``step`` (0-based) of a ``TrainConfig``: :func:`warmup_lr`."""
    return float(warmup_lr(float(train.lr), int(train.warmup_steps), step))


class RunTask(Protocol):
    """What the loop trains: the data, the configs and the run directory's files.

    ``labels``: whether batches carry the data's labels; ``grids``: whether EMA sample
    grids are written.
    """

    grids: bool

    def complete(self, options: TrainOptions) -> TrainOptions:
        """Unset options: the stored ones of a resumed run, else the defaults."""

    def load_data(self, options: TrainOptions) -> TrainData:
        """The training split."""

    def configs(self, options: TrainOptions, data: TrainData) -> tuple[Any, Any]:
        """``(model config, TrainConfig)`` the backend builds from (checked against data)."""

    def label_dropout(self, options: TrainOptions) -> float | None:
        """None: batches carry no labels; else the probability a label is dropped."""

    def read_info(self, run_dir: str | Path) -> dict[str, Any]:
        """The run's validated run.json."""

    def check_resume(self, options: TrainOptions, info: dict[str, Any], model: Any) -> None:
        """Refuse to resume a run whose model differs from ``model``."""

    def write_info(self, options: TrainOptions, model: Any, train: Any, data: TrainData,
                   step: int, **extra: Any) -> None:
        """Write run.json (``extra``: ``files``, ``pending``)."""

    def weight_paths(self, paths: RunPaths) -> list[Path]:
        """The weight files ``backend.save`` writes besides the state (hashed in run.json)."""

    def report(self, options: TrainOptions, backend: Any, data: TrainData) -> dict[str, Any]:
        """Extra entries of the summary, after the last step."""
