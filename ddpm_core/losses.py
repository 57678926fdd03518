r"""Every objective of the paper: L_simple, the variational bound and its parts, bits/dim.

.. math::
    L = \underbrace{D_{KL}(q(x_T|x_0)\,\|\,p(x_T))}_{L_T}
      + \sum_{t>1} \underbrace{D_{KL}(q(x_{t-1}|x_t,x_0)\,\|\,p_\theta(x_{t-1}|x_t))}_{L_{t-1}}
      \underbrace{- \log p_\theta(x_0|x_1)}_{L_0}   \quad (5)

    L_{simple} = \mathbb E_{t,x_0,\epsilon}\,\|\epsilon - \epsilon_\theta(\sqrt{\bar\alpha_t}x_0
                 + \sqrt{1-\bar\alpha_t}\epsilon, t)\|^2   \quad (14)

Bound terms are reported in bits per dimension: the per-sample mean over all non-batch
axes divided by ln 2. Data for the decoder (eq. 13) are 8-bit values scaled to [-1, 1].
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ddpm_core._arith import LN2
from ddpm_core._namespace import cast_like, constant, device_of, namespace, stop_gradient, upcast
from ddpm_core.checks import as_timesteps, check_batch, check_choice, check_same_shape
from ddpm_core.parameterization import (
    LEARNED_VARIANCES,
    LOG_VARIANCE_TABLES,
    PREDICTIONS,
    VARIANCES,
    _check_zero_snr,
    _log_variance,
    _mean_x0,
    split_model_output,
    step_tables,
)
from ddpm_core.posterior import q_posterior_mean
from ddpm_core.schedules import Schedule
from ddpm_core.special import log_ndtr, log_normal_mass

__all__ = [
    "LOSSES",
    "WEIGHTINGS",
    "LossTerms",
    "normal_kl",
    "discretized_gaussian_log_likelihood",
    "prior_bpd",
    "vlb_terms",
    "training_loss_terms",
    "training_target",
    "loss_weights",
    "training_losses",
]

LOSSES = ("simple", "vlb", "hybrid")
WEIGHTINGS = ("min_snr",)


def normal_kl(mean1: Any, logvar1: Any, mean2: Any, logvar2: Any) -> Any:
    r"""Elementwise KL(N(mean1, e^{logvar1}) || N(mean2, e^{logvar2})) in nats.

    .. math:: \tfrac12\big(-1 + \ell_2 - \ell_1 + e^{\ell_1-\ell_2}
              + (\mu_1-\mu_2)^2 e^{-\ell_2}\big)

    Arguments broadcast against each other (the variances are usually (B, 1, ..., 1)).

    Examples
    --------
    >>> import numpy as np
    >>> float(normal_kl(np.asarray(0.0), np.asarray(0.0), np.asarray(1.0), np.asarray(0.0)))
    0.5
    """
    xp = namespace(mean1, logvar1, mean2, logvar2)
    return 0.5 * (
        -1.0 + logvar2 - logvar1 + xp.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * xp.exp(-logvar2)
    )


def discretized_gaussian_log_likelihood(
    x: Any, mean: Any, log_scale: Any, *, num_bins: int = 256
) -> Any:
    r"""log p(x) of the discretized Gaussian decoder, eq. (13), elementwise in nats.

    ``x`` holds 8-bit data scaled to [-1, 1] (bin centres -1 + 2k/255). Each value's
    likelihood is the N(mean, e^{2 log_scale}) mass of its bin of width 2/255; the first
    bin extends to -inf and the last to +inf, so the ``num_bins`` masses sum to 1. The mass
    is computed with the exact error function in log space (``ddpm_core.special``), finite
    far in the tails, not with the tanh approximation of the CDF.

    Parameters
    ----------
    x : array, shape (B, ...), values on the grid of ``num_bins`` levels in [-1, 1]
    mean : array broadcastable to ``x``
    log_scale : array broadcastable to ``x``: log of the standard deviation
    """
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got num_bins={num_bins}")
    xp = namespace(x, mean, log_scale)
    half = 1.0 / (num_bins - 1)
    inv_std = xp.exp(-log_scale)
    lo = (x - mean - half) * inv_std
    hi = (x - mean + half) * inv_std
    first = x < -1.0 + half
    last = x > 1.0 - half
    interior = first | last
    # Stand-ins keep edge bins from evaluating an interval they do not use.
    mass = log_normal_mass(xp.where(interior, -1.0, lo), xp.where(interior, 1.0, hi), xp=xp)
    return xp.where(first, log_ndtr(hi, xp=xp), xp.where(last, log_ndtr(-lo, xp=xp), mass))


def _mean_flat(x: Any) -> Any:
    xp = namespace(x)
    return xp.mean(xp.reshape(x, (x.shape[0], -1)), axis=1)


def prior_bpd(schedule: Schedule, x0: Any) -> Any:
    """L_T = KL(q(x_T | x_0) || N(0, I)) in bits/dim, shape (B,). No parameters."""
    check_batch("x0", x0)
    xp = namespace(x0)
    x = upcast(x0, xp)
    abar = float(schedule.alphas_cumprod[-1])
    # KL(N(sqrt(abar) x, 1 - abar) || N(0, 1)) = (abar x^2 - log(1 - abar) - abar) / 2, with the
    # x-free part formed in float64 without the cancellation of -1 + var - log var.
    const = -math.log1p(-abar) - abar
    kl = 0.5 * (abar * x**2 + const)
    return cast_like(_mean_flat(kl) / LN2, x0, xp)


def _vlb(schedule: Schedule, pred: Any, var_values: Any, x0: Any, x_t: Any, t: Any,
         prediction: str, variance: str, clip: Any, xp: Any) -> tuple[Any, Any]:
    """Per-sample L_{t-1} (bits/dim) and x0_hat; t an integer vector (B,), compute dtype."""
    true_var = LOG_VARIANCE_TABLES["fixed_small"]
    at = schedule.tables_at(step_tables(prediction, true_var + LOG_VARIANCE_TABLES[variance]), t, x_t, xp)
    true_mean = q_posterior_mean(schedule, x0, x_t, at, xp)
    true_logvar = schedule.coefs(true_var, at, x_t, xp)[0]
    mean, x0_hat = _mean_x0(schedule, pred, x_t, at, prediction, clip, None, xp)
    log_var = _log_variance(schedule, var_values, x_t, at, variance, xp)
    kl = _mean_flat(normal_kl(true_mean, true_logvar, mean, log_var)) / LN2
    nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_var)) / LN2
    return xp.where(t == 0, nll, kl), x0_hat


def vlb_terms(
    schedule: Schedule,
    model_output: Any,
    x0: Any,
    x_t: Any,
    t: Any,
    *,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip: Any = None,
) -> Any:
    """The bound's term at each sample's step, in bits/dim, shape (B,).

    L_{t-1} = KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t)) for index t > 0, and the
    decoder NLL L_0 = -log p_theta(x_0|x_1) (eq. 13) for index 0.
    """
    xp, pred, var_values, x0_c, x, t = _check_loss_inputs(
        schedule, model_output, x0, x_t, t, prediction, variance, gathered=True)
    term = _vlb(schedule, pred, var_values, x0_c, x, t, prediction, variance, clip, xp)[0]
    return cast_like(term, x_t, xp)


def training_target(schedule: Schedule, x0: Any, x_t: Any, t: Any, noise: Any, prediction: str) -> Any:
    """The regression target of ``prediction`` for L_simple: eps, x_0, v or mu~(x_t, x_0)."""
    check_choice("prediction", prediction, PREDICTIONS)
    return _training_target(schedule, x0, x_t, as_timesteps(t, x_t, schedule.num_timesteps, scalar_ok=True),
                            noise, prediction)


def _training_target(schedule: Schedule, x0: Any, x_t: Any, t: Any, noise: Any, prediction: str) -> Any:
    """``training_target`` without validation (``t`` a Python int or a validated vector)."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    xp = namespace(x_t)
    x, x0_c = upcast(x_t, xp), upcast(x0, xp)
    if prediction == "mean":
        return cast_like(q_posterior_mean(schedule, x0_c, x, t, xp), x_t, xp)
    a, b = schedule.coefs(("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"), t, x, xp)
    return cast_like(a * upcast(noise, xp) - b * x0_c, x_t, xp)


