"""Choosing which steps of a T-step chain a shorter sampler visits.

``Schedule.respace`` keeps the returned steps and re-derives their betas; this module only
decides *which* steps. Accepted ``spacing`` forms:

- ``int`` N, or ``"N"`` with an explicit ``timestep_spacing``: N steps placed by
  ``"linspace"`` (round(linspace(0, T-1, N)), the default), ``"leading"``
  (0, T//N, 2 T//N, ...) or ``"trailing"`` (round(arange(T, 0, -T/N)) - 1, always keeps T-1).
- ``"ddimN"``: DDIM's evenly strided steps, always exactly N of them for any N in [1, T].
  When an integer stride gives exactly N steps, they are range(0, T, ceil(T / N)), the
  strided range of the DDIM paper's code; otherwise (e.g. N = 60 of T = 1000) the stride is
  the fraction T / N and the steps are floor(i T / N) for i = 0..N-1, so consecutive steps
  are floor(T / N) or ceil(T / N) apart. Both start at 0 (the paper's t = 1) and reach
  within one stride of T - 1. (diffusers' ``"leading"``, i (T // N), stops at N - 1 for
  every N > T / 2, leaving up to half the chain unvisited; it is available as
  ``timestep_spacing="leading"``.)
- ``"a,b,c"``: section counts (improved DDPM): T is cut into equal sections and section j
  keeps its given number of evenly spaced steps, both ends included.
- a sequence of ints: those steps.

The result is always sorted, unique and within [0, T).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ddpm_core.checks import check_choice

__all__ = ["SPACINGS", "space_timesteps"]

SPACINGS = ("linspace", "leading", "trailing")  # diffusers' timestep_spacing values


def space_timesteps(num_timesteps: int, spacing: Any, *, timestep_spacing: str = "linspace") -> np.ndarray:
    """Indices (int64, sorted, unique, in [0, T)) of the steps a respaced chain keeps.

    Examples
    --------
    >>> space_timesteps(1000, "ddim4").tolist()
    [0, 250, 500, 750]
    >>> space_timesteps(10, "ddim4").tolist()     # the integer stride 3
    [0, 3, 6, 9]
    >>> space_timesteps(10, "ddim6").tolist()     # no integer stride: floor(i * 10 / 6)
    [0, 1, 3, 5, 6, 8]
    >>> space_timesteps(10, 4, timestep_spacing="trailing").tolist()
    [1, 4, 7, 9]
    """
    check_choice("timestep_spacing", timestep_spacing, SPACINGS)
    T = int(num_timesteps)
    if isinstance(spacing, str):
        keep = _from_string(T, spacing.strip(), timestep_spacing)
    elif isinstance(spacing, (int, np.integer)) and not isinstance(spacing, bool):
        keep = _evenly(T, int(spacing), timestep_spacing)
    elif isinstance(spacing, Sequence) or isinstance(spacing, np.ndarray):
        keep = _explicit(T, spacing)
    else:
        raise TypeError(f"spacing must be an int, a str or a sequence of ints, got {spacing!r}")
    return keep


def _from_string(T: int, spacing: str, timestep_spacing: str) -> np.ndarray:
    if spacing.startswith("ddim"):
        return _ddim(T, _positive_int(spacing[4:], "spacing", spacing))
    parts = spacing.split(",")
    counts = [_positive_int(p, "spacing", spacing) for p in parts]
    if len(counts) == 1 and timestep_spacing != "linspace":
        return _evenly(T, counts[0], timestep_spacing)
    return _sections(T, counts)


def _positive_int(text: str, name: str, whole: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(
            f"{name} must be 'ddimN', 'N' or comma-separated section counts, got {name}={whole!r}"
        ) from None
    if value < 1:
        raise ValueError(f"{name} step counts must be >= 1, got {name}={whole!r}")
    return value


def _check_count(T: int, n: int) -> None:
    if not 1 <= n <= T:
        raise ValueError(f"spacing must keep between 1 and {T} steps, got {n}")


def _evenly(T: int, n: int, timestep_spacing: str) -> np.ndarray:
    _check_count(T, n)
    if timestep_spacing == "linspace":
        keep = np.round(np.linspace(0, T - 1, n))
    elif timestep_spacing == "leading":
        keep = np.arange(n, dtype=np.float64) * (T // n)
    else:
        keep = np.round(np.arange(T, 0, -T / n)) - 1
    return np.unique(keep.astype(np.int64))


def _ddim(T: int, n: int) -> np.ndarray:
    """range(0, T, ceil(T / n)) if that has n steps, else floor(i T / n), i = 0..n-1.

    ceil(T / n) is the only candidate: a stride s gives ceil(T / s) steps, which is n only
    for T / n <= s < T / (n - 1), and ceil(T / s) <= n for every s >= ceil(T / n).
    """
    _check_count(T, n)
    stride = -(-T // n)
    if len(range(0, T, stride)) == n:
        return np.arange(0, T, stride, dtype=np.int64)
    return np.arange(n, dtype=np.int64) * T // n


def _sections(T: int, counts: list[int]) -> np.ndarray:
    n_sections = len(counts)
    size, extra = divmod(T, n_sections)
    keep: list[int] = []
    start = 0
    for j, count in enumerate(counts):
        length = size + (1 if j < extra else 0)
        if count > length:
            raise ValueError(f"spacing: section {j} has {length} steps, cannot keep {count}")
        stride = (length - 1) / (count - 1) if count > 1 else 1.0
        keep.extend(start + round(k * stride) for k in range(count))
        start += length
    return np.unique(np.asarray(keep, dtype=np.int64))


def _explicit(T: int, spacing: Any) -> np.ndarray:
    keep = np.asarray(spacing)
    if keep.ndim != 1 or keep.size == 0 or not np.issubdtype(keep.dtype, np.integer):
        raise ValueError("spacing as a sequence must be a non-empty list of ints")
    if keep.min() < 0 or keep.max() >= T:
        raise ValueError(f"spacing indices must lie in [0, {T}), got [{keep.min()}, {keep.max()}]")
    return np.unique(keep.astype(np.int64))
