r"""The forward (noising) process q.

.. math::
    q(x_t \mid x_{t-1}) = \mathcal N(\sqrt{1-\beta_t}\,x_{t-1},\ \beta_t I)   \quad (2)

    q(x_t \mid x_0) = \mathcal N(\sqrt{\bar\alpha_t}\,x_0,\ (1-\bar\alpha_t) I)  \quad (4)

``t`` is the 0-based step index (index 0 is the paper's t = 1), a Python int or an integer
array of shape (B,). Outputs keep the namespace, device and dtype of the data argument.
"""

from __future__ import annotations

from typing import Any

from ddpm_core._arith import lincomb
from ddpm_core._namespace import cast_like, namespace, upcast
from ddpm_core.checks import as_timesteps, check_batch, check_same_shape
from ddpm_core.schedules import Schedule

__all__ = ["q_sample", "q_mean_variance", "q_step_sample"]


def q_mean_variance(schedule: Schedule, x0: Any, t: Any) -> tuple[Any, Any, Any]:
    """Mean, variance and log-variance of q(x_t | x_0), eq. (4).

    Returns
    -------
    mean : shape of ``x0``
    variance, log_variance : shape (B, 1, ..., 1)
    """
    check_batch("x0", x0)
    t = as_timesteps(t, x0, schedule.num_timesteps, gathered=True)
    xp = namespace(x0)
    x = upcast(x0, xp)
    root, abar = schedule.coefs(("sqrt_alphas_cumprod", "alphas_cumprod"), t, x, xp)
    var = 1.0 - abar
    return cast_like(root * x, x0, xp), var, xp.log(var)


def q_sample(schedule: Schedule, x0: Any, t: Any, noise: Any, *, validate: bool = True) -> Any:
    r"""Draw x_t ~ q(x_t | x_0) given standard normal ``noise``, eq. (4).

    .. math:: x_t = \sqrt{\bar\alpha_t}\,x_0 + \sqrt{1-\bar\alpha_t}\,\epsilon

    Parameters
    ----------
    x0 : array, shape (B, ...)
    t : int or int array, shape (B,)
    noise : array, same shape as ``x0``
    validate : bool
        False skips the check of ``t``'s values (its dtype and shape are still checked): for
        callers that drew ``t`` themselves, e.g. with ``sample_timesteps``. Under PyTorch the
        check costs no host read either way.

    Examples
    --------
    >>> import numpy as np
    >>> s = Schedule.linear(1000)
    >>> x0 = np.ones((2, 3)); eps = np.zeros((2, 3))
    >>> np.allclose(q_sample(s, x0, 0, eps), np.sqrt(1 - 1e-4))
    True
    """
    check_batch("x0", x0)
    check_same_shape("x0", x0, "noise", noise)
    t = as_timesteps(t, x0, schedule.num_timesteps, scalar_ok=True, check_values=validate,
                     gathered=True)
    return _q_sample(schedule, x0, t, noise, namespace(x0))


def _q_sample(schedule: Schedule, x0: Any, t: Any, noise: Any, xp: Any) -> Any:
    """``q_sample`` without validation (``t`` a Python int or an integer vector)."""
    x = upcast(x0, xp)
    a, b = schedule.coefs(("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"), t, x, xp)
    return cast_like(lincomb(xp, (a, x), (b, noise)), x0, xp)


def q_step_sample(schedule: Schedule, x_prev: Any, t: Any, noise: Any) -> Any:
    r"""One forward step x_{t} ~ q(x_t | x_{t-1}), eq. (2).

    .. math:: x_t = \sqrt{1-\beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\epsilon
    """
    check_batch("x_prev", x_prev)
    check_same_shape("x_prev", x_prev, "noise", noise)
    t = as_timesteps(t, x_prev, schedule.num_timesteps, gathered=True)
    xp = namespace(x_prev)
    x = upcast(x_prev, xp)
    alpha, beta = schedule.coefs(("alphas", "betas"), t, x, xp)
    return cast_like(xp.sqrt(alpha) * x + xp.sqrt(beta) * noise, x_prev, xp)