def loss_weights(
    schedule: Schedule, t: Any, like: Any, *, weighting: Any = None, prediction: str = "eps",
    min_snr_gamma: float = 5.0,
) -> Any:
    r"""Per-sample weights (B,) for L_simple.

    ``weighting``: None (all ones: the paper's L_simple), ``"min_snr"`` (Hang et al. 2023:
    min(SNR_t, gamma) expressed for the prediction type: / SNR for eps, / (SNR + 1) for v,
    as is for x0), or an array of T per-step weights (e.g. eq. (12)'s
    beta_t^2 / (2 sigma_t^2 alpha_t (1 - abar_t)), which turns L_simple into the bound).
    """
    t = as_timesteps(t, like, schedule.num_timesteps)
    return _loss_weights(schedule, t, like, weighting, prediction, min_snr_gamma)


def _loss_weights(schedule: Schedule, t: Any, like: Any, weighting: Any, prediction: str,
                  min_snr_gamma: float) -> Any:
    """``loss_weights`` for a validated integer vector ``t``."""
    xp = namespace(like)
    if weighting is None:
        return xp.ones(t.shape, dtype=like.dtype, device=device_of(like))
    if isinstance(weighting, str):
        check_choice("weighting", weighting, WEIGHTINGS)
        if not min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be > 0, got min_snr_gamma={min_snr_gamma}")
        snr = xp.reshape(schedule.lookup("snr", t, like, dtype=like.dtype), (-1,))
        clipped = xp.clip(snr, None, min_snr_gamma)  # min(SNR, gamma); no scalar copied to the device
        if prediction == "eps":
            return clipped / snr
        if prediction == "v":
            return clipped / (snr + 1.0)
        return clipped
    if isinstance(weighting, (np.ndarray, list, tuple)):  # host values: copied to the device once
        table = constant(np.asarray(weighting, dtype=np.float64), xp, device_of(like), like.dtype)
    else:
        table = xp.asarray(weighting, dtype=like.dtype, device=device_of(like))
    if table.shape != (schedule.num_timesteps,):
        raise ValueError(
            f"weighting as an array must have shape ({schedule.num_timesteps},), got {tuple(table.shape)}"
        )
    return xp.take(table, t, axis=0)


