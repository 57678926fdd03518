"""The CIFAR-10 python archive (``cifar-10-python.tar.gz``), read without trusting it.

The archive holds pickled dicts under ``cifar-10-batches-py/``: ``data_batch_1`` ..
``data_batch_5`` (train) and ``test_batch`` (held out), each with ``data``, uint8 of shape
(10000, 3072) (1024 red, 1024 green, 1024 blue values per image, rows of 32), and
``labels``, 10,000 ints in [0, 10); and ``batches.meta`` with the 10 ``label_names``.

Nothing is allocated from a size the archive declares:

1. a member's size in its tar header is checked against the size its content must have
   before it is read (a few compressed bytes can otherwise expand to gigabytes), and a
   member shorter than its header says is an error;
2. the pickles are read by an unpickler that builds only dicts, lists, strings, numbers and
   *records* of NumPy arrays (declared dtype, shape and raw bytes; ``find_class`` refuses
   every other global). A record becomes an array, a view of its raw bytes, only when those
   bytes are exactly the declared shape times the item size; so an array can never be
   larger than the member that holds it.

Every error names the archive and the member and says what was expected.
"""

from __future__ import annotations

import codecs
import io
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CLASSES", "IMAGES_PER_BATCH", "IMAGE_BYTES", "read_cifar10"]

IMAGES_PER_BATCH = 10_000
IMAGE_BYTES = 3 * 32 * 32
CLASSES = 10
META = "batches.meta"
BATCHES = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "heldout": ("test_batch",),
    "all": tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",),
}
_SLACK = 64 * 1024  # dict keys, batch_label, pickle framing
_PER_IMAGE_EXTRA = 256  # its label and file name
_META_MAX_BYTES = 64 * 1024
_INT_CODES = ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8")
_BYTE_ORDERS = ("<", ">", "=", "|")


def read_cifar10(path: str | Path, split: str, *, images_per_batch: int = IMAGES_PER_BATCH
                 ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images, labels and class names of one split of the archive at ``path``.

    Parameters
    ----------
    path : str or Path
        ``cifar-10-python.tar.gz`` (or an uncompressed ``.tar`` of the same members).
    split : {"train", "heldout", "all"}
        ``data_batch_1..5``, ``test_batch``, or both in that order.
    images_per_batch : int
        10,000 in the official archive; every batch must hold exactly this many.

    Returns
    -------
    images : ndarray of uint8, shape (N, 32, 32, 3), C-contiguous
    labels : ndarray of int64, shape (N,), in [0, 10)
    class_names : tuple of 10 str (``batches.meta``'s ``label_names``)
    """
    path = Path(path)
    payloads = _read_members(path, BATCHES[split] + (META,), images_per_batch)
    class_names = _class_names(_unpickle(payloads[META], path, META), path)
    images, labels = [], []
    for name in BATCHES[split]:
        batch = _unpickle(payloads.pop(name), path, name)
        images.append(_batch_images(batch, path, name, images_per_batch))
        labels.append(_batch_labels(batch, path, name, images_per_batch))
    return (np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels), class_names)


# --------------------------------------------------------------------------- the archive

def _size_range(name: str, images_per_batch: int) -> tuple[int, int]:
    """Smallest and largest byte size member ``name`` can have.

    A batch holds its raw image bytes, at most doubled (protocol-2 pickles written by
    Python 3 store bytes as UTF-8 text), plus a label and a file name per image.
    """
    if name == META:
        return 1, _META_MAX_BYTES
    raw = images_per_batch * IMAGE_BYTES
    return raw, 2 * raw + images_per_batch * _PER_IMAGE_EXTRA + _SLACK


def _read_members(path: Path, wanted: tuple[str, ...], images_per_batch: int
                  ) -> dict[str, bytes]:
    """The bytes of each wanted member (matched by file name), read in one pass."""
    found: dict[str, bytes] = {}
    current = "the archive"
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                name = Path(member.name).name
                if name not in wanted or name in found:
                    continue
                current = name
                found[name] = _member_bytes(tar, member, path, images_per_batch)
                current = "the archive"
                if len(found) == len(wanted):
                    break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: {current}: unreadable ({e}); expected the official "
                         "cifar-10-python.tar.gz") from e
    missing = [n for n in wanted if n not in found]
    if missing:
        raise ValueError(f"{path}: not a CIFAR-10 python archive (missing "
                         f"{', '.join(missing)}); expected cifar-10-batches-py/"
                         f"{{{', '.join(wanted)}}}")
    return found


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path,
                  images_per_batch: int) -> bytes:
    name = Path(member.name).name
    if not member.isfile():
        raise ValueError(f"{path}: {name} is not a regular file in the archive")
    low, high = _size_range(name, images_per_batch)
    if not low <= member.size <= high:
        raise ValueError(f"{path}: {name} declares {member.size:,} bytes; a CIFAR-10 "
                         f"{'meta file' if name == META else 'batch'} has "
                         f"{low:,} to {high:,}")
    f = tar.extractfile(member)
    payload = f.read() if f is not None else b""
    if len(payload) != member.size:
        raise ValueError(f"{path}: {name} holds {len(payload):,} of the {member.size:,} "
                         "bytes its header declares (truncated archive)")
    return payload


# --------------------------------------------------------------------------- the pickles

class _Record:
    """What a pickle's BUILD opcode passes, kept instead of applied."""

    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ArrayRecord(_Record):
    """A pickled ndarray: its state (version, shape, dtype, fortran, raw bytes)."""


class _DtypeRecord(_Record):
    """A pickled ``numpy.dtype(code, align, copy)``; only plain integer codes are built."""

    def __init__(self, code: Any, align: Any = False, copy: Any = True) -> None:
        self.code = code.decode("ascii", "replace") if isinstance(code, bytes) else code


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _ArrayRecord:
    # ndarray.__reduce__ always writes an empty (0,) array here and the real shape in the
    # state; any other shape would make NumPy allocate it before the state is seen
    if subtype is not np.ndarray or shape != (0,):
        raise pickle.UnpicklingError(f"refusing an array reconstructed as {shape!r}")
    return _ArrayRecord()


def _latin1(text: Any, encoding: Any = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode(..., {encoding!r})")
    return codecs.encode(text, "latin1")


class _RecordingUnpickler(pickle.Unpickler):
    """Builds dicts, lists, str, bytes and numbers; NumPy arrays only as records."""

    _allowed: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _DtypeRecord,
        ("_codecs", "encode"): _latin1,  # bytes in protocol-2 pickles from Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _unpickle(payload: bytes, path: Path, name: str) -> dict[Any, Any]:
    try:
        obj = _RecordingUnpickler(io.BytesIO(payload), encoding="bytes").load()
    except (pickle.UnpicklingError, TypeError, ValueError, EOFError, KeyError, AttributeError,
            IndexError) as e:
        raise ValueError(f"{path}: {name} is not a CIFAR-10 pickle ({e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: {name} is not a CIFAR-10 pickle (a {type(obj).__name__}, "
                         "expected a dict)")
    return obj


def _entry(d: dict[Any, Any], key: str, path: Path, name: str) -> Any:
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise ValueError(f"{path}: {name} has no {key!r} entry")


def _dtype(record: Any, what: str) -> np.dtype:
    if not isinstance(record, _DtypeRecord) or record.code not in _INT_CODES:
        raise ValueError(f"{what} has dtype {getattr(record, 'code', record)!r}; expected one of "
                         f"{_INT_CODES}")
    state = record.state
    order = state[1] if isinstance(state, tuple) and len(state) > 1 else "|"
    order = order.decode("ascii", "replace") if isinstance(order, bytes) else order
    if order not in _BYTE_ORDERS:
        raise ValueError(f"{what} has byte order {order!r}; expected one of {_BYTE_ORDERS}")
    return np.dtype(order + record.code if order != "|" else record.code)


def _array(record: Any, what: str) -> np.ndarray:
    """The array a record declares, a view of its raw bytes; sizes checked first."""
    state = record.state if isinstance(record, _ArrayRecord) else None
    if not (isinstance(state, tuple) and len(state) == 5):
        raise ValueError(f"{what} is not a NumPy array")
    _, shape, dtype_record, fortran, raw = state
    dtype = _dtype(dtype_record, what)
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)):
        raise ValueError(f"{what} has shape {shape!r}; expected a tuple of sizes")
    if not isinstance(raw, bytes):
        raise ValueError(f"{what} has no raw bytes")
    declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if declared != len(raw):
        raise ValueError(f"{what} declares shape {shape} of {dtype} ({declared:,} bytes) but "
                         f"holds {len(raw):,} bytes")
    return np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran else "C")


