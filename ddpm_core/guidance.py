r"""Guided sampling: classifier-free guidance and classifier guidance, as pure functions.

Both kinds of guidance steer a sampler towards a class y without changing the sampler:
they modify one step's model output (or reverse mean) and hand it back. Nothing here calls
a network; the backend evaluates the conditional and unconditional passes, or the
classifier's gradient, and passes the arrays in.

Classifier-free guidance (Ho & Salimans 2022). A class-conditional model eps(x_t, t, y) is
trained with y replaced by the null label K with probability p_uncond (0.1-0.2), so that
eps(x_t, t, K) is the unconditional model. Sampling combines both passes:

.. math::
    \tilde\epsilon = \epsilon(x_t, t, \varnothing)
        + s\,\big(\epsilon(x_t, t, y) - \epsilon(x_t, t, \varnothing)\big)    \quad (G1)

s = 1 is the plain conditional model and s = 0 the unconditional one (diffusers'
``guidance_scale``). Ho & Salimans write
:math:`\tilde\epsilon = (1 + w)\,\epsilon(x_t, t, y) - w\,\epsilon(x_t, t, \varnothing)`,
so their w is s - 1. Only the prediction channels are guided; learned-variance channels
come from the conditional pass. The optional rescale of Lin et al. 2024 (section 3.4)
matches the guided output's standard deviation to the conditional one's, per sample over
all non-batch axes, and mixes:

.. math::
    \epsilon_r = \tilde\epsilon\,\frac{\operatorname{std}(\epsilon_c)}
                                      {\operatorname{std}(\tilde\epsilon)}, \qquad
    \epsilon_\phi = \phi\,\epsilon_r + (1 - \phi)\,\tilde\epsilon                (G2)

Classifier guidance (Dhariwal & Nichol 2021) with a classifier p_phi(y | x_t, t) trained
on noised inputs x_t = q_sample(x_0, t, eps) at uniform t. The ancestral step
(their Algorithm 1) moves the reverse mean and keeps the variance and the noise:

.. math::
    \mu' = \mu + s\,\Sigma\,\nabla_{x_t} \log p_\phi(y \mid x_t, t)               (G3)

DDIM (their Algorithm 2) moves eps, and x0_hat and the step are recomputed from it:

.. math::
    \epsilon' = \epsilon - s\,\sqrt{1 - \bar\alpha_t}\,
                \nabla_{x_t} \log p_\phi(y \mid x_t, t)                          (G4)

(G4) rests on the reading of eps as a scaled score (Ho et al. 2020, section 3.2):
:math:`\nabla_{x_t} \log q(x_t) \approx -\epsilon_\theta(x_t, t) / \sqrt{1-\bar\alpha_t}`
(``ddpm_core.parameterization.predict_score`` and ``eps_from_score``), so adding
s times the classifier's score to the model's score is (G4).

Timesteps on a respaced chain: ``t`` in :func:`classifier_guidance_eps` indexes the
schedule it is given (a respaced schedule's own index), but the classifier was trained on
the original chain and must be called with the original-chain step
``schedule.timesteps[t]``, the same ``t_model`` the sampling loop gives the diffusion model.

References
----------
Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", arXiv:2207.12598.
Dhariwal & Nichol 2021, "Diffusion Models Beat GANs on Image Synthesis", arXiv:2105.05233.
Lin, Liu, Li, Yang 2024, "Common Diffusion Noise Schedules and Sample Steps Are Flawed",
arXiv:2305.08891.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

from ddpm_core._arith import _broadcasts_into, lincomb
from ddpm_core._namespace import cast_like, namespace, upcast
from ddpm_core.checks import as_timesteps, check_batch, check_same_shape
from ddpm_core.parameterization import split_model_output
from ddpm_core.schedules import Schedule

__all__ = ["cfg_output", "classifier_free_guidance", "classifier_guidance_mean", "classifier_guidance_eps"]


def _check_finite(name: str, value: Any) -> float:
    """``value`` as a Python float; a clear error unless it is a finite real number.

    Arrays are refused on purpose: checking an array's value would synchronise with its
    device (and fail under ``jax.jit``); the scale is a sampling setting, not data.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite real number (a Python float), got {name}={value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {name}={value}")
    return value


def classifier_free_guidance(
    cond: Any,
    uncond: Any,
    scale: float,
    *,
    rescale: float = 0.0,
    variance: str = "fixed_small",
    channels: int | None = None,
) -> Any:
    r"""Classifier-free guidance (G1), optionally rescaled (G2).

    .. math:: \tilde\epsilon = (1 - s)\,\epsilon_u + s\,\epsilon_c

    which is (G1) written so that s = 1 returns ``cond`` and s = 0 returns ``uncond``
    exactly (bit for bit). The combination is linear, so it is the same guidance for
    any parameterisation of the output (eps, x0, v or the mean): they are affine in the
    output at fixed x_t. (G2) is not: Lin et al. apply it to the v-prediction.

    Parameters
    ----------
    cond, uncond : array, shape (B, C, ...) or (B, 2C, ...) for learned variances
        The model's outputs with the labels y and with the null label, on the same x_t
        and t.
    scale : float
        The guidance scale s (finite). s = 1: the conditional model; s = 0: the
        unconditional one; Ho & Salimans' w = s - 1.
    rescale : float in [0, 1]
        phi of (G2). The default 0.0 turns the rescale off, so the result is Ho &
        Salimans' guidance unchanged and s = 1 is the conditional model exactly. Lin et
        al. use 0.7 with large scales on zero-terminal-SNR schedules, where plain
        guidance over-exposes images. The standard-deviation ratio is taken as 1 for a
        sample whose guided prediction is constant (std 0), instead of dividing by 0.
    variance : {"fixed_small", "fixed_large", "learned", "learned_range"}
        The model's variance type: with ``"learned"`` / ``"learned_range"`` the outputs
        have 2C channels on axis 1, only the first C are guided and the last C are
        ``cond``'s, passed through.
    channels : int, optional
        The image channels C, checked against the outputs when given.

    Returns
    -------
    array, the shape, namespace and dtype of ``cond``.

    Examples
    --------
    >>> import numpy as np
    >>> c, u = np.full((1, 2), 3.0), np.full((1, 2), 1.0)
    >>> classifier_free_guidance(c, u, 2.0)          # 1 + 2 * (3 - 1)
    array([[5., 5.]])
    >>> out = np.array([[[3.0], [7.0]]])             # (B, 2C, 1): prediction, variance
    >>> classifier_free_guidance(out, np.zeros_like(out), 4.0, variance="learned")[:, :, 0]
    array([[12.,  7.]])
    """
    scale = _check_finite("scale", scale)
    rescale = _check_finite("rescale", rescale)
    if not 0.0 <= rescale <= 1.0:
        raise ValueError(f"rescale must lie in [0, 1], got rescale={rescale}")
    check_batch("cond", cond)
    check_same_shape("cond", cond, "uncond", uncond)
    pred_c, var_c = split_model_output(cond, variance, channels)
    pred_u = split_model_output(uncond, variance, channels)[0]
    if channels is not None and var_c is None and (cond.ndim < 2 or cond.shape[1] != channels):
        raise ValueError(f"cond must have channels={channels} on axis 1, got cond.shape={tuple(cond.shape)}")
    if rescale > 0.0 and cond.ndim < 2:
        raise ValueError(f"rescale > 0 needs per-sample outputs (B, ...), got cond.shape={tuple(cond.shape)}")
    xp = namespace(cond)
    c = upcast(pred_c, xp)
    guided = lincomb(xp, (1.0 - scale, upcast(pred_u, xp)), (scale, c))
    if rescale > 0.0:
        guided = _rescale(guided, c, rescale, xp)
    guided = cast_like(guided, cond, xp)
    return guided if var_c is None else xp.concat([guided, var_c], axis=1)


def _rescale(guided: Any, cond: Any, phi: float, xp: Any) -> Any:
    """(G2) as one per-sample factor: guided * (1 + phi * (std(cond) / std(guided) - 1)).

    Written as a factor, s = 1 (guided == cond, ratio exactly 1) returns ``guided`` exactly.
    """
    axes = tuple(range(1, guided.ndim))
    std_c = xp.std(cond, axis=axes, keepdims=True)
    std_g = xp.std(guided, axis=axes, keepdims=True)
    ones = xp.ones_like(std_g)
    nonzero = std_g > 0
    ratio = xp.where(nonzero, std_c / xp.where(nonzero, std_g, ones), ones)
    return guided * (1.0 + phi * (ratio - 1.0))


def classifier_guidance_mean(mean: Any, variance: Any, grad: Any, *, scale: float) -> Any:
    r"""Classifier guidance of the ancestral step (G3), Dhariwal & Nichol's Algorithm 1.

    .. math:: \mu' = \mu + s\,\Sigma\,\nabla_{x_t} \log p_\phi(y \mid x_t, t)

    The step then draws x_{t-1} = mu' + sigma_t z with the unchanged sigma_t and noise.

    Parameters
    ----------
    mean : array (B, C, ...)
        The reverse mean mu_theta(x_t, t) (``p_mean_variance(...).mean``).
    variance : array (B, 1, ..., 1) or (B, C, ...)
        Sigma, the reverse variance (``p_mean_variance(...).variance``; full-shaped for
        learned variances).
    grad : array (B, C, ...)
        grad_x log p_phi(y | x_t, t) per sample, from the backend's autograd.
    scale : float
        The classifier scale s (finite); 0 returns ``mean`` exactly (for a finite ``grad``).

    Returns
    -------
    array, the shape, namespace and dtype of ``mean``.

    Examples
    --------
    >>> import numpy as np
    >>> classifier_guidance_mean(np.zeros((1, 2)), np.full((1, 1), 0.5), np.ones((1, 2)), scale=3.0)
    array([[1.5, 1.5]])
    """
    scale = _check_finite("scale", scale)
    check_batch("mean", mean)
    check_same_shape("mean", mean, "grad", grad)
    shape, vshape = tuple(mean.shape), tuple(getattr(variance, "shape", ()))
    if len(vshape) != len(shape) or vshape[0] != shape[0] or not _broadcasts_into(vshape, shape):
        raise ValueError(
            f"variance must have shape (B, 1, ..., 1) or mean's shape {shape} (B = {shape[0]}), "
            f"got variance.shape={vshape}"
        )
    xp = namespace(mean)
    coef = upcast(variance, xp) * scale  # (B, 1, ..., 1): one fused multiply-add under torch
    return cast_like(lincomb(xp, (1.0, upcast(mean, xp)), (coef, upcast(grad, xp))), mean, xp)


def classifier_guidance_eps(schedule: Schedule, eps: Any, t: Any, grad: Any, *, scale: float) -> Any:
    r"""Classifier guidance of the DDIM step (G4), Dhariwal & Nichol's Algorithm 2.

    .. math:: \epsilon' = \epsilon - s\,\sqrt{1 - \bar\alpha_t}\,
              \nabla_{x_t} \log p_\phi(y \mid x_t, t)

    Give the result to ``ddim_step(..., prediction="eps")``, which recomputes x0_hat and
    the step from it. A model of another parameterisation converts its output first with
    ``predict_eps``.

    Parameters
    ----------
    schedule : Schedule
        The schedule the sampler steps through (respaced or not).
    eps : array (B, C, ...)
        The noise prediction eps_theta(x_t, t) (the prediction channels only).
    t : int or int array (B,)
        0-based index into ``schedule``: on a respaced schedule its own index i, whose
        abar is the original chain's abar at ``schedule.timesteps[i]``. The classifier
        itself must have been called with that original-chain step
        ``schedule.timesteps[i]``, not with i.
    grad : array (B, C, ...)
        grad_x log p_phi(y | x_t, t) per sample, from the backend's autograd.
    scale : float
        The classifier scale s (finite); 0 returns ``eps`` exactly (for a finite ``grad``).

    Returns
    -------
    array, the shape, namespace and dtype of ``eps``.

    Examples
    --------
    >>> import numpy as np
    >>> s = Schedule.from_alphas_cumprod(np.array([0.75, 0.5]))
    >>> classifier_guidance_eps(s, np.zeros((1, 2)), 1, np.ones((1, 2)), scale=2.0)
    array([[-1.41421356, -1.41421356]])
    """
    scale = _check_finite("scale", scale)
    check_batch("eps", eps)
    check_same_shape("eps", eps, "grad", grad)
    t = as_timesteps(t, eps, schedule.num_timesteps, scalar_ok=True)
    xp = namespace(eps)
    e = upcast(eps, xp)
    (root,) = schedule.coefs(("sqrt_one_minus_alphas_cumprod",), t, e, xp)
    return cast_like(lincomb(xp, (1.0, e), (-scale * root, upcast(grad, xp))), eps, xp)


def cfg_output(call: Callable[[Any, Any, Any], Any], x: Any, t: Any, y: Any, null: int,
               scale: float, *, rescale: float = 0.0, variance: str = "fixed_small") -> Any:
    r"""The classifier-free guided model output (G1, G2) from ONE batched network call.

    The conditional and unconditional passes are one call on ``[x, x]`` with labels
    ``[y, null]``; the halves are combined by :func:`classifier_free_guidance`
    (learned-variance channels come from the conditional half).

    Parameters
    ----------
    call : ``(x (2B, C, ...), t (2B,), y (2B,)) -> float32 output (2B, C or 2C, ...)``
    x : (B, C, ...) ; t : (B,) int ; y : (B,) int labels in [0, K)
    null : int
        The null label K.
    scale, rescale, variance : see :func:`classifier_free_guidance`

    Returns
    -------
    (B, C or 2C, ...), the dtype of ``call``'s output.
    """
    xp = namespace(x)
    b = x.shape[0]
    out = call(xp.concat([x, x], axis=0), xp.concat([t, t], axis=0),
               xp.concat([y, xp.full_like(y, null)], axis=0))
    return classifier_free_guidance(out[:b, ...], out[b:, ...], scale, rescale=rescale,
                                    variance=variance, channels=x.shape[1])