def _check_loss_inputs(schedule, model_output, x0, x_t, t, prediction, variance, *,
                       check_values=True, gathered=False):
    """Validate; return (xp, prediction part, variance part, x0, x_t (compute dtype), t).

    ``check_values`` and ``gathered`` as in ``as_timesteps``.
    """
    check_choice("prediction", prediction, PREDICTIONS)
    check_choice("variance", variance, VARIANCES)
    check_batch("x_t", x_t)
    check_same_shape("x_t", x_t, "x0", x0)
    pred, var_values = split_model_output(model_output, variance)
    check_same_shape("x_t", x_t, "model_output (prediction part)", pred)
    _check_zero_snr(schedule, prediction)
    xp = namespace(x_t)
    t = as_timesteps(t, x_t, schedule.num_timesteps, check_values=check_values, gathered=gathered)
    var_values = None if var_values is None else upcast(var_values, xp)
    return xp, upcast(pred, xp), var_values, upcast(x0, xp), upcast(x_t, xp), t


class LossTerms(NamedTuple):
    """The parts of a training loss, each per sample (B,) in the output's dtype.

    ``loss`` is what :func:`training_losses` returns; ``simple`` is eq. (14) (times
    ``loss_weights(weighting)``) and ``vlb`` is T * L_{t-1} in bits/dim (None for
    ``loss="simple"``). ``loss`` is ``simple`` for ``"simple"``, ``vlb`` for ``"vlb"`` and
    ``simple + hybrid_weight * vlb`` for ``"hybrid"``.
    """

    loss: Any
    simple: Any
    vlb: Any


