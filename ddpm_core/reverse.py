r"""The reverse chain: the one step every chain calls, and the chain as a Python loop.

:func:`reverse_step` is the sampling counterpart of ``training_losses``: given one network
output it picks the step function of the sampler (Algorithm 2 for ``"ddpm"``, DDIM for
``"ddim"``, DPM-Solver++(2M) and its SDE variant for ``"dpmpp-2m"`` and ``"dpmpp-2m-sde"``),
splits the prediction from a learned-variance head (the deterministic samplers ignore the
head) and applies classifier guidance (G3 for the ancestral step, G4 for the others) when it
is given the classifier's gradient. Every chain of the library calls it: :func:`sample_loop` here, the
PyTorch backend's CUDA-graph chain and the JAX backend's ``lax.scan``. A new sampler is one
change here (plus, where a backend compiles the chain, the state it carries).

Steps are pure: they take everything they need (x_t, the index i, the model output, the
noise) and return the next state. The core owns no random number generator: noise comes in
as arrays, or from a ``noise_fn(i)`` callable that the caller builds on its own generator.

Equations: docs/equations.md (Algorithm 2, DDIM, G3, G4).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ddpm_core._namespace import device_of, index_dtype, namespace
from ddpm_core.checks import as_timesteps, check_all, check_batch, check_choice, check_same_shape
from ddpm_core.dpm_solver import dpmpp_2m_sde_step, dpmpp_2m_step
from ddpm_core.forward import _q_sample
from ddpm_core.guidance import classifier_guidance_eps, classifier_guidance_mean
from ddpm_core.parameterization import LEARNED_VARIANCES, p_mean_variance, predict_eps, split_model_output
from ddpm_core.samplers import (
    DEFAULT_DDIM_EPS,
    MULTISTEP,
    SAMPLERS,
    SampleStep,
    StepResult,
    _check_step,
    _ddim_back,
    ddpm_step,
    needs_noise,
)
from ddpm_core.schedules import Schedule

__all__ = ["classifier_guided_step", "interpolate", "mix_latents", "prediction_part", "reverse_step",
           "sample", "sample_loop"]


def prediction_part(model_output: Any, x: Any) -> Any:
    """The prediction channels of a model output: (B, 2C, ...) -> (B, C, ...), else as is."""
    if model_output.ndim >= 2 and model_output.shape[1] == 2 * x.shape[1]:
        return model_output[:, : x.shape[1], ...]
    return model_output


def reverse_step(
    schedule: Schedule,
    model_output: Any,
    x_t: Any,
    i: Any,
    noise: Any = None,
    *,
    sampler: str = "ddpm",
    eta: float = 0.0,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip: Any = None,
    threshold: float | None = None,
    grad: Any = None,
    classifier_scale: float = 0.0,
    ddim_eps: str = DEFAULT_DDIM_EPS,
    x0_prev: Any = None,
    start: int | None = None,
    solver_type: str = "midpoint",
) -> StepResult:
    r"""One step of the reverse chain, from index ``i`` of ``schedule`` to ``i - 1``.

    - ``"ddpm"``: ``ddpm_step`` (Algorithm 2) with the variance of ``variance`` (a learned
      variance from the output's second half);
    - ``"ddim"``: ``ddim_step`` from ``i`` to ``i - 1`` with ``eta`` and ``ddim_eps`` (the eps
      after clipping x0_hat); a learned variance head is ignored (its channels are split off);
    - ``"dpmpp-2m"`` / ``"dpmpp-2m-sde"``: ``ddpm_core.dpm_solver``'s DPM-Solver++(2M) and
      SDE-DPM-Solver++(2M) (``solver_type`` its second-order correction), multistep: ``x0_prev``
      is the x0_hat the previous step of this chain returned (None, or anything at the
      chain's first index ``start``, default T - 1: a first-order step there); the variance
      head is ignored as for DDIM;
    - ``grad`` (the classifier's :math:`\nabla_{x_t}\log p_\phi(y|x_t, t)`, called at the
      original-chain step ``schedule.timesteps[i]``) with ``classifier_scale`` s: the
      classifier-guided step (:func:`classifier_guided_step`).

    Parameters
    ----------
    model_output : (B, C, ...), or (B, 2C, ...) for learned variances
    x_t, noise, grad, x0_prev : (B, C, ...); ``noise`` may be None where the step adds none
        (DDIM with eta = 0, DPM-Solver++(2M), or every i == 0)
    i : int or int array (B,), the index into ``schedule`` (a respaced schedule's own)

    Returns
    -------
    StepResult(x_prev, x0_hat), both (B, C, ...)
    """
    check_choice("sampler", sampler, SAMPLERS)
    if grad is not None:
        return classifier_guided_step(schedule, model_output, x_t, i, noise, grad, scale=classifier_scale,
                                      sampler=sampler, eta=eta, prediction=prediction, variance=variance,
                                      clip=clip, threshold=threshold, ddim_eps=ddim_eps, x0_prev=x0_prev,
                                      start=start, solver_type=solver_type)
    if sampler in MULTISTEP:
        return _multistep(schedule, sampler, prediction_part(model_output, x_t), x_t, i, x0_prev, noise,
                          start=start, prediction=prediction, clip=clip, threshold=threshold, solver_type=solver_type)
    if sampler == "ddpm":
        return ddpm_step(schedule, model_output, x_t, i, noise, prediction=prediction, variance=variance,
                         clip=clip, threshold=threshold)
    return _ddim_back(schedule, prediction_part(model_output, x_t), x_t, i, noise if eta > 0 else None,
                      eta=eta, prediction=prediction, clip=clip, threshold=threshold, ddim_eps=ddim_eps)


def classifier_guided_step(schedule: Schedule, model_output: Any, x: Any, i: Any, noise: Any,
                           grad: Any, *, scale: float, sampler: str = "ddpm", eta: float = 0.0,
                           prediction: str = "eps", variance: str = "fixed_small",
                           clip: Any = None, threshold: float | None = None,
                           ddim_eps: str = DEFAULT_DDIM_EPS, x0_prev: Any = None, start: int | None = None,
                           solver_type: str = "midpoint") -> StepResult:
    r"""One classifier-guided reverse step at index ``i`` of ``schedule``.

    ``grad`` is :math:`\nabla_{x_t} \log p_\phi(y \mid x_t, t)` from the classifier called
    with the ORIGINAL-chain step ``schedule.timesteps[i]`` (the diffusion model's t).

    - ancestral (``"ddpm"``): mu' = mu + s Sigma grad (G3) with mu, Sigma of
      ``p_mean_variance`` (x0_hat clipped as ``clip`` says), then
      x_{t-1} = mu' + sigma_t z through ``ddpm_step(prediction="mean")``, so sigma_t and the
      noise are the unguided step's;
    - DDIM: eps' = eps - s sqrt(1 - abar_i) grad (G4) on the eps implied by the output (a
      learned variance head is ignored, as in the unguided DDIM), then ``ddim_step`` with
      ``prediction="eps"`` recomputes x0_hat (clipped as ``clip`` says) and the step (with
      ``ddim_eps="network"`` the guided eps is kept after the clipping);
    - DPM-Solver++ (``"dpmpp-2m"``, ``"dpmpp-2m-sde"``): eps moved as for DDIM (G4), then the
      solver's step with ``prediction="eps"`` (x0_hat from the guided eps).

    Parameters
    ----------
    model_output : (B, C, ...) or (B, 2C, ...) for learned variances
    x, noise, grad : (B, C, ...)
    i : int or int array (B,), the respaced index (``noise`` unused where the step adds none)
    """
    c = x.shape[1]
    if sampler in MULTISTEP:
        eps = predict_eps(schedule, model_output[:, :c, ...], x, i, prediction=prediction)
        eps = classifier_guidance_eps(schedule, eps, i, grad, scale=scale)
        return _multistep(schedule, sampler, eps, x, i, x0_prev, noise, start=start, prediction="eps", clip=clip,
                          threshold=threshold, solver_type=solver_type)
    if sampler == "ddim":
        eps = predict_eps(schedule, model_output[:, :c, ...], x, i, prediction=prediction)
        eps = classifier_guidance_eps(schedule, eps, i, grad, scale=scale)
        return _ddim_back(schedule, eps, x, i, noise if eta > 0 else None, eta=eta,
                          prediction="eps", clip=clip, threshold=threshold, ddim_eps=ddim_eps)
    pmv = p_mean_variance(schedule, model_output, x, i, prediction=prediction,
                          variance=variance, clip=clip, threshold=threshold)
    mean = classifier_guidance_mean(pmv.mean, pmv.variance, grad, scale=scale)
    if variance in LEARNED_VARIANCES:
        mean = namespace(x).concat([mean, model_output[:, c:, ...]], axis=1)
    return ddpm_step(schedule, mean, x, i, noise, prediction="mean", variance=variance)


def _multistep(schedule: Schedule, sampler: str, pred: Any, x: Any, i: Any, x0_prev: Any, noise: Any,
               **kw: Any) -> StepResult:
    if sampler == "dpmpp-2m":
        return dpmpp_2m_step(schedule, pred, x, i, x0_prev, **kw)
    return dpmpp_2m_sde_step(schedule, pred, x, i, x0_prev, noise, **kw)


def sample_loop(
    schedule: Schedule,
    model: Callable[[Any, Any], Any],
    x_T: Any,
    noise_fn: Callable[[int], Any] | None,
    *,
    sampler: str = "ddpm",
    eta: float = 0.0,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip: Any = None,
    threshold: float | None = None,
    start: int | None = None,
    classifier_grad: Callable[[Any, Any], Any] | None = None,
    classifier_scale: float = 0.0,
    ddim_eps: str = DEFAULT_DDIM_EPS,
    solver_type: str = "midpoint",
) -> Iterator[SampleStep]:
    """Run the reverse chain from ``x_T``, yielding every step (progressive generation).

    For each step index i = start..0 (default start = T - 1) the model is called as
    ``model(x, t_model)`` with ``t_model`` the integer vector of the original-chain index
    ``schedule.timesteps[i]``; ``noise_fn(i)`` supplies the standard normal draws of step i
    (never called for i == 0, nor for DDIM with eta == 0 or ``"dpmpp-2m"``, where it may be
    None). Each step is
    :func:`reverse_step`; with ``classifier_grad(x, t_model)`` (the classifier's gradient at
    the model's step) it is classifier-guided with ``classifier_scale``. For a respaced
    ``schedule``, the DDPM sampler is exact on the shorter chain (its betas are re-derived)
    and DDIM steps between consecutive kept steps.

    Yields
    ------
    SampleStep(step, x, x0_hat), with ``x`` the state after step ``step``.
    """
    check_choice("sampler", sampler, SAMPLERS)
    check_batch("x_T", x_T)
    _check_step(schedule, x_T, prediction, variance)
    T = schedule.num_timesteps
    start = T - 1 if start is None else start
    if not 0 <= start < T:
        raise ValueError(f"start must lie in [0, {T}), got start={start}")
    if sampler != "ddpm" and variance in LEARNED_VARIANCES:
        variance = "fixed_small"  # only the ancestral step reads the variance head (reverse_step splits it off)
    noisy = needs_noise(sampler, eta)
    if noisy and noise_fn is None and start > 0:
        raise ValueError(f"noise_fn is required for sampler={sampler!r} with eta={eta}")
    kw = {"sampler": sampler, "eta": eta, "prediction": prediction, "variance": variance, "clip": clip,
          "threshold": threshold, "classifier_scale": classifier_scale, "ddim_eps": ddim_eps,
          "solver_type": solver_type, "start": start}
    return _loop(schedule, model, x_T, noise_fn, kw, start, noisy, classifier_grad)


def _loop(schedule, model, x, noise_fn, kw, start, needs_noise, classifier_grad):
    xp = namespace(x)
    dev = device_of(x)
    t_dtype = index_dtype(xp, dev)
    zeros = x0_prev = None
    for i in range(start, -1, -1):
        t_model = xp.full((x.shape[0],), int(schedule.timesteps[i]), dtype=t_dtype, device=dev)
        out = model(x, t_model)
        pred = split_model_output(out, kw["variance"])[0] if kw["sampler"] == "ddpm" else prediction_part(out, x)
        check_same_shape("x", x, "model output (prediction part)", pred)
        if needs_noise and i > 0:
            noise = noise_fn(i)
            check_same_shape("x", x, f"noise_fn({i})", noise)
        else:
            noise = zeros = xp.zeros_like(x) if zeros is None else zeros
        grad = None if classifier_grad is None else classifier_grad(x, t_model)
        step = reverse_step(schedule, out, x, i, noise, grad=grad, x0_prev=x0_prev, **kw)
        x, x0_prev = step.x_prev, step.x0_hat
        yield SampleStep(i, x, step.x0_hat)


def sample(
    schedule: Schedule,
    model: Callable[[Any, Any], Any],
    x_T: Any,
    noise_fn: Callable[[int], Any] | None,
    **kwargs: Any,
) -> Any:
    """The final x_0 of ``sample_loop`` (same arguments).

    Examples
    --------
    >>> import numpy as np
    >>> s = Schedule.linear(50, 1e-3, 0.2)
    >>> rng = np.random.default_rng(0)
    >>> model = lambda x, t: np.zeros_like(x)  # predicts eps = 0
    >>> x0 = sample(s, model, rng.standard_normal((4, 2)), lambda i: rng.standard_normal((4, 2)))
    >>> x0.shape
    (4, 2)
    """
    x = None
    for step in sample_loop(schedule, model, x_T, noise_fn, **kwargs):
        x = step.x
    return x


def mix_latents(schedule: Schedule, x0_a: Any, x0_b: Any, lam: Any, t: Any, noise_a: Any,
                noise_b: Any) -> Any:
    r"""Both inputs encoded to step ``t`` with q(x_t | x_0) (eq. 4) and mixed (Figure 8):
    :math:`(1 - \lambda)\,x_t^a + \lambda\,x_t^b`.

    Parameters
    ----------
    x0_a, x0_b, noise_a, noise_b : (B, ...)
    lam : float or array (B,) in [0, 1]
    t : int, or int array (B,), the 0-based step to encode to
    """
    check_same_shape("x0_a", x0_a, "x0_b", x0_b)
    check_same_shape("x0_a", x0_a, "noise_a", noise_a)
    check_same_shape("x0_a", x0_a, "noise_b", noise_b)
    xp = namespace(x0_a)
    tt = as_timesteps(t, x0_a, schedule.num_timesteps, scalar_ok=True)
    lam_arr = xp.asarray(lam, dtype=x0_a.dtype, device=device_of(x0_a))
    if lam_arr.ndim > 1 or (lam_arr.ndim == 1 and lam_arr.shape[0] != x0_a.shape[0]):
        raise ValueError(f"lam must be a float or an array of shape ({x0_a.shape[0]},), got shape "
                         f"{tuple(lam_arr.shape)}")
    check_all((lam_arr >= 0.0) & (lam_arr <= 1.0), "lam must lie in [0, 1] (the mixing weight)",
              values=lam_arr)
    if lam_arr.ndim == 1:
        lam_arr = xp.reshape(lam_arr, (-1,) + (1,) * (x0_a.ndim - 1))
    return (1.0 - lam_arr) * _q_sample(schedule, x0_a, tt, noise_a, xp) + lam_arr * _q_sample(
        schedule, x0_b, tt, noise_b, xp)


def interpolate(
    schedule: Schedule,
    model: Callable[[Any, Any], Any],
    x0_a: Any,
    x0_b: Any,
    lam: Any,
    t: int,
    noise_a: Any,
    noise_b: Any,
    noise_fn: Callable[[int], Any] | None,
    **kwargs: Any,
) -> Any:
    r"""Interpolate in latent space (the paper's Figure 8) and decode.

    Both inputs are encoded to step ``t`` and mixed (:func:`mix_latents`), then denoised
    from ``t`` down to x_0 with ``sample_loop(..., start=t)``.

    Parameters
    ----------
    x0_a, x0_b, noise_a, noise_b : (B, ...)
    lam : float or array (B,) in [0, 1]
    t : int, the 0-based step to encode to
    """
    mixed = mix_latents(schedule, x0_a, x0_b, lam, t, noise_a, noise_b)
    return sample(schedule, model, mixed, noise_fn, start=int(t), **kwargs)

