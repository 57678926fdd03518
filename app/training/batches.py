"""One step's batch on the host: images, flips, timesteps and labels from ``(seed, step)``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ddpm_core.app.training.protocol import HostBatch
from ddpm_core.app.training.seeding import batch_indices, flip_mask, label_drop_mask, timestep_draws
from ddpm_core.timesteps import sample_timesteps, uniform_weights

__all__ = ["grid_labels", "host_batch", "loss_weight_table"]


def loss_weight_table(schedule: Any, train: Any) -> np.ndarray | None:
    """Per-timestep weights (T,) float64 of the loss (``ddpm_core.loss_weights`` with
    ``train.weighting``, ``train.prediction`` and ``train.min_snr_gamma``), or None for
    the paper's unweighted L_simple."""
    weighting = getattr(train, "weighting", "none")
    if weighting == "none":
        return None
    from ddpm_core.losses import loss_weights

    t = np.arange(schedule.num_timesteps, dtype=np.int64)
    return np.asarray(loss_weights(schedule, t, np.zeros(t.shape, np.float64),
                                   weighting=weighting, prediction=train.prediction,
                                   min_snr_gamma=train.min_snr_gamma), np.float64)


def host_batch(data: np.ndarray, seed: int, step: int, train: Any, weights: np.ndarray | None,
               *, rank: int = 0, world_size: int = 1, labels: np.ndarray | None = None,
               num_classes: int = 0, label_dropout: float = 0.0,
               loss_weights: np.ndarray | None = None, gather: bool = True) -> HostBatch:
    """This process's images, timesteps, importance weights (and labels) of ``step``.

    ``data`` uint8 (N, H, W, C); ``weights`` p_t (T,) or None for uniform; ``labels``
    int64 (N,) in [0, K) or None, each replaced by the null label ``num_classes`` (K) with
    probability ``label_dropout`` (:func:`ddpm_core.app.training.seeding.label_drop_mask`);
    ``loss_weights`` (T,) from :func:`loss_weight_table` multiply the importance weights.
    ``gather=False`` leaves ``images`` None (the backend gathers ``indices`` and ``flips``
    from its own copy of ``data``). Depends only on ``(seed, step, rank, world_size)`` and the data.
    """
    B, T = train.batch_size, train.num_timesteps
    idx = batch_indices(seed, step, data.shape[0], B, rank=rank, world_size=world_size)
    flip = flip_mask(seed, step, B, rank=rank, world_size=world_size) if train.random_flip else None
    x = data[idx] if gather else None  # a fresh copy, flipped in place
    if gather and flip is not None:
        rows = np.flatnonzero(flip)  # 4x faster than np.where over the reversed view
        x[rows] = x[rows, :, ::-1]
    t, w = sample_timesteps(uniform_weights(T) if weights is None else weights,
                            timestep_draws(seed, step, B))
    if loss_weights is not None:
        w = np.asarray(w, np.float64) * loss_weights[t]
    per = B // world_size
    part = slice(rank * per, (rank + 1) * per)
    y = None
    if labels is not None:
        y = np.asarray(labels[idx], np.int64)
        if label_dropout > 0:
            drop = label_drop_mask(seed, step, B, label_dropout, rank=rank,
                                   world_size=world_size)
            y = np.where(drop, np.int64(num_classes), y)
    return HostBatch(x, np.asarray(t[part], np.int64), np.asarray(w[part], np.float32),
                     np.asarray(t, np.int64), y, np.asarray(idx, np.int64), flip)


def grid_labels(n: int, num_classes: int) -> np.ndarray:
    """The labels of a class-conditional run's EMA grid: ``0, 1, .., K-1, 0, 1, ..`` int64 (n,)."""
    return np.arange(n, dtype=np.int64) % num_classes
