r"""What the network predicts, and the reverse-process mean and variance built from it.

A network may predict the noise eps (the paper's choice), x_0, the velocity
v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0 (Salimans & Ho 2022), or the posterior mean
mu~ directly. All conversions are exact identities of eq. (4):

.. math::
    \hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta)/\sqrt{\bar\alpha_t}, \qquad
    \mu_\theta = \frac{1}{\sqrt{\alpha_t}}\Big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}
                 \epsilon_\theta\Big) = \tilde\mu_t(x_t, \hat x_0)   \quad (11)

The reverse variance sigma_t^2 (eq. 1) is ``fixed_small`` (beta~_t), ``fixed_large``
(beta_t, and at index 0 the clipped beta~, its value at index 1, as in Ho et al.'s code,
for a better decoder likelihood),
``learned`` (the network outputs log sigma^2) or ``learned_range`` (Nichol & Dhariwal: the
network outputs v in [-1, 1] and log sigma^2 = f log beta_t + (1 - f) log beta~_t with
f = (v + 1) / 2). Learned variances take a model output with 2C channels on axis 1: the
first C are the prediction, the last C the variance values.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ddpm_core._arith import broadcast_to_batch, clip_to, lincomb
from ddpm_core._namespace import cast_like, namespace, upcast
from ddpm_core.checks import as_timesteps, check_batch, check_choice, check_same_shape
from ddpm_core.posterior import MEAN_TABLES, posterior_mean_terms, q_posterior_mean
from ddpm_core.schedules import Schedule

__all__ = [
    "PREDICTIONS",
    "VARIANCES",
    "LEARNED_VARIANCES",
    "MeanVariance",
    "p_mean_variance",
    "predict_x0",
    "predict_eps",
    "predict_v",
    "predict_mean",
    "clip_x0",
    "split_model_output",
    "predict_score",
    "eps_from_score",
]

PREDICTIONS = ("eps", "x0", "v", "mean")
VARIANCES = ("fixed_small", "fixed_large", "learned", "learned_range")
LEARNED_VARIANCES = ("learned", "learned_range")  # the variances a network outputs (2C channels)


class MeanVariance(NamedTuple):
    """The reverse-process Gaussian p(x_{t-1} | x_t) and the x_0 estimate behind it."""

    mean: Any  # (B, ...)
    variance: Any  # (B, 1, ..., 1) for fixed variances, (B, ...) for learned ones
    log_variance: Any  # same shape as variance
    x0_hat: Any  # (B, ...)


# ---- conversions between parameterisations ----------------------------------------------
# Internal helpers take ``t`` as a Python int (scalar coefficients), a validated int64
# vector or a ``TablesAt`` prefetch of it, ``xp`` resolved once by the public caller, and
# arrays already in compute dtype.

# x0 = a x_t + nb eps (eq. 4 solved for x_0): 1/sqrt(abar) and -sqrt(1/abar - 1).
_EPS_TABLES = ("sqrt_recip_alphas_cumprod", "-sqrt_recipm1_alphas_cumprod")
_V_TABLES = ("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")
# The tables ``_x0_eps`` reads for each prediction, so a step can gather them all at once.
X0_EPS_TABLES = {"eps": _EPS_TABLES, "v": _V_TABLES, "mean": MEAN_TABLES + _EPS_TABLES, "x0": _EPS_TABLES}


def _x0_eps(schedule: Schedule, pred: Any, x_t: Any, t: Any, prediction: str, xp: Any) -> tuple[Any, Any]:
    """(x0_hat, eps_hat) from a prediction of any type."""
    if prediction == "eps":
        a, nb = schedule.coefs(_EPS_TABLES, t, x_t, xp)
        return lincomb(xp, (a, x_t), (nb, pred)), pred
    if prediction == "v":
        a, b = schedule.coefs(_V_TABLES, t, x_t, xp)
        return lincomb(xp, (a, x_t), (-b, pred)), lincomb(xp, (b, x_t), (a, pred))
    if prediction == "mean":
        c1, c2 = schedule.coefs(MEAN_TABLES, t, x_t, xp)
        x0 = (pred - c2 * x_t) / c1
    else:
        x0 = pred
    return x0, _eps_from_x0(schedule, x0, x_t, t, xp)


def _eps_from_x0(schedule: Schedule, x0: Any, x_t: Any, t: Any, xp: Any) -> Any:
    a, nb = schedule.coefs(_EPS_TABLES, t, x_t, xp)
    return (x0 - a * x_t) / nb


def _checked(schedule: Schedule, model_output: Any, x_t: Any, t: Any, prediction: str,
             gathered: bool = True) -> tuple[Any, Any, Any, Any]:
    """Validate; return (xp, x_t and model_output in compute dtype, t vector).

    ``gathered``: the caller looks ``t`` up in a schedule table (``_x0_eps`` does), whose
    bounds check is then the range check under PyTorch.
    """
    check_choice("prediction", prediction, PREDICTIONS)
    check_batch("x_t", x_t)
    check_same_shape("x_t", x_t, "model_output", model_output)
    _check_zero_snr(schedule, prediction)
    xp = namespace(x_t)
    t = as_timesteps(t, x_t, schedule.num_timesteps, gathered=gathered)
    return xp, upcast(x_t, xp), upcast(model_output, xp), t


def _check_zero_snr(schedule: Schedule, prediction: str) -> None:
    if prediction == "eps" and schedule.zero_terminal_snr:
        raise ValueError(
            "prediction='eps' cannot recover x_0 at zero terminal SNR (abar_T = 0); "
            "use prediction='v' or 'x0' with a rescaled schedule"
        )


def predict_x0(schedule: Schedule, model_output: Any, x_t: Any, t: Any, *, prediction: str = "eps") -> Any:
    """x0_hat implied by a model output of type ``prediction`` (shapes (B, ...))."""
    xp, x, out, t = _checked(schedule, model_output, x_t, t, prediction)
    return cast_like(_x0_eps(schedule, out, x, t, prediction, xp)[0], x_t, xp)


def predict_eps(schedule: Schedule, model_output: Any, x_t: Any, t: Any, *, prediction: str = "eps") -> Any:
    """eps_hat implied by a model output of type ``prediction`` (shapes (B, ...))."""
    xp, x, out, t = _checked(schedule, model_output, x_t, t, prediction)
    return cast_like(_x0_eps(schedule, out, x, t, prediction, xp)[1], x_t, xp)


def predict_v(schedule: Schedule, model_output: Any, x_t: Any, t: Any, *, prediction: str = "eps") -> Any:
    """v_hat = sqrt(abar_t) eps_hat - sqrt(1 - abar_t) x0_hat (Salimans & Ho 2022)."""
    xp, x, out, t = _checked(schedule, model_output, x_t, t, prediction)
    x0, eps = _x0_eps(schedule, out, x, t, prediction, xp)
    a, b = schedule.coefs(("sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod"), t, x, xp)
    return cast_like(a * eps - b * x0, x_t, xp)


def predict_mean(schedule: Schedule, model_output: Any, x_t: Any, t: Any, *, prediction: str = "eps") -> Any:
    """mu_theta = mu~_t(x_t, x0_hat), eq. (11) for eps-prediction."""
    xp, x, out, t = _checked(schedule, model_output, x_t, t, prediction, gathered=prediction != "mean")
    if prediction == "mean":
        return model_output
    x0 = _x0_eps(schedule, out, x, t, prediction, xp)[0]
    return cast_like(q_posterior_mean(schedule, x0, x, t, xp), x_t, xp)


# ---- clipping ---------------------------------------------------------------------------


def clip_x0(x0: Any, clip: Any = None, threshold: float | None = None) -> Any:
    """Clip x0_hat to the data range and/or apply dynamic thresholding (Saharia et al. 2022).

    Parameters
    ----------
    clip : None, True, float or (lo, hi)
        None: no clipping; True: [-1, 1]; c: [-c, c]; (lo, hi): that range.
    threshold : float in (0, 1], optional
        Dynamic thresholding: s = max(1, quantile(|x0|, threshold)) per sample, then
        x0 = clip(x0, -s, s) / s. Applied before ``clip``.
    """
    return _clip_x0(x0, clip, threshold, namespace(x0))


def _clip_x0(x0: Any, clip: Any, threshold: float | None, xp: Any) -> Any:
    """``clip_x0`` in a known namespace."""
    if threshold is not None:
        x0 = _dynamic_threshold(x0, threshold, xp)
    if clip is None or clip is False:
        return x0
    lo, hi = _clip_range(clip)
    return clip_to(x0, lo, hi, xp)


def _clip_range(clip: Any) -> tuple[float, float]:
    if clip is True:
        return -1.0, 1.0
    if isinstance(clip, (int, float)) and clip > 0:
        return -float(clip), float(clip)
    if isinstance(clip, tuple) and len(clip) == 2 and clip[0] < clip[1]:
        return float(clip[0]), float(clip[1])
    raise ValueError(f"clip must be None, True, a positive float or a (lo, hi) pair, got clip={clip!r}")


def _dynamic_threshold(x0: Any, threshold: float, xp: Any) -> Any:
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must lie in (0, 1], got threshold={threshold}")
    flat = xp.sort(xp.reshape(xp.abs(x0), (x0.shape[0], -1)), axis=1)
    pos = threshold * (flat.shape[1] - 1)
    lo = int(pos)
    hi = min(lo + 1, flat.shape[1] - 1)
    frac = pos - lo
    s = flat[:, lo] * (1.0 - frac) + flat[:, hi] * frac
    s = broadcast_to_batch(xp.clip(s, 1.0, None), x0.ndim, xp)  # max(s, 1) with no scalar copy
    return xp.clip(x0, -s, s) / s


# ---- variances and the reverse Gaussian -------------------------------------------------


def split_model_output(model_output: Any, variance: str, channels: int | None = None) -> tuple[Any, Any]:
    """Split a (B, 2C, ...) output of a learned-variance model into (prediction, var_values).

    Fixed variances return (model_output, None).
    """
    check_choice("variance", variance, VARIANCES)
    if variance in ("fixed_small", "fixed_large"):
        return model_output, None
    if model_output.ndim < 2 or model_output.shape[1] % 2:
        raise ValueError(
            f"variance={variance!r} needs model_output with an even number of channels on "
            f"axis 1 (prediction and variance halves), got model_output.shape="
            f"{tuple(model_output.shape)}"
        )
    c = model_output.shape[1] // 2
    if channels is not None and c != channels:
        raise ValueError(
            f"model_output has {2 * c} channels; variance={variance!r} expects 2 * {channels}"
        )
    return model_output[:, :c, ...], model_output[:, c:, ...]


# The tables ``_log_variance`` reads for each variance type.
LOG_VARIANCE_TABLES = {
    "fixed_small": ("posterior_log_variance_clipped",),
    "fixed_large": ("fixed_large_log_variance",),
    "learned": (),
    "learned_range": ("posterior_log_variance_clipped", "log_betas"),
}


def _log_variance(schedule: Schedule, var_values: Any, x_t: Any, t: Any, variance: str, xp: Any) -> Any:
    """log sigma_t^2 of eq. (1) for each variance type."""
    if variance in ("fixed_small", "fixed_large"):
        return schedule.coefs(LOG_VARIANCE_TABLES[variance], t, x_t, xp)[0]
    if variance == "learned":
        return var_values
    min_log, max_log = schedule.coefs(LOG_VARIANCE_TABLES[variance], t, x_t, xp)
    frac = (var_values + 1.0) / 2.0
    return frac * max_log + (1.0 - frac) * min_log


def step_tables(prediction: str, extra: tuple[str, ...]) -> tuple[str, ...]:
    """Every table a reverse step with ``prediction`` reads: x0_hat, mu~ and ``extra``."""
    names = _STEP_TABLES.get((prediction, extra))
    if names is None:
        names = _STEP_TABLES[prediction, extra] = tuple(
            dict.fromkeys(X0_EPS_TABLES[prediction] + MEAN_TABLES + extra))
    return names


_STEP_TABLES: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}


def _mean_x0(schedule: Schedule, pred: Any, x_t: Any, t: Any, prediction: str, clip: Any,
             threshold: float | None, xp: Any) -> tuple[Any, Any]:
    """(mu_theta, x0_hat): the reverse mean of eq. (11) via mu~(x_t, clipped x0_hat)."""
    terms, x0 = _mean_terms(schedule, pred, x_t, t, prediction, clip, threshold, xp)
    return (pred if prediction == "mean" else lincomb(xp, *terms)), x0


def _mean_terms(schedule: Schedule, pred: Any, x_t: Any, t: Any, prediction: str, clip: Any,
                threshold: float | None, xp: Any) -> tuple[tuple[tuple[Any, Any], ...], Any]:
    """(mu_theta as ``lincomb`` terms, x0_hat): a mean prediction is mu_theta itself."""
    x0 = _clip_x0(_x0_eps(schedule, pred, x_t, t, prediction, xp)[0], clip, threshold, xp)
    if prediction == "mean":
        return ((1.0, pred),), x0
    return posterior_mean_terms(schedule, x0, x_t, t, xp), x0


def p_mean_variance(
    schedule: Schedule,
    model_output: Any,
    x_t: Any,
    t: Any,
    *,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip: Any = None,
    threshold: float | None = None,
) -> MeanVariance:
    """The reverse Gaussian p_theta(x_{t-1} | x_t) of eq. (1) from a model output.

    Parameters
    ----------
    model_output : array, shape (B, C, ...) or (B, 2C, ...) for learned variances
    x_t : array, shape (B, C, ...)
    t : int or int array (B,), 0-based
    prediction : {"eps", "x0", "v", "mean"}
    variance : {"fixed_small", "fixed_large", "learned", "learned_range"}
    clip, threshold : see ``clip_x0``; applied to x0_hat before the mean is formed.

    Returns
    -------
    MeanVariance(mean, variance, log_variance, x0_hat); variance and log_variance are
    (B, 1, ..., 1) for fixed variances and (B, C, ...) for learned ones.
    """
    check_choice("prediction", prediction, PREDICTIONS)
    check_choice("variance", variance, VARIANCES)
    check_batch("x_t", x_t)
    pred, var_values = split_model_output(model_output, variance)
    check_same_shape("x_t", x_t, "model_output (prediction part)", pred)
    _check_zero_snr(schedule, prediction)
    xp = namespace(x_t)
    t = as_timesteps(t, x_t, schedule.num_timesteps, gathered=True)
    x = upcast(x_t, xp)
    t = schedule.tables_at(step_tables(prediction, LOG_VARIANCE_TABLES[variance]), t, x, xp)
    var_values = None if var_values is None else upcast(var_values, xp)
    mean, x0 = _mean_x0(schedule, upcast(pred, xp), x, t, prediction, clip, threshold, xp)
    log_var = _log_variance(schedule, var_values, x, t, variance, xp)
    return MeanVariance(cast_like(mean, x_t, xp), xp.exp(log_var), log_var, cast_like(x0, x_t, xp))


# ---- the score (Ho et al. 2020, section 3.2; Dhariwal & Nichol 2021, section 4.2) -------


def predict_score(schedule: Schedule, model_output: Any, x_t: Any, t: Any, *, prediction: str = "eps") -> Any:
    r"""The score grad_x log q(x_t) implied by a model output: eps read as a scaled score.

    .. math:: \nabla_{x_t} \log q(x_t) \approx -\hat\epsilon / \sqrt{1 - \bar\alpha_t}

    exact for the ideal eps-predictor, eps_hat = E[eps | x_t] (Tweedie's formula on eq. 4).
    Classifier guidance adds s times a classifier's score to it
    (``ddpm_core.guidance``). Shapes (B, ...); ``t`` an int or an int array (B,).

    Examples
    --------
    >>> import numpy as np
    >>> s = Schedule.from_alphas_cumprod(np.array([0.75]))
    >>> predict_score(s, np.ones((1, 2)), np.zeros((1, 2)), 0)   # -1 / sqrt(0.25)
    array([[-2., -2.]])
    """
    xp, x, out, t = _checked(schedule, model_output, x_t, t, prediction)
    eps = _x0_eps(schedule, out, x, t, prediction, xp)[1]
    (root,) = schedule.coefs(("sqrt_one_minus_alphas_cumprod",), t, x, xp)
    return cast_like(-eps / root, x_t, xp)


def eps_from_score(schedule: Schedule, score: Any, t: Any) -> Any:
    r"""The noise prediction of a score, the inverse of :func:`predict_score`.

    .. math:: \hat\epsilon = -\sqrt{1 - \bar\alpha_t}\,\nabla_{x_t} \log q(x_t)

    Examples
    --------
    >>> import numpy as np
    >>> s = Schedule.from_alphas_cumprod(np.array([0.75]))
    >>> eps_from_score(s, np.full((1, 2), -2.0), 0)
    array([[1., 1.]])
    """
    check_batch("score", score)
    xp = namespace(score)
    t = as_timesteps(t, score, schedule.num_timesteps)
    sc = upcast(score, xp)
    (root,) = schedule.coefs(("sqrt_one_minus_alphas_cumprod",), t, sc, xp)
    return cast_like(-root * sc, score, xp)
