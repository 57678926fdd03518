"""Compare run directories written by several processes with one process's (NumPy only)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from safetensors import numpy as safetensors_numpy


def losses(run: Path) -> np.ndarray:
    """The logged losses of a run, float64 (rows of log.csv)."""
    with open(run / "log.csv", newline="") as f:
        return np.array([float(r["loss"]) for r in csv.DictReader(f)])


def weights(run: Path, name: str = "model") -> dict[str, np.ndarray]:
    """``RUN/<name>.safetensors`` as NumPy arrays."""
    return safetensors_numpy.load_file(str(run / f"{name}.safetensors"))


def step(run: Path) -> int:
    """The step run.json records (0 while it is missing or being written)."""
    try:
        return int(json.loads((run / "run.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


def assert_matches_one_process(one: Path, runs: Iterable[Path], steps: int) -> None:
    """Each run logs the one-process losses to the logged precision (6 digits), has its
    weights within float32 tolerance (sums in another order through ``steps`` Adam steps),
    and wrote the main process's last sample grid."""
    ref, a = losses(one), weights(one)
    unit = 10.0 ** (np.floor(np.log10(np.abs(ref))) - 5)
    for run in runs:
        two = losses(run)
        assert two.shape == ref.shape == (steps,)
        # one unit of the last logged digit, measured in units (0.709786 - 0.709785 is
        # 1.0000000000287557e-06 in binary)
        assert np.all(np.abs(two - ref) / unit <= 1 + 1e-6), (two, ref)
        b = weights(run)
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)
        assert (run / "samples" / f"step-{steps:06d}.png").is_file()
