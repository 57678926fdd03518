"""Every per-step core function called with a timestep *vector* ``t``, for the hot-path tests.

``per_step_calls(schedule)`` maps a readable name to a function of an ``Inputs`` whose arrays
all come from one backend. ``tests/core/test_host_sync.py`` runs each under PyTorch counting
host reads (there must be none); ``tests/core/test_compile.py`` runs each under ``jax.jit``
with ``t`` traced. The list covers every prediction and variance type, clipping, DDIM's
``t_prev = -1``, eta > 0 and both clipping conventions, both DPM-Solver++ steps, the losses
and the timestep sampler.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ddpm_core.dpm_solver import dpmpp_2m_sde_step, dpmpp_2m_step
from ddpm_core.forward import q_mean_variance, q_sample, q_step_sample
from ddpm_core.guidance import classifier_free_guidance, classifier_guidance_eps, classifier_guidance_mean
from ddpm_core.losses import loss_weights, training_losses, training_target, vlb_terms
from ddpm_core.parameterization import p_mean_variance, predict_eps, predict_mean, predict_v, predict_x0
from ddpm_core.posterior import q_posterior
from ddpm_core.samplers import ddim_step, ddpm_step
from ddpm_core.schedules import Schedule
from ddpm_core.timesteps import sample_timesteps, uniform_weights

SHAPE = (4, 2, 3, 3)


class Inputs(NamedTuple):
    """One backend's arrays: data, model outputs (C and 2C channels), noise, steps, draws."""

    x: Any  # (B, C, H, W) in [-1, 1]
    out: Any  # (B, C, H, W)
    out2: Any  # (B, 2C, H, W): a learned-variance output (second half in [-1, 1])
    noise: Any  # (B, C, H, W)
    t: Any  # (B,) int in [1, T)
    t_prev: Any  # (B,) int in [-1, t)
    t0: Any  # (B,) int, all 0
    u: Any  # (B,) uniform draws in [0, 1)


def numpy_inputs(num_timesteps: int, seed: int = 0) -> Inputs:
    """The inputs as NumPy arrays (float32 data, int64 steps); convert them per backend."""
    rng = np.random.default_rng(seed)
    b = SHAPE[0]
    x = rng.uniform(-1, 1, SHAPE).astype(np.float32)
    out, noise = (rng.standard_normal(SHAPE).astype(np.float32) for _ in range(2))
    out2 = np.concatenate([out, rng.uniform(-1, 1, SHAPE).astype(np.float32)], axis=1)
    t = rng.integers(1, num_timesteps, b)
    t_prev = np.maximum(t - rng.integers(1, 5, b), -1)
    t_prev[0] = -1
    u = rng.uniform(0, 1, b).astype(np.float32)
    return Inputs(x, out, out2, noise, t, t_prev, np.zeros(b, np.int64), u)


Call = Callable[[Inputs], Any]