def _batch_images(batch: dict[Any, Any], path: Path, name: str, n: int) -> np.ndarray:
    what = f"{path}: {name}: data"
    data = _array(_entry(batch, "data", path, name), what)
    if data.dtype != np.uint8 or data.shape != (n, IMAGE_BYTES):
        raise ValueError(f"{what} is {data.dtype} of shape {data.shape}; expected uint8 of "
                         f"shape ({n}, {IMAGE_BYTES})")
    return data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1)


def _batch_labels(batch: dict[Any, Any], path: Path, name: str, n: int) -> np.ndarray:
    what = f"{path}: {name}: labels"
    raw = _entry(batch, "labels", path, name)
    if isinstance(raw, _ArrayRecord):
        labels = _array(raw, what)
    elif isinstance(raw, (list, tuple)) and all(type(v) is int for v in raw):
        labels = np.array(raw, dtype=object)
    else:
        raise ValueError(f"{what} must be a list of ints or an integer array")
    if labels.shape != (n,):
        raise ValueError(f"{what} has shape {labels.shape}; expected ({n},), one per image")
    if not (0 <= labels.min() and labels.max() < CLASSES):
        raise ValueError(f"{what} run from {labels.min()} to {labels.max()}; expected "
                         f"0..{CLASSES - 1}")
    return labels.astype(np.int64)


def _class_names(meta: dict[Any, Any], path: Path) -> tuple[str, ...]:
    names = _entry(meta, "label_names", path, META)
    if not (isinstance(names, (list, tuple)) and len(names) == CLASSES
            and all(isinstance(s, (bytes, str)) and s for s in names)):
        raise ValueError(f"{path}: {META}: label_names must be {CLASSES} non-empty strings")
    decoded = tuple(s.decode("utf-8", "replace") if isinstance(s, bytes) else s for s in names)
    if len(set(decoded)) != CLASSES:
        raise ValueError(f"{path}: {META}: label_names repeat a name: {decoded}")
    return decoded
