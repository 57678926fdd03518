"""A :class:`~ddpm_core.Schedule` as a JSON entry: the ``"schedule"`` dict of a run's
run.json, which diffusers' scheduler configs map to (``ddpm_core.interop.diffusers_config``)::

    {"name": "linear" | "quadratic" | "scaled_linear" | "sigmoid" | "cosine",
     "num_timesteps": T, "beta_start": b0, "beta_end": b1}
    {"name": "betas", "num_timesteps": T, "betas": [beta_0, ..., beta_{T-1}]}

either form with ``"rescale_zero_terminal_snr": true`` added for Lin et al.'s rescaling (the
key is absent otherwise, so existing run.json files are unchanged). NumPy only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ddpm_core.checks import check_choice
from ddpm_core.schedules import SCHEDULE_ENTRIES, Schedule

__all__ = ["PAPER_BETAS", "entry_value", "schedule_entry", "schedule_from_entry"]

PAPER_BETAS = (1e-4, 0.02)  # beta_start, beta_end of the paper's linear schedule (and diffusers' defaults)


def schedule_from_entry(entry: Mapping[str, Any]) -> Schedule:
    """The :class:`~ddpm_core.Schedule` of a run.json schedule entry.

    Accepts what ``ddpm train`` writes (``{"name", "num_timesteps", "beta_start",
    "beta_end"}``) and the forms of the module docstring (given ``betas``,
    ``rescale_zero_terminal_snr``).

    Examples
    --------
    >>> schedule_from_entry({"name": "betas", "num_timesteps": 2, "betas": [0.1, 0.2]}).betas.tolist()
    [0.1, 0.2]
    """
    if not isinstance(entry, Mapping):
        raise TypeError(f"schedule entry must be a mapping, got {type(entry).__name__}")
    name = entry_value(entry, "name")
    T = entry_value(entry, "num_timesteps")
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"schedule num_timesteps must be an integer >= 1, got num_timesteps={T!r}")
    if name == "betas":
        betas = np.asarray(entry_value(entry, "betas"), dtype=np.float64)
        if betas.shape != (T,):
            raise ValueError(f"schedule betas must hold num_timesteps={T} numbers, got shape {betas.shape}")
        schedule = Schedule.from_betas(betas)
    elif name == "cosine":
        schedule = Schedule.cosine(T)
    elif name in SCHEDULE_ENTRIES:
        schedule = getattr(Schedule, name)(T, beta_start=float(entry_value(entry, "beta_start")),
                                           beta_end=float(entry_value(entry, "beta_end")))
    else:
        check_choice("schedule name", name, SCHEDULE_ENTRIES)
    rescale = entry.get("rescale_zero_terminal_snr", False)
    if not isinstance(rescale, bool):
        raise ValueError(f"schedule rescale_zero_terminal_snr must be true or false, got {rescale!r}")
    return schedule.rescale_zero_terminal_snr() if rescale else schedule


def schedule_entry(schedule: Schedule) -> dict[str, Any]:
    """A schedule entry that rebuilds ``schedule`` exactly.

    The paper's linear and the cosine schedule are recognised (their betas are compared
    bit for bit) and written by name; everything else is written as its betas.

    Raises
    ------
    ValueError
        For a respaced schedule: its steps stand for other steps of a longer chain,
        which a schedule entry (and diffusers' training schedule) cannot say.
    """
    T = schedule.num_timesteps
    if not np.array_equal(schedule.timesteps, np.arange(T)):
        raise ValueError("schedule is respaced (its timesteps are not 0..T-1); only a full training "
                         "chain has a schedule entry (or a diffusers config)")
    betas = schedule.betas
    if betas[-1] < 1 and np.array_equal(np.linspace(betas[0], betas[-1], T), betas):  # Schedule.linear
        return {"name": "linear", "num_timesteps": T, "beta_start": float(betas[0]),
                "beta_end": float(betas[-1])}
    if np.array_equal(Schedule.cosine(T).betas, betas):
        return {"name": "cosine", "num_timesteps": T, "beta_start": PAPER_BETAS[0],
                "beta_end": PAPER_BETAS[1]}
    return {"name": "betas", "num_timesteps": T, "betas": betas.tolist()}


def entry_value(entry: Mapping[str, Any], key: str) -> Any:
    """``entry[key]``, or a ValueError naming the missing key and the entry."""
    if key not in entry:
        raise ValueError(f"schedule entry has no {key!r}: {dict(entry)!r}")
    return entry[key]
