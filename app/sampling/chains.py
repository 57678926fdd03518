"""The chain a request runs (which respaced schedule, which steps are kept) and the checks
of a sampling request's arguments, each defined once for every backend."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ddpm_core.checks import check_choice, check_int
from ddpm_core.respacing import SPACINGS
from ddpm_core.samplers import MULTISTEP, SAMPLERS

if TYPE_CHECKING:
    from ddpm_core.schedules import Schedule

__all__ = ["SAMPLERS", "batch_bounds", "chain_schedule", "check_eta", "check_lambdas",
           "check_step_index", "progressive_steps"]


def chain_schedule(schedule: Schedule, sampler: str, steps: int | None, spacing: str | None = None) -> Schedule:
    """The (respaced) schedule a sampler runs on: ``steps`` network calls.

    Without ``spacing`` each sampler keeps its own steps: ``ddpm`` the full chain, or
    ``steps`` evenly spaced steps (improved DDPM respacing); ``ddim`` ``steps`` steps
    (default ``min(50, T)``) with DDIM's stride (``"ddim{steps}"``); ``dpmpp-2m`` and
    ``dpmpp-2m-sde`` ``steps`` steps (default ``min(20, T)``) at diffusers'
    ``DPMSolverMultistepScheduler`` default, round(linspace(0, T - 1, steps + 1))[1:] (the
    last step then goes to sigma = 0 from about T / steps). With ``spacing`` (one of
    ``ddpm_core.respacing.SPACINGS``, diffusers' ``timestep_spacing``) the chain keeps the
    ``steps`` steps that spacing places (``Schedule.respace(steps, timestep_spacing=spacing)``).
    """
    check_choice("sampler", sampler, SAMPLERS)
    if spacing is not None:
        check_choice("spacing", spacing, SPACINGS)
    T = schedule.num_timesteps
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or not 1 <= steps <= T):
        raise ValueError(f"steps must be an integer in [1, {T}]; got {steps!r}")
    if sampler in MULTISTEP:
        steps = steps or min(20, T)
        if spacing is None:
            return schedule.respace(np.round(np.linspace(0, T - 1, steps + 1))[1:].astype(np.int64))
        return schedule.respace(steps, timestep_spacing=spacing)
    if sampler == "ddim":
        steps = steps or min(50, T)
        return schedule.respace(f"ddim{steps}" if spacing is None else steps, timestep_spacing=spacing or "linspace")
    if steps is None or steps == T:
        return schedule
    if spacing is not None:
        return schedule.respace(steps, timestep_spacing=spacing)
    return schedule.respace(str(steps))


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_eta(eta: Any) -> float:
    """DDIM's eta as a float in [0, 1]."""
    if isinstance(eta, bool) or not isinstance(eta, numbers.Real) or not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be in [0, 1]; got {eta!r}")
    return float(eta)


def check_step_index(t: Any, num_timesteps: int) -> int:
    """An interpolation's 0-based encoding step ``t`` in [0, T)."""
    if not _is_int(t) or not 0 <= t < num_timesteps:
        raise ValueError(f"t must be an integer in [0, {num_timesteps}); got {t!r}")
    return int(t)


def check_lambdas(lambdas: Sequence[float]) -> np.ndarray:
    """The mixing weights of an interpolation, float32 (L,), each in [0, 1]."""
    lam = np.asarray(lambdas, dtype=np.float32)
    if lam.ndim != 1 or lam.size == 0 or lam.min() < 0 or lam.max() > 1:
        raise ValueError(f"lambdas must be a non-empty list of numbers in [0, 1]; got {lambdas!r}")
    return lam


def batch_bounds(n: int, batch_size: int | None, *, padded: bool) -> list[tuple[int, int, int]]:
    """``(lo, hi, keep)`` of each batch of a request of ``n`` samples.

    Samples ``lo .. hi - 1`` are drawn and the first ``keep`` kept; with ``padded`` every
    batch has ``batch_size`` rows (one compiled shape; the last batch's extra rows are
    samples ``n, n + 1, ...`` and are dropped), otherwise ``hi = lo + keep``.
    """
    n = check_int("n", n, 1)
    bs = min(n, n if batch_size is None else check_int("batch_size", batch_size, 1))
    return [(lo, lo + bs if padded else min(lo + bs, n), min(bs, n - lo)) for lo in range(0, n, bs)]


def progressive_steps(num_steps: int, frames: int) -> list[int]:
    """``frames`` evenly spaced step indices from K - 1 down to 0 (the last is x_0's)."""
    if not _is_int(frames) or not 1 <= frames <= num_steps:
        raise ValueError(f"frames must be an integer in [1, {num_steps}]; got {frames!r}")
    wanted = np.unique(np.rint(np.linspace(num_steps - 1, 0, frames)).astype(int))
    return sorted(wanted.tolist(), reverse=True)
