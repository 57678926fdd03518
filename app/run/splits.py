"""The images of a run's data that evaluation and interpolation read: its held-out split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ddpm_core.checks import check_int

__all__ = ["heldout_images", "interpolation_sources"]


def heldout_images(info: Mapping[str, Any], n: int) -> np.ndarray:
    """The first ``n`` images of the run's held-out split, uint8 (n, H, W, C).

    Raises ValueError if the split has fewer than ``n`` images or the run's data has no
    held-out split.
    """
    from ddpm_core.data import load_dataset

    n = check_int("n", n, 1)
    held = load_dataset(info["data"], "heldout")
    if held.shape[0] < n:
        raise ValueError(f"n must be at most {held.shape[0]} (the held-out images of "
                         f"{info['data']!r}); got n={n}")
    return held[:n]


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