def training_losses(
    schedule: Schedule,
    model_output: Any,
    x0: Any,
    x_t: Any,
    t: Any,
    noise: Any,
    *,
    loss: str = "simple",
    prediction: str = "eps",
    variance: str = "fixed_small",
    weighting: Any = None,
    min_snr_gamma: float = 5.0,
    hybrid_weight: float = 0.001,
    validate: bool = True,
) -> Any:
    r"""Per-sample training loss, shape (B,); average it (or weight it) for the step.

    - ``"simple"``: eq. (14), mean over dimensions of ||target - prediction||^2, target by
      ``prediction`` (eps for the paper's L_simple), times ``loss_weights(weighting)``.
      Fixed variances only (a learned variance gets no signal from it).
    - ``"vlb"``: T * L_{t-1} in bits/dim: with t uniform, an unbiased estimate of the
      bound minus the constant L_T (the paper's "true variational bound" objective).
    - ``"hybrid"``: L_simple + ``hybrid_weight`` * T * L_{t-1} with the mean's gradient
      stopped in the bound term (Nichol & Dhariwal's L_hybrid, lambda = 0.001): learned
      variances only.

    :func:`training_loss_terms` returns the same loss with its two parts.

    Parameters
    ----------
    model_output : (B, C, ...) or (B, 2C, ...) for learned variances
    x0, x_t, noise : (B, C, ...), with x_t = q_sample(schedule, x0, t, noise)
    t : int or int array (B,), 0-based
    validate : bool
        False skips the check of ``t``'s values (dtype and shape are still checked): for a
        trainer that drew ``t`` itself (``sample_timesteps``) and checked it in ``q_sample``.
        Under PyTorch the check costs no host read either way.
    """
    return _terms(schedule, model_output, x0, x_t, t, noise, loss, prediction, variance,
                  weighting, min_snr_gamma, hybrid_weight, validate, parts=False).loss


def training_loss_terms(
    schedule: Schedule,
    model_output: Any,
    x0: Any,
    x_t: Any,
    t: Any,
    noise: Any,
    *,
    loss: str = "simple",
    prediction: str = "eps",
    variance: str = "fixed_small",
    weighting: Any = None,
    min_snr_gamma: float = 5.0,
    hybrid_weight: float = 0.001,
    validate: bool = True,
) -> LossTerms:
    r""":func:`training_losses` and its parts, as :class:`LossTerms` ``(loss, simple, vlb)``.

    ``simple`` (eq. 14) is evaluated for ``"vlb"`` too, where it does not enter the loss (a
    diagnostic: the regression error of the prediction); ``vlb`` (T * L_{t-1}, bits/dim) is
    None for ``"simple"``. For ``"hybrid"`` the bound term's value is the same with or
    without the stopped gradient, so ``loss == simple + hybrid_weight * vlb``. Arguments and
    shapes as for :func:`training_losses`.
    """
    return _terms(schedule, model_output, x0, x_t, t, noise, loss, prediction, variance,
                  weighting, min_snr_gamma, hybrid_weight, validate, parts=True)


def _terms(schedule: Schedule, model_output: Any, x0: Any, x_t: Any, t: Any, noise: Any,
           loss: str, prediction: str, variance: str, weighting: Any, min_snr_gamma: float,
           hybrid_weight: float, validate: bool, *, parts: bool) -> LossTerms:
    """Both entry points; ``parts`` False skips L_simple of a ``"vlb"`` loss."""
    check_choice("loss", loss, LOSSES)
    xp, pred, var_values, x0_c, x, t = _check_loss_inputs(
        schedule, model_output, x0, x_t, t, prediction, variance, check_values=validate)
    check_same_shape("x_t", x_t, "noise", noise)
    learned = variance in LEARNED_VARIANCES
    if loss == "simple" and learned:
        raise ValueError(f"loss='simple' does not train variance={variance!r}; use loss='hybrid'")
    if loss == "hybrid" and not learned:
        raise ValueError(f"loss='hybrid' needs a learned variance, got variance={variance!r}")
    T = schedule.num_timesteps
    vb = None
    if loss != "simple":  # the mean's gradient is stopped in hybrid's bound term
        frozen = pred if loss == "vlb" else stop_gradient(pred)
        vb = T * _vlb(schedule, frozen, var_values, x0_c, x, t, prediction, variance, None, xp)[0]
    mse = None
    if loss != "vlb" or parts:
        target = upcast(_training_target(schedule, x0, x_t, t, noise, prediction), xp)
        mse = _mean_flat((target - pred) ** 2)
        if weighting is not None:
            mse = mse * _loss_weights(schedule, t, x, weighting, prediction, min_snr_gamma)
    if loss == "hybrid":
        total = mse + hybrid_weight * vb
    else:
        total = mse if loss == "simple" else vb
    return LossTerms(*(None if a is None else cast_like(a, x_t, xp) for a in (total, mse, vb)))
