r"""The forward-process posterior q(x_{t-1} | x_t, x_0), the target of every reverse step.

.. math::
    q(x_{t-1}\mid x_t, x_0) = \mathcal N(\tilde\mu_t(x_t, x_0),\ \tilde\beta_t I)   \quad (6)

    \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\beta_t}{1-\bar\alpha_t} x_0
                + \frac{\sqrt{\alpha_t}(1-\bar\alpha_{t-1})}{1-\bar\alpha_t} x_t, \qquad
    \tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t  \quad (7)

At index 0 (the paper's t = 1) beta~ is 0; its log is clipped to log beta~ at index 1.
"""

from __future__ import annotations

from typing import Any

from ddpm_core._arith import lincomb
from ddpm_core._namespace import cast_like, namespace, upcast
from ddpm_core.checks import as_timesteps, check_batch, check_same_shape
from ddpm_core.schedules import Schedule

__all__ = ["q_posterior", "q_posterior_mean"]

# The tables mu~ of eq. (7) reads: the coefficients of x_0 and of x_t.
MEAN_TABLES = ("posterior_mean_coef1", "posterior_mean_coef2")


def q_posterior(schedule: Schedule, x0: Any, x_t: Any, t: Any) -> tuple[Any, Any, Any]:
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0), eqs. (6)-(7).

    Parameters
    ----------
    x0, x_t : arrays of shape (B, ...)
    t : int or int array, shape (B,)

    Returns
    -------
    mean : shape (B, ...), dtype of ``x_t``
    variance, log_variance : shape (B, 1, ..., 1)

    Examples
    --------
    >>> import numpy as np
    >>> s = Schedule.linear(10, 0.1, 0.2)
    >>> mean, var, logvar = q_posterior(s, np.zeros((1, 2)), np.ones((1, 2)), 0)
    >>> float(var[0, 0]), np.allclose(mean, 0.0)  # index 0: the posterior is x_0 itself
    (0.0, True)
    """
    check_batch("x_t", x_t)
    check_same_shape("x_t", x_t, "x0", x0)
    t = as_timesteps(t, x_t, schedule.num_timesteps, gathered=True)
    xp = namespace(x_t)
    x = upcast(x_t, xp)
    var, logvar = schedule.coefs(("posterior_variance", "posterior_log_variance_clipped"), t, x, xp)
    return cast_like(q_posterior_mean(schedule, upcast(x0, xp), x, t, xp), x_t, xp), var, logvar


def q_posterior_mean(schedule: Schedule, x0: Any, x_t: Any, t: Any, xp: Any) -> Any:
    """mu~_t(x_t, x_0) of eq. (7); ``t`` a Python int or a validated int64 vector (B,)."""
    return lincomb(xp, *posterior_mean_terms(schedule, x0, x_t, t, xp))


def posterior_mean_terms(schedule: Schedule, x0: Any, x_t: Any, t: Any, xp: Any) -> tuple[tuple[Any, Any], ...]:
    """mu~_t of eq. (7) as ``lincomb`` terms ((coef1, x_0), (coef2, x_t)), so that callers can
    fuse further terms (the sampler's noise) into the same sum."""
    c1, c2 = schedule.coefs(MEAN_TABLES, t, x_t, xp)
    return (c1, x0), (c2, x_t)
