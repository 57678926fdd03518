"""Integrity of a run's files: sha256 of each weight and state file, finite weights and samples.

The training loop records ``files`` (name -> sha256) in run.json after every checkpoint;
just before one it records ``pending`` (the step being written), so a crash inside the
write leaves a run.json that says which files may be the old or the new ones. Readers call
:func:`verify_file` (a mismatch is an error, except while a checkpoint is pending) and
:func:`check_finite`. A run.json without ``files`` (format 1) is read without the check.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["check_finite", "check_finite_samples", "check_state_step", "file_hashes",
           "file_sha256", "verify_file"]


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(paths: Iterable[Path]) -> dict[str, str]:
    """``{file name: sha256}`` of the files that exist."""
    return {p.name: file_sha256(p) for p in paths if p.is_file()}


def verify_file(info: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Check ``path`` against the sha256 run.json (``info``) records for it.

    Raises
    ------
    ValueError
        Naming the file if its content changed since run.json was written. No check when
        run.json records no hash for it (format 1) or a checkpoint write is pending.
    """
    path = Path(path)
    want = info.get("files", {}).get(path.name)
    if want is None or "pending" in info or not path.is_file():
        return
    got = file_sha256(path)
    if got != want:
        raise ValueError(f"{path}: changed since run.json was written (sha256 {got[:12]}..., "
                         f"run.json records {want[:12]}...); it is not this run's file at "
                         f"step {info['step']}")


def check_state_step(info: Mapping[str, Any], step: int, path: str | os.PathLike) -> None:
    """A resumed state's step must be run.json's (or the pending checkpoint's)."""
    allowed = {int(info["step"])}
    if "pending" in info:
        allowed.add(int(info["pending"]["step"]))
    if step not in allowed:
        raise ValueError(f"{path}: the state is at step {step} but run.json records step "
                         f"{info['step']}; it is not this run's checkpoint")


def check_finite(path: str | os.PathLike, tensors: Mapping[str, Any]) -> None:
    """Every tensor of a weight file is finite; else an error naming the file and tensor."""
    for name, value in tensors.items():
        a = np.asarray(value)
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise ValueError(f"{path}: tensor {name!r} has {bad} non-finite values (NaN or "
                             "inf); the weights are unusable")


def check_finite_samples(x: Any) -> None:
    """A sample batch (float, model range) must be finite."""
    a = np.asarray(x)
    if not np.isfinite(a).all():
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        raise FloatingPointError(f"sampling produced {bad} non-finite values (NaN or inf) in "
                                 f"a batch of shape {a.shape}; the model's weights or the "
                                 "chain are broken")
