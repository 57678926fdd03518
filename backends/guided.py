r"""Guided sampling steps on the array API, shared by the PyTorch and the JAX backend.

The backend supplies the network call and the classifier's gradient; everything else is
the core's: :func:`ddpm_core.classifier_free_guidance` (G1, G2),
:func:`ddpm_core.classifier_guidance_mean` (G3) and
:func:`ddpm_core.classifier_guidance_eps` (G4), then the core's ``ddpm_step`` or
``ddim_step``. Both functions work on any array namespace, under ``jax.jit`` too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ddpm_core import (
    classifier_free_guidance,
    classifier_guidance_eps,
    classifier_guidance_mean,
    ddim_step,
    ddpm_step,
    p_mean_variance,
    predict_eps,
)
from ddpm_core._namespace import namespace
from ddpm_core.samplers import StepResult
from ddpm_core.schedules import Schedule

__all__ = ["cfg_output", "classifier_guided_step"]


def cfg_output(call: Callable[[Any, Any, Any], Any], x: Any, t: Any, y: Any, null: int,
               scale: float, *, rescale: float = 0.0, variance: str = "fixed_small") -> Any:
    r"""The classifier-free guided model output (G1, G2) from ONE batched network call.

    The conditional and unconditional passes are one call on ``[x, x]`` with labels
    ``[y, null]``; the halves are combined by :func:`ddpm_core.classifier_free_guidance`
    (learned-variance channels come from the conditional half).

    Parameters
    ----------
    call : ``(x (2B, C, ...), t (2B,), y (2B,)) -> float32 output (2B, C or 2C, ...)``
    x : (B, C, ...) ; t : (B,) int ; y : (B,) int labels in [0, K)
    null : int
        The null label K.
    scale, rescale, variance : see :func:`ddpm_core.classifier_free_guidance`

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


def classifier_guided_step(schedule: Schedule, model_output: Any, x: Any, i: Any, noise: Any,
                           grad: Any, *, scale: float, sampler: str = "ddpm", eta: float = 0.0,
                           prediction: str = "eps", variance: str = "fixed_small",
                           clip: Any = None) -> StepResult:
    r"""One classifier-guided reverse step at index ``i`` of ``schedule``.

    ``grad`` is :math:`\nabla_{x_t} \log p_\phi(y \mid x_t, t)` from the classifier called
    with the ORIGINAL-chain step ``schedule.timesteps[i]`` (the diffusion model's t).

    - ancestral (``"ddpm"``): mu' = mu + s Sigma grad (G3) with mu, Sigma of
      ``p_mean_variance`` (x0_hat clipped as ``clip`` says), then
      x_{t-1} = mu' + sigma_t z through ``ddpm_step(prediction="mean")``, so sigma_t and the
      noise are the unguided step's;
    - DDIM: eps' = eps - s sqrt(1 - abar_i) grad (G4) on the eps implied by the output (a
      learned variance head is ignored, as in the unguided DDIM), then ``ddim_step`` with
      ``prediction="eps"`` recomputes x0_hat (clipped as ``clip`` says) and the step.

    Parameters
    ----------
    model_output : (B, C, ...) or (B, 2C, ...) for learned variances
    x, noise, grad : (B, C, ...)
    i : int or int array (B,), the respaced index (``noise`` unused where the step adds none)

    Returns
    -------
    StepResult(x_prev, x0_hat)
    """
    c = x.shape[1]
    if sampler == "ddim":
        eps = predict_eps(schedule, model_output[:, :c, ...], x, i, prediction=prediction)
        eps = classifier_guidance_eps(schedule, eps, i, grad, scale=scale)
        return ddim_step(schedule, eps, x, i, i - 1, noise if eta > 0 else None, eta=eta,
                         prediction="eps", clip=clip)
    pmv = p_mean_variance(schedule, model_output, x, i, prediction=prediction,
                          variance=variance, clip=clip)
    mean = classifier_guidance_mean(pmv.mean, pmv.variance, grad, scale=scale)
    if variance in ("learned", "learned_range"):
        mean = namespace(x).concat([mean, model_output[:, c:, ...]], axis=1)
    return ddpm_step(schedule, mean, x, i, noise, prediction="mean", variance=variance)
