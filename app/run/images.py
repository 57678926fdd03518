"""Images: model range to uint8, grids, and PNG / NPZ files (written atomically)."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_core.app.run.atomic import atomic_write_bytes

__all__ = ["image_grid", "save_npz", "save_png", "to_uint8"]


def to_uint8(x: Any) -> np.ndarray:
    """Map model-range images in [-1, 1] to uint8 {0..255}: round((x + 1) * 127.5), clipped.

    The inverse of ``ddpm_core.data.to_model_range`` on the 256 grid points.
    """
    a = np.asarray(x, dtype=np.float64)
    return np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, *, ncols: int | None = None, pad: int = 2,
               pad_value: int = 255) -> np.ndarray:
    """Tile uint8 images (N, H, W, C) into one (rows*(H+pad)+pad, cols*(W+pad)+pad, C) image.

    ``ncols`` defaults to ``ceil(sqrt(N))``; empty cells are ``pad_value``.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[0] == 0:
        raise ValueError("images must be a non-empty uint8 array of shape (N, H, W, C); got "
                         f"dtype {images.dtype} shape {images.shape}")
    n, h, w, c = images.shape
    cols = int(ncols) if ncols else math.ceil(math.sqrt(n))
    if cols < 1:
        raise ValueError(f"ncols must be >= 1; got {ncols!r}")
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), pad_value, np.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w] = images[k]
    return grid


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Save a uint8 (H, W, C) image with C in {1, 3, 4} (or (H, W)) as PNG, atomically."""
    from PIL import Image

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3
                                                          and img.shape[2] not in (1, 3, 4)):
        raise ValueError("image must be uint8 (H, W) or (H, W, C) with C in 1, 3, 4; got "
                         f"dtype {img.dtype} shape {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def save_npz(path: str | os.PathLike, **arrays: Iterable[Any]) -> Path:
    """Save arrays to an uncompressed ``.npz`` atomically."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
