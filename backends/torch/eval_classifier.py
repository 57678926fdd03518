"""The evaluation classifier of ``ddpm eval classify``, and user-supplied IS networks.

A small CNN trained on the clean training images of an embedded dataset (``mnist``,
``digits``), independent of any classifier used for guidance (a guiding classifier cannot
grade its own samples). It is trained deterministically on first use (fixed seed, one
intra-op thread, a fixed data order) and cached as
``<cache dir>/eval-classifier-<data>.safetensors`` with its held-out accuracy and its
recipe in the metadata; a file whose recipe differs is retrained.

Both networks see images as float32 (N, C, H, W) in [-1, 1] (the paper's scaling) and
return logits (N, K). :func:`sample_probabilities` turns a batch of uint8 samples into
float64 p(y | x) for :mod:`ddpm_core.app.evaluation.classify`.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ddpm_core.data import EMBEDDED, load_labeled_dataset, to_model_range
from ddpm_core.interop.convert import load_safetensors, save_safetensors

__all__ = ["EvalClassifier", "EvalNet", "Scorer", "cached_eval_classifier", "load_is_network",
           "logits_of", "sample_probabilities", "train_eval_classifier"]

SEED = 0
EPOCHS = 12
BATCH = 64
LR = 2e-3
SHIFT = 2  # pixels of random translation (zero padding) for 28x28 images; 1 for 8x8
RECIPE = f"cnn2x32-2x64-bn-128/adam{LR}/epochs{EPOCHS}/batch{BATCH}/seed{SEED}/v3"


def _block(channels: int, width: int) -> list[nn.Module]:
    return [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]


class EvalNet(nn.Module):
    """Two blocks of [conv3x3 - BatchNorm - ReLU] x 2 then maxpool2 (32, then 64 channels),
    dropout 0.3, linear(128) - ReLU - linear(K). Input (N, C, H, W) in [-1, 1], H and W
    divisible by 4; output logits (N, K)."""

    def __init__(self, channels: int, image_size: int, num_classes: int) -> None:
        super().__init__()
        side = image_size // 4
        self.features = nn.Sequential(
            *_block(channels, 32), *_block(32, 32), nn.MaxPool2d(2),
            *_block(32, 64), *_block(64, 64), nn.MaxPool2d(2), nn.Flatten())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(64 * side * side, 128), nn.ReLU(),
                                  nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class EvalClassifier(NamedTuple):
    """A trained evaluation classifier and what its cache file records."""

    net: EvalNet
    data: str
    heldout_accuracy: float
    path: Path


class Scorer(NamedTuple):
    """The network that grades samples: its logits function and a description."""

    net: Any  # a callable module: float32 (N, C, H, W) in [-1, 1] -> logits (N, K)
    name: str
    source: str  # the file that holds it, for error messages
    heldout_accuracy: float | None


@contextlib.contextmanager
def _one_thread_seeded(seed: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(old)


def _nchw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(to_model_range(images).transpose(0, 3, 1, 2)))


def _shift(x: torch.Tensor, rng: np.random.Generator, max_shift: int) -> torch.Tensor:
    """Translate each image by a random (dy, dx) in [-max_shift, max_shift], zero (-1) fill."""
    h, w = x.shape[-2:]
    padded = nn.functional.pad(x, (max_shift,) * 4, value=-1.0)
    offsets = rng.integers(0, 2 * max_shift + 1, size=(x.shape[0], 2))
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets)])


def logits_of(net: Any, images: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Logits of uint8 (N, H, W, C) images under ``net`` (eval mode, no grad), float64 (N, K)."""
    out = []
    with torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            out.append(net(_nchw(images[i:i + batch_size])).double().numpy())
    return np.concatenate(out)


