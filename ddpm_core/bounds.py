"""The full variational bound of eq. (5) in bits/dim, every term evaluated (T model calls).

:func:`bits_per_dim` sums the prior L_T, each L_{t-1} and the decoder L_0 of
:mod:`ddpm_core.losses` for a batch, with the distortion (MSE of x0_hat) at every step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ddpm_core._namespace import cast_like, namespace
from ddpm_core.checks import as_timesteps, check_all, check_batch, check_same_shape
from ddpm_core.forward import _q_sample
from ddpm_core.losses import _check_loss_inputs, _mean_flat, _vlb, prior_bpd
from ddpm_core.schedules import Schedule

__all__ = ["BitsPerDim", "bits_per_dim"]


class BitsPerDim(NamedTuple):
    """The full bound of eq. (5) in bits/dim, every term evaluated (none sampled)."""

    total: Any  # (B,) prior + sum of terms
    prior: Any  # (B,) L_T
    terms: Any  # (T, B) L_{t-1} for index t; terms[0] is the decoder L_0
    decoder: Any  # (B,) terms[0]
    mse: Any  # (T, B) mean squared error of x0_hat at each step (the paper's distortion)


def bits_per_dim(
    schedule: Schedule,
    model: Callable[[Any, Any], Any],
    x0: Any,
    noise_fn: Callable[[int], Any],
    *,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip: Any = None,
) -> BitsPerDim:
    """Negative log-likelihood bound of ``x0`` in bits/dim, summing all T terms of eq. (5).

    For each step index i (T model calls), x_t is drawn from q(x_t|x_0) with
    ``noise_fn(i)`` and the term L_{i} is evaluated exactly given that x_t. ``model(x_t,
    t_model)`` receives ``schedule.timesteps[i]`` for every sample.
    """
    check_batch("x0", x0)
    check_all((x0 >= -1.0) & (x0 <= 1.0), "x0 must hold data scaled to [-1, 1] (the decoder's "
              "256 bins, eq. 13)", values=x0)
    xp = namespace(x0)
    T = schedule.num_timesteps
    T_model = int(schedule.timesteps[-1]) + 1
    terms, mses = [], []
    for i in range(T):
        noise = noise_fn(i)
        check_same_shape("x0", x0, "noise_fn(i)", noise)
        x_t = _q_sample(schedule, x0, i, noise, xp)
        out = model(x_t, as_timesteps(int(schedule.timesteps[i]), x0, T_model))
        xp, pred, var_values, x0_c, x, t = _check_loss_inputs(
            schedule, out, x0, x_t, i, prediction, variance)
        term, x0_hat = _vlb(schedule, pred, var_values, x0_c, x, t, prediction, variance, clip, xp)
        terms.append(cast_like(term, x0, xp))
        mses.append(cast_like(_mean_flat((x0_hat - x0_c) ** 2), x0, xp))
    stacked = xp.stack(terms, axis=0)
    prior = prior_bpd(schedule, x0)
    return BitsPerDim(prior + xp.sum(stacked, axis=0), prior, stacked, terms[0], xp.stack(mses, axis=0))