def per_step_calls(s: Schedule) -> dict[str, Call]:
    """{name: call}; each call returns an array or a tuple of arrays."""
    calls: dict[str, Call] = {
        "q_sample": lambda a: q_sample(s, a.x, a.t, a.noise),
        "q_sample validate=False": lambda a: q_sample(s, a.x, a.t, a.noise, validate=False),
        "q_mean_variance": lambda a: q_mean_variance(s, a.x, a.t),
        "q_step_sample": lambda a: q_step_sample(s, a.x, a.t, a.noise),
        "q_posterior": lambda a: q_posterior(s, a.x, a.noise, a.t),
        "predict_eps": lambda a: predict_eps(s, a.out, a.x, a.t, prediction="v"),
        "predict_v": lambda a: predict_v(s, a.out, a.x, a.t),
        "predict_mean": lambda a: predict_mean(s, a.out, a.x, a.t, prediction="x0"),
        "ddpm_step fixed_large clip": lambda a: ddpm_step(s, a.out, a.x, a.t, a.noise,
                                                          variance="fixed_large", clip=True),
        "ddpm_step learned_range v": lambda a: ddpm_step(s, a.out2, a.x, a.t, a.noise, prediction="v",
                                                         variance="learned_range"),
        "ddpm_step threshold": lambda a: ddpm_step(s, a.out, a.x, a.t, a.noise, threshold=0.9),
        "ddpm_step t=0 noise=None": lambda a: ddpm_step(s, a.out, a.x, a.t0, None),
        "ddim_step eta=0": lambda a: ddim_step(s, a.out, a.x, a.t, a.t_prev),
        "ddim_step eta=0.5 x0 clip": lambda a: ddim_step(s, a.out, a.x, a.t, a.t_prev, a.noise, eta=0.5,
                                                         prediction="x0", clip=True),
        "ddim_step clip network eps": lambda a: ddim_step(s, a.out, a.x, a.t, a.t_prev, clip=True,
                                                          ddim_eps="network"),
        "dpmpp_2m_step v clip": lambda a: dpmpp_2m_step(s, a.out, a.x, a.t, a.noise, start=s.num_timesteps - 1,
                                                        prediction="v", clip=True),
        "dpmpp_2m_step heun t=0": lambda a: dpmpp_2m_step(s, a.out, a.x, a.t0, a.noise, solver_type="heun"),
        "dpmpp_2m_sde_step": lambda a: dpmpp_2m_sde_step(s, a.out, a.x, a.t, a.x, a.noise, threshold=0.9),
        "training_losses vlb": lambda a: training_losses(s, a.out, a.x, a.noise, a.t, a.noise, loss="vlb"),
        "training_losses hybrid": lambda a: training_losses(s, a.out2, a.x, a.noise, a.t, a.noise,
                                                            loss="hybrid", variance="learned"),
        "training_losses min_snr v": lambda a: training_losses(s, a.out, a.x, a.noise, a.t, a.noise,
                                                               prediction="v", weighting="min_snr"),
        "training_losses validate=False": lambda a: training_losses(s, a.out, a.x, a.noise, a.t, a.noise,
                                                                    validate=False),
        "vlb_terms": lambda a: vlb_terms(s, a.out, a.x, a.noise, a.t, prediction="x0"),
        "training_target mean": lambda a: training_target(s, a.x, a.noise, a.t, a.noise, "mean"),
        "loss_weights min_snr": lambda a: loss_weights(s, a.t, a.x, weighting="min_snr"),
        "training_losses weighting array": lambda a: training_losses(
            s, a.out, a.x, a.noise, a.t, a.noise, weighting=np.linspace(0.5, 1.5, s.num_timesteps)),
        "sample_timesteps": lambda a: sample_timesteps(uniform_weights(s.num_timesteps), a.u),
        "classifier_free_guidance rescale": lambda a: classifier_free_guidance(a.out, a.noise, 3.0,
                                                                               rescale=0.7),
        "classifier_guidance_eps": lambda a: classifier_guidance_eps(s, a.out, a.t, a.noise, scale=2.0),
        "classifier_guidance_mean": lambda a: classifier_guidance_mean(
            a.out, q_posterior(s, a.x, a.noise, a.t)[1], a.noise, scale=2.0),
    }
    for prediction in ("eps", "x0", "v", "mean"):
        calls[f"predict_x0 {prediction}"] = lambda a, p=prediction: predict_x0(s, a.out, a.x, a.t, prediction=p)
        calls[f"p_mean_variance {prediction}"] = lambda a, p=prediction: p_mean_variance(
            s, a.out, a.x, a.t, prediction=p)
        calls[f"ddpm_step {prediction}"] = lambda a, p=prediction: ddpm_step(s, a.out, a.x, a.t, a.noise,
                                                                               prediction=p)
        calls[f"training_losses simple {prediction}"] = lambda a, p=prediction: training_losses(
            s, a.out, a.x, a.noise, a.t, a.noise, prediction=p)
    calls["p_mean_variance learned"] = lambda a: p_mean_variance(s, a.out2, a.x, a.t, variance="learned")
    return calls


def as_tuple(result: Any) -> tuple[Any, ...]:
    """A call's result as a flat tuple of arrays."""
    return tuple(result) if isinstance(result, tuple) else (result,)