def accuracy(net: Any, images: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``images`` whose argmax logit is ``labels``."""
    return float(np.mean(logits_of(net, images).argmax(axis=1) == labels))


def train_eval_classifier(images: np.ndarray, labels: np.ndarray, num_classes: int, *,
                          seed: int = SEED, epochs: int = EPOCHS) -> EvalNet:
    """Train :class:`EvalNet` with Adam and cross-entropy on clean uint8 (N, H, W, C) images.

    Deterministic: weights from ``torch.manual_seed(seed)`` (the global generator is
    restored afterwards), one intra-op thread (restored), the epoch orders and shifts from
    ``default_rng([seed, epoch])``.
    """
    x_all = _nchw(images)
    y_all = torch.from_numpy(np.asarray(labels, np.int64))
    max_shift = SHIFT if images.shape[1] >= 16 else 1
    with _one_thread_seeded(seed):
        net = EvalNet(images.shape[-1], images.shape[1], num_classes)
        opt = torch.optim.Adam(net.parameters(), lr=LR)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, epochs * -(-images.shape[0] // BATCH))
        net.train()
        for epoch in range(epochs):
            rng = np.random.default_rng([seed, epoch])
            order = torch.from_numpy(rng.permutation(images.shape[0]))
            for i in range(0, order.shape[0], BATCH):
                idx = order[i:i + BATCH]
                loss = nn.functional.cross_entropy(net(_shift(x_all[idx], rng, max_shift)),
                                                   y_all[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
    return net.eval()


def _cache_path(cache_dir: str | os.PathLike, data: str) -> Path:
    return Path(cache_dir) / f"eval-classifier-{data}.safetensors"


def _read_cache(path: Path, data: str, heldout: Any) -> EvalClassifier | None:
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="numpy") as f:
            meta = f.metadata() or {}
        if meta.get("recipe") != RECIPE or meta.get("data") != data:
            return None
        net = EvalNet(heldout.images.shape[-1], heldout.images.shape[1], heldout.num_classes)
        net.load_state_dict({k: torch.from_numpy(v) for k, v in load_safetensors(path).items()})
    except (OSError, ValueError, RuntimeError, KeyError):
        return None  # unreadable or another architecture: retrain and overwrite
    return EvalClassifier(net.eval(), data, float(meta["heldout_accuracy"]), path)


def cached_eval_classifier(data: str, cache_dir: str | os.PathLike) -> EvalClassifier:
    """The evaluation classifier of an embedded dataset, trained on first use and cached.

    Parameters
    ----------
    data : ``"mnist"`` or ``"digits"`` (the run's ``data``)
    cache_dir : folder of ``eval-classifier-<data>.safetensors`` (created if missing)

    Raises
    ------
    ValueError
        ``data`` is not an embedded dataset (bring a network with ``--is-network``).
    """
    if data not in EMBEDDED:
        raise ValueError(f"the built-in evaluation classifier knows the embedded datasets "
                         f"({', '.join(EMBEDDED)}); this run's data is {data!r}: give "
                         "--is-network PATH (a TorchScript network returning logits)")
    heldout = load_labeled_dataset(data, "heldout")
    path = _cache_path(cache_dir, data)
    if path.is_file():
        cached = _read_cache(path, data, heldout)
        if cached is not None:
            return cached
    train = load_labeled_dataset(data, "train")
    net = train_eval_classifier(train.images, train.labels, train.num_classes)
    acc = accuracy(net, heldout.images, heldout.labels)
    state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    save_safetensors(path, state, metadata={"recipe": RECIPE, "data": data,
                                            "heldout_accuracy": repr(acc),
                                            "heldout_n": str(heldout.images.shape[0])})
    return EvalClassifier(net, data, acc, path)


def load_is_network(path: str | os.PathLike) -> Any:
    """A TorchScript network (``torch.jit.load``) on the CPU, in eval mode.

    Raises FileNotFoundError or ValueError naming ``path`` if it is missing or not a
    TorchScript file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--is-network {path}: no such file (a TorchScript network "
                                "saved with torch.jit.save)")
    try:
        with warnings.catch_warnings():  # recent torch deprecates TorchScript; it still loads
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(os.fspath(path), map_location="cpu")
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"--is-network {path}: not a TorchScript network ({first})") from None
    return net.eval()


def _network_logits(scorer: Scorer, images: np.ndarray, batch_size: int) -> np.ndarray:
    n, h, w, c = images.shape
    try:
        logits = logits_of(scorer.net, images, batch_size=batch_size)
    except (RuntimeError, ValueError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{scorer.source}: the network failed on float32 images of shape "
                         f"(N, {c}, {h}, {w}) in [-1, 1] ({first})") from None
    if logits.ndim != 2 or logits.shape[0] != n or logits.shape[1] < 2:
        raise ValueError(f"{scorer.source}: the network must return logits of shape (N, K) "
                         f"with K >= 2 for N = {n} images; got shape {logits.shape}")
    if not np.all(np.isfinite(logits)):
        raise ValueError(f"{scorer.source}: the network returned non-finite logits")
    return logits


def scorer_for(data: str, *, cache_dir: str | os.PathLike,
               is_network: str | os.PathLike | None = None) -> Scorer:
    """The built-in classifier of ``data`` or the network in ``is_network``.

    A user network's held-out accuracy is measured when ``data`` has a labeled held-out
    split with as many classes as the network returns; otherwise it is None.
    """
    if is_network is None:
        clf = cached_eval_classifier(data, cache_dir)
        return Scorer(clf.net, f"built-in {data} evaluation classifier (small CNN)",
                      os.fspath(clf.path), clf.heldout_accuracy)
    scorer = Scorer(load_is_network(is_network), f"TorchScript network {is_network}",
                    f"--is-network {is_network}", None)
    try:
        held = load_labeled_dataset(data, "heldout")
    except (ValueError, FileNotFoundError):
        return scorer
    logits = _network_logits(scorer, held.images, 256)
    if logits.shape[1] != held.num_classes:
        return scorer
    return scorer._replace(heldout_accuracy=float(np.mean(logits.argmax(1) == held.labels)))


def sample_probabilities(scorer: Scorer, images: np.ndarray, *,
                         batch_size: int | None = None) -> np.ndarray:
    """p(y | x) of uint8 (N, H, W, C) samples under ``scorer``: float64 (N, K), softmax of
    the logits computed in float64."""
    logits = _network_logits(scorer, np.asarray(images), batch_size or 256)
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
