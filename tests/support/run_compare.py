"""Compare run directories written by several processes with one process's (NumPy only)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from safetensors import numpy as safetensors_numpy


def losses(run: Path, column: str = "loss") -> np.ndarray:
    """The logged losses of a run (or another column of log.csv), float64."""
    with open(run / "log.csv", newline="") as f:
        return np.array([float(r[column]) for r in csv.DictReader(f)])


def loss_columns(run: Path) -> list[str]:
    """``loss`` and the loss parts a run logs (``loss_simple``, ``loss_vlb``)."""
    with open(run / "log.csv", newline="") as f:
        return [c for c in next(csv.reader(f)) if c == "loss" or c.startswith("loss_")]


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
    """Each run logs the one-process losses (and loss parts) to the logged precision
    (6 digits), has its weights within float32 tolerance (sums in another order through
    ``steps`` Adam steps), and wrote the main process's last sample grid."""
    a, columns = weights(one), loss_columns(one)
    for run in runs:
        assert loss_columns(run) == columns
        for column in columns:  # the loss, and its parts where the run logs them
            ref, two = losses(one, column), losses(run, column)
            unit = 10.0 ** (np.floor(np.log10(np.abs(ref))) - 5)
            assert two.shape == ref.shape == (steps,)
            # one unit of the last logged digit, measured in units (0.709786 - 0.709785 is
            # 1.0000000000287557e-06 in binary)
            assert np.all(np.abs(two - ref) / unit <= 1 + 1e-6), (column, two, ref)
        b = weights(run)
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)
        assert (run / "samples" / f"step-{steps:06d}.png").is_file()
