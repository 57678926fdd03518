"""ddpm-core: Denoising Diffusion Probabilistic Models (Ho, Jain, Abbeel 2020), written once
against the Python array API standard; runs unchanged on NumPy, PyTorch, JAX and any other
array API namespace.

Indexing: every ``t`` is the 0-based step index i = t_paper - 1 in [0, T). Index 0 is the
paper's t = 1, the decoder step: the sampler adds no noise there and the bound's term is the
discretized decoder L_0.
"""

from ddpm_core.bounds import BitsPerDim, bits_per_dim
from ddpm_core.dpm_solver import dpmpp_2m_sde_step, dpmpp_2m_step
from ddpm_core.forward import q_mean_variance, q_sample, q_step_sample
from ddpm_core.guidance import (
    classifier_free_guidance,
    classifier_guidance_eps,
    classifier_guidance_mean,
)
from ddpm_core.losses import (
    LossTerms,
    discretized_gaussian_log_likelihood,
    loss_weights,
    normal_kl,
    prior_bpd,
    training_loss_terms,
    training_losses,
    training_target,
    vlb_terms,
)
from ddpm_core.parameterization import (
    MeanVariance,
    clip_x0,
    eps_from_score,
    p_mean_variance,
    predict_eps,
    predict_mean,
    predict_score,
    predict_v,
    predict_x0,
)
from ddpm_core.posterior import q_posterior
from ddpm_core.respacing import space_timesteps
from ddpm_core.reverse import (
    classifier_guided_step,
    interpolate,
    mix_latents,
    reverse_step,
    sample,
    sample_loop,
)
from ddpm_core.samplers import SAMPLERS, SampleStep, StepResult, ddim_step, ddpm_step, needs_noise
from ddpm_core.schedules import Schedule
from ddpm_core.timesteps import LossSecondMoment, sample_timesteps, uniform_weights

__version__ = "0.1.0"

__all__ = [
    "SAMPLERS",
    "dpmpp_2m_sde_step",
    "dpmpp_2m_step",
    "needs_noise",
    "BitsPerDim",
    "LossTerms",
    "LossSecondMoment",
    "MeanVariance",
    "SampleStep",
    "Schedule",
    "StepResult",
    "bits_per_dim",
    "classifier_free_guidance",
    "classifier_guidance_eps",
    "classifier_guidance_mean",
    "classifier_guided_step",
    "clip_x0",
    "ddim_step",
    "ddpm_step",
    "discretized_gaussian_log_likelihood",
    "eps_from_score",
    "interpolate",
    "loss_weights",
    "mix_latents",
    "normal_kl",
    "p_mean_variance",
    "predict_eps",
    "predict_mean",
    "predict_score",
    "predict_v",
    "predict_x0",
    "prior_bpd",
    "q_mean_variance",
    "q_posterior",
    "q_sample",
    "q_step_sample",
    "reverse_step",
    "sample",
    "sample_loop",
    "sample_timesteps",
    "space_timesteps",
    "training_loss_terms",
    "training_losses",
    "training_target",
    "uniform_weights",
    "vlb_terms",
]
