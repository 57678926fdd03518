"""Sampler chains (which respaced schedule a sampler runs on) and interpolation sources."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ddpm_core.schedules import Schedule

__all__ = ["SAMPLERS", "chain_schedule", "interpolation_sources"]

SAMPLERS = ("ddpm", "ddim")


def chain_schedule(schedule: Schedule, sampler: str, steps: int | None) -> Schedule:
    """The (respaced) schedule a sampler runs on.

    ``ddpm``: the full chain, or ``steps`` evenly spaced steps (improved DDPM respacing);
    ``ddim``: ``steps`` steps (default ``min(50, T)``) with DDIM's stride (``"ddim{steps}"``).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}; got {sampler!r}")
    T = schedule.num_timesteps
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or not 1 <= steps <= T):
        raise ValueError(f"steps must be an integer in [1, {T}]; got {steps!r}")
    if sampler == "ddim":
        return schedule.respace(f"ddim{steps or min(50, T)}")
    if steps is None or steps == T:
        return schedule
    return schedule.respace(str(steps))


def interpolation_sources(info: dict[str, Any], pair: Sequence[int]) -> np.ndarray:
    """The two source images, uint8 (2, H, W, C): ``pair`` indexes the run's held-out split.

    Datasets without a held-out split (folders, .npz) use their training images.
    """
    from ddpm_core.data import load_dataset

    try:
        images = load_dataset(info["data"], "heldout")
    except ValueError:
        images = load_dataset(info["data"], "train")
    i, j = (int(k) for k in pair)
    for k in (i, j):
        if not 0 <= k < images.shape[0]:
            raise ValueError(f"pair indices must be in [0, {images.shape[0]}); got {tuple(pair)}")
    return images[[i, j]]
