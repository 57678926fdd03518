r"""Reverse-process steps: the ancestral DDPM step and the DDIM step.

Algorithm 2 (ancestral sampling), for t = T..1:

.. math:: x_{t-1} = \mu_\theta(x_t, t) + \sigma_t z,\quad z \sim \mathcal N(0, I)
          \text{ if } t > 1 \text{ else } z = 0

DDIM (Song et al. 2021), from step t to an earlier step s (``t_prev``):

.. math:: x_s = \sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1 - \bar\alpha_s - \sigma^2}\,\hat\epsilon
          + \sigma z, \quad
          \sigma = \eta \sqrt{\frac{1-\bar\alpha_s}{1-\bar\alpha_t}}
                   \sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_s}}

Steps are pure: they take everything they need (x_t, t, the model output, the noise) and
return the next state. The core owns no random number generator: noise comes in as arrays,
or from a ``noise_fn(i)`` callable that the caller builds on its own generator or key.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ddpm_core._arith import fsqrt, lincomb
from ddpm_core._namespace import cast_like, is_torch, namespace, upcast
from ddpm_core.checks import (
    as_timesteps,
    check_all,
    check_batch,
    check_choice,
    check_range,
    check_same_shape,
)
from ddpm_core.parameterization import (
    LOG_VARIANCE_TABLES,
    PREDICTIONS,
    VARIANCES,
    _check_zero_snr,
    _clip_x0,
    _eps_from_x0,
    _log_variance,
    _mean_terms,
    _x0_eps,
    split_model_output,
    step_tables,
)
from ddpm_core.schedules import Schedule

__all__ = ["DDIM_EPS", "DEFAULT_DDIM_EPS", "MULTISTEP", "SAMPLERS", "StepResult", "needs_noise", "SampleStep",
           "ddpm_step", "ddim_step"]

# the sampler names, everywhere (ddpm_core.reverse.reverse_step)
SAMPLERS = ("ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde")
MULTISTEP = ("dpmpp-2m", "dpmpp-2m-sde")  # the samplers whose step reads the previous x0_hat
# DDIM's eps once x0_hat is clipped: re-derived from the clipped x0_hat (improved-diffusion),
# or the network's own (diffusers' use_clipped_model_output=False)
DDIM_EPS = ("clipped", "network")
DEFAULT_DDIM_EPS = "network"  # it measures better on the demo model (docs/results.md, "Fast sampling")


def needs_noise(sampler: str, eta: float = 0.0) -> bool:
    """True when the steps of ``sampler`` draw noise (ancestral, SDE, DDIM with eta > 0)."""
    return sampler in ("ddpm", "dpmpp-2m-sde") or (sampler == "ddim" and eta > 0)


class StepResult(NamedTuple):
    """One reverse step: the next state and the x_0 estimate it was built from."""

    x_prev: Any  # (B, ...)
    x0_hat: Any  # (B, ...)


class SampleStep(NamedTuple):
    """What a sampling loop yields after step ``step`` (0-based, counting down)."""

    step: int
    x: Any  # the sample after this step, (B, ...)
    x0_hat: Any  # (B, ...)


def ddpm_step(
    schedule: Schedule,
    model_output: Any,
    x_t: Any,
    t: Any,
    noise: Any,
    *,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip: Any = None,
    threshold: float | None = None,
) -> StepResult:
    """One ancestral step x_t -> x_{t-1} (Algorithm 2), with no noise where t == 0.

    Parameters
    ----------
    model_output : (B, C, ...), or (B, 2C, ...) for learned variances
    x_t : (B, C, ...)
    t : int or int array (B,), 0-based (index 0 is the paper's t = 1). A Python int uses
        float64 scalar coefficients (the fastest path); an array, per-sample coefficients.
    noise : (B, C, ...) standard normal draws; ignored for samples with t == 0, and may be
        None when every t is 0 (Algorithm 2 adds no noise at index 0)
    prediction, variance, clip, threshold : see ``ddpm_core.parameterization``

    Examples
    --------
    >>> import numpy as np
    >>> s = Schedule.linear(1000)
    >>> x = np.zeros((2, 3)); eps = np.zeros((2, 3))
    >>> step = ddpm_step(s, eps, x, 0, np.ones((2, 3)))
    >>> np.allclose(step.x_prev, 0.0)  # the last step adds no noise
    True
    """
    _check_step(schedule, x_t, prediction, variance)
    pred, var_values = split_model_output(model_output, variance)
    check_same_shape("x_t", x_t, "model_output (prediction part)", pred)
    t = as_timesteps(t, x_t, schedule.num_timesteps, scalar_ok=True, gathered=True)
    noise = _noise_or_zeros(noise, x_t, t)
    return _ddpm_step(schedule, pred, var_values, x_t, t, noise, prediction, variance, clip,
                      threshold, namespace(x_t))


def _noise_or_zeros(noise: Any, x_t: Any, t: Any) -> Any:
    """``noise`` checked against ``x_t``; None (zeros) only where every t is 0."""
    if noise is not None:
        check_same_shape("x_t", x_t, "noise", noise)
        return noise
    message = "noise is required where t > 0 (noise=None is allowed only at index 0, which adds no noise)"
    if isinstance(t, int):
        if t != 0:
            raise ValueError(f"{message}, got t={t}")
    else:
        check_all(t == 0, message)
    return namespace(x_t).zeros_like(x_t)


def _check_step(schedule: Schedule, x_t: Any, prediction: str, variance: str) -> None:
    check_choice("prediction", prediction, PREDICTIONS)
    check_choice("variance", variance, VARIANCES)
    check_batch("x_t", x_t)
    _check_zero_snr(schedule, prediction)


_STEP_STD = {"fixed_small": "posterior_std", "fixed_large": "fixed_large_step_std"}


def _ddpm_step(schedule, pred, var_values, x_t, t, noise, prediction, variance, clip,
               threshold, xp):
    """``ddpm_step`` without validation (``t`` a Python int or an integer vector)."""
    x = upcast(x_t, xp)
    extra = (_STEP_STD[variance],) if variance in _STEP_STD else LOG_VARIANCE_TABLES[variance]
    at = schedule.tables_at(step_tables(prediction, extra), t, x, xp)  # one gather per step
    mean_terms, x0 = _mean_terms(schedule, upcast(pred, xp), x, at, prediction, clip, threshold, xp)
    if variance in _STEP_STD:  # the std table is 0 at index 0: no noise on the last step
        std = schedule.coefs(extra, at, x, xp)[0]
    else:
        log_var = _log_variance(schedule, upcast(var_values, xp), x, at, variance, xp)
        std = xp.exp(0.5 * log_var) * _nonzero(t, x, xp)
    x_prev = lincomb(xp, *mean_terms, (std, noise))  # mu_theta + sigma z as one sum
    return StepResult(cast_like(x_prev, x_t, xp), cast_like(x0, x_t, xp))


def _nonzero(t: Any, like: Any, xp: Any) -> Any:
    """1 where t > 0, 0 where t == 0, shaped to broadcast against ``like``."""
    if isinstance(t, int):
        return float(t != 0)
    return xp.reshape(xp.astype(t != 0, like.dtype), (-1,) + (1,) * (like.ndim - 1))


def ddim_step(
    schedule: Schedule,
    model_output: Any,
    x_t: Any,
    t: Any,
    t_prev: Any,
    noise: Any = None,
    *,
    eta: float = 0.0,
    prediction: str = "eps",
    clip: Any = None,
    threshold: float | None = None,
    ddim_eps: str = DEFAULT_DDIM_EPS,
) -> StepResult:
    """One DDIM step from index ``t`` to the earlier index ``t_prev`` (-1: to x_0).

    ``t`` and ``t_prev`` index ``schedule`` (a respaced schedule's own indices, or the full
    chain's). With ``eta = 0`` the step is deterministic; ``eta = 1`` on consecutive steps
    is the ancestral step with ``variance="fixed_small"``. ``noise`` is required when
    ``eta > 0``.

    Parameters
    ----------
    model_output, x_t : (B, C, ...)
    t : int or int array (B,) in [0, T); t_prev : int or int array (B,) in [-1, T)
    noise : (B, C, ...) or None
    eta : float in [0, 1]
    ddim_eps : {"clipped", "network"}
        Where ``clip`` or ``threshold`` changes x0_hat, the eps of the step: re-derived from
        the clipped x0_hat (``"clipped"``: x_s lies on the line through the clipped x0_hat
        and x_t, as in improved-diffusion) or the network's own (``"network"``, diffusers'
        ``use_clipped_model_output=False``). Without clipping the two are the same step.
    """
    _check_ddim(schedule, model_output, x_t, noise, eta, prediction, ddim_eps)
    T = schedule.num_timesteps
    # Both are gathered (t_prev from tables with index -1 prepended): see as_timesteps.
    t = as_timesteps(t, x_t, T, scalar_ok=True, gathered=True)
    t_prev = as_timesteps(t_prev, x_t, T, name="t_prev", minimum=-1, scalar_ok=True, gathered=True)
    if isinstance(t, int) != isinstance(t_prev, int):  # mixed: use per-sample vectors
        t = as_timesteps(t, x_t, T, gathered=True)
        t_prev = as_timesteps(t_prev, x_t, T, name="t_prev", minimum=-1, gathered=True)
    xp = namespace(x_t)
    after = t_prev + 1  # the index of t_prev in the tables of Schedule.prev_coefs
    step = _ddim_step(schedule, model_output, x_t, t, after, noise, eta, prediction, clip,
                      threshold, xp, ddim_eps)
    _check_order(schedule, t, t_prev, after, xp)  # after the gathers: their errors come first
    return step


def _ddim_back(schedule: Schedule, model_output: Any, x_t: Any, i: Any, noise: Any = None, *,
               eta: float = 0.0, prediction: str = "eps", clip: Any = None, threshold: float | None = None,
               ddim_eps: str = DEFAULT_DDIM_EPS) -> StepResult:
    """``ddim_step(schedule, model_output, x_t, i, i - 1, ...)``: one step of a chain, with
    the same checks but none of the order (i - 1 < i holds), so with no ops beyond the step's
    own (``ddpm_core.reverse_step``'s DDIM step)."""
    _check_ddim(schedule, model_output, x_t, noise, eta, prediction, ddim_eps)
    t = as_timesteps(i, x_t, schedule.num_timesteps, scalar_ok=True, gathered=True)
    return _ddim_step(schedule, model_output, x_t, t, t, noise, eta, prediction, clip, threshold,
                      namespace(x_t), ddim_eps)


def _check_ddim(schedule: Schedule, model_output: Any, x_t: Any, noise: Any, eta: float,
                prediction: str, ddim_eps: str) -> None:
    check_choice("prediction", prediction, PREDICTIONS)
    check_choice("ddim_eps", ddim_eps, DDIM_EPS)
    check_batch("x_t", x_t)
    check_same_shape("x_t", x_t, "model_output", model_output)
    _check_zero_snr(schedule, prediction)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got eta={eta}")
    if eta > 0:
        if noise is None:
            raise ValueError(f"noise is required when eta > 0 (got eta={eta}, noise=None)")
        check_same_shape("x_t", x_t, "noise", noise)


def _check_order(schedule: Schedule, t: Any, t_prev: Any, after: Any, xp: Any) -> None:
    """DDIM steps go backwards: t_prev < t for every sample, with no host read.

    On the PyTorch CPU path this is the bounds check of one gather at t - (t_prev + 1),
    which lies in [0, T) exactly when t_prev < t (t < T is already known): one kernel fewer
    than a comparison and a reduction.
    """
    message = "t_prev must be smaller than t for every sample (DDIM steps toward x_0)"
    if isinstance(t, int):
        if t_prev >= t:
            raise ValueError(f"{message}, got t={t}, t_prev={t_prev}")
    elif is_torch(xp) and t.is_cpu:
        try:
            check_range(t - after, schedule.num_timesteps)
        except ValueError:
            raise ValueError(message) from None
    else:
        check_all(t_prev < t, message, xp=xp)


# sqrt(abar') and sqrt(1 - abar') at t_prev, (1, 0) where t_prev == -1; eta > 0 adds abar'.
_PREV_ROOTS = ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")
_PREV_TABLES = _PREV_ROOTS + ("alphas_cumprod",)


def _ddim_step(schedule, pred, x_t, t, after, noise, eta, prediction, clip, threshold, xp,
               ddim_eps=DEFAULT_DDIM_EPS):
    """``ddim_step`` without validation; ``after`` = t_prev + 1 (see ``Schedule.prev_coefs``)."""
    x = upcast(x_t, xp)
    x0, eps = _x0_eps(schedule, upcast(pred, xp), x, t, prediction, xp)
    if clip is not None or threshold is not None:
        x0 = _clip_x0(x0, clip, threshold, xp)
        if ddim_eps == "clipped":
            eps = _eps_from_x0(schedule, x0, x, t, xp)
    if eta > 0:
        root_prev, _, abar_prev = schedule.prev_coefs(_PREV_TABLES, after, x, xp)
        abar = schedule.coefs(("alphas_cumprod",), t, x, xp)[0]
        var = eta**2 * (1.0 - abar_prev) / (1.0 - abar) * (1.0 - abar / abar_prev)
        rest = 1.0 - abar_prev - var
        rest = max(rest, 0.0) if isinstance(rest, float) else xp.clip(rest, 0.0, None)
        x_prev = lincomb(xp, (root_prev, x0), (fsqrt(rest, xp), eps), (fsqrt(var, xp), noise))
    else:
        root_prev, root_one_minus_prev = schedule.prev_coefs(_PREV_ROOTS, after, x, xp)
        x_prev = lincomb(xp, (root_prev, x0), (root_one_minus_prev, eps))
    return StepResult(cast_like(x_prev, x_t, xp), cast_like(x0, x_t, xp))
