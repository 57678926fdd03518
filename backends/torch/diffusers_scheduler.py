"""A diffusers scheduler whose every step is ddpm-core's: :class:`DiffusersScheduler`.

It has the interface of diffusers' ``DDPMScheduler`` (``set_timesteps``, ``timesteps``,
``step``, ``add_noise``, ``scale_model_input``, ``save_pretrained`` / ``from_pretrained``,
``from_config``), so any pipeline that drives a scheduler that way (``DDPMPipeline``) runs on
it. The ``sampler`` config option picks the step:

============== ===================================== =====================================
sampler        step (``ddpm_core.reverse_step``)     the diffusers scheduler it stands for
============== ===================================== =====================================
ddpm           Algorithm 2, ``variance_type``        ``DDPMScheduler``
ddim           DDIM with ``eta``                     ``DDIMScheduler`` (``set_alpha_to_one``)
dpmpp-2m       DPM-Solver++(2M), ``solver_type``     ``DPMSolverMultistepScheduler``,
                                                     ``algorithm_type="dpmsolver++"``
dpmpp-2m-sde   SDE-DPM-Solver++(2M)                  the same, ``"sde-dpmsolver++"``
============== ===================================== =====================================

The schedule fields mean what they mean in a ``DDPMScheduler`` config and are read by
``ddpm_core.interop.diffusers_config`` (float64 tables; unsupported values raise a one-line
``ValueError`` naming the field). ``set_timesteps(n)`` keeps the steps that the diffusers
scheduler of the sampler keeps for its ``timestep_spacing`` (default: that scheduler's
default, ``"leading"`` for DDPM and DDIM, DPM-Solver's ``"linspace"``) and respaces the
schedule to them (``Schedule.respace``): each step goes exactly to the next kept step.

Noise is drawn with diffusers' ``randn_tensor`` of the sample's shape from ``generator``
whenever the diffusers scheduler draws (DDPM where t > 0, DDIM with eta > 0 and the SDE
solver at every step), so that the same seed gives the same draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import torch
    from diffusers.configuration_utils import ConfigMixin, register_to_config
    from diffusers.schedulers.scheduling_utils import SchedulerMixin
    from diffusers.utils import BaseOutput
    from diffusers.utils.torch_utils import randn_tensor
except ImportError:
    raise ImportError('ddpm_core.backends.torch.DiffusersScheduler needs diffusers and torch: '
                      'pip install "ddpm-core[diffusers]"') from None

from ddpm_core.app.sampling.chains import chain_schedule, check_eta
from ddpm_core.checks import check_choice
from ddpm_core.dpm_solver import SOLVER_TYPES
from ddpm_core.forward import q_sample
from ddpm_core.interop.diffusers_config import read_scheduler_config
from ddpm_core.reverse import reverse_step
from ddpm_core.samplers import MULTISTEP, SAMPLERS, needs_noise
from ddpm_core.schedule_entry import schedule_from_entry
from ddpm_core.schedules import Schedule

__all__ = ["DEFAULT_SPACING", "DiffusersScheduler", "DiffusersSchedulerOutput", "inference_chain"]

# each sampler's diffusers scheduler's default timestep_spacing
DEFAULT_SPACING = {"ddpm": "leading", "ddim": "leading", "dpmpp-2m": "linspace", "dpmpp-2m-sde": "linspace"}
_DDPM_FIELDS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "variance_type", "clip_sample",
                "clip_sample_range", "prediction_type", "thresholding", "steps_offset", "rescale_betas_zero_snr")


@dataclass
class DiffusersSchedulerOutput(BaseOutput):
    """What :meth:`DiffusersScheduler.step` returns.

    Attributes
    ----------
    prev_sample : (B, C, H, W), the sample at the chain's next (earlier) step
    pred_original_sample : (B, C, H, W), the x0_hat the step was built from (after clipping)
    """

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


def inference_chain(schedule: Schedule, sampler: str, steps: int, spacing: str | None = None,
                    offset: int = 0) -> Schedule:
    """The respaced schedule of the ``steps`` steps that diffusers' scheduler for ``sampler``
    keeps with ``timestep_spacing=spacing`` (None: its default) and ``steps_offset=offset``.

    DDPM and DDIM place the steps as ``DDPMScheduler`` / ``DDIMScheduler`` do
    (``ddpm_core.respacing``); the DPM-Solvers as ``DPMSolverMultistepScheduler`` does
    (``"linspace"``: round(linspace(0, T - 1, steps + 1))[1:]; ``"leading"``:
    (1..steps) * (T // (steps + 1)); ``"trailing"`` as the others). ``offset`` shifts the
    ``"leading"`` steps, as in diffusers.
    """
    T = schedule.num_timesteps
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= T:
        raise ValueError(f"num_inference_steps must be an integer in [1, {T}]; got {steps!r}")
    steps = int(steps)
    spacing = spacing or DEFAULT_SPACING[sampler]
    if sampler in MULTISTEP and spacing == "linspace":
        return chain_schedule(schedule, sampler, steps)
    if sampler in MULTISTEP and spacing == "leading":
        keep = np.arange(1, steps + 1) * (T // (steps + 1))
    else:
        chain = chain_schedule(schedule, sampler, steps, spacing)
        if spacing != "leading" or offset == 0:
            return chain
        keep = chain.timesteps
    keep = np.asarray(keep, dtype=np.int64) + offset  # "leading" here: the only spacing diffusers offsets
    if len(np.unique(keep)) != steps or keep.max() >= T:
        raise ValueError(f"num_inference_steps={steps} with timestep_spacing={spacing!r} and steps_offset={offset} "
                         f"does not give {steps} distinct steps in [0, {T}): {keep.tolist()}")
    return schedule.respace(keep)


def _settings(config: dict[str, Any]) -> tuple[Schedule, dict[str, Any]]:
    """The float64 schedule and the step settings of a config (``read_scheduler_config``)."""
    fields = {k: config[k] for k in _DDPM_FIELDS}
    fields["variance_type"] = fields["variance_type"] or "fixed_small"  # DPM-Solver's configs write None
    fields["timestep_spacing"] = config["timestep_spacing"] or "leading"  # checked there, chosen here
    betas = config["trained_betas"]
    fields["trained_betas"] = None if betas is None else np.asarray(betas, dtype=np.float64).tolist()
    s = read_scheduler_config(fields)
    check_choice("solver_type", config["solver_type"], SOLVER_TYPES)
    if config["set_alpha_to_one"] is not True:
        raise ValueError(f"scheduler config field set_alpha_to_one={config['set_alpha_to_one']!r} cannot be "
                         "represented: the last DDIM step goes to abar = 1 (x_0); allowed: True")
    step_kw = {"prediction": s.prediction, "variance": s.variance, "clip": s.clip,
               "solver_type": config["solver_type"]}
    return schedule_from_entry(s.schedule), step_kw


def _eta(sampler: str, eta: Any) -> float:
    """DDIM's eta in [0, 1]; any other sampler takes only 0."""
    value = check_eta(eta)
    if value > 0 and sampler != "ddim":
        raise ValueError(f"eta={eta!r} applies only to sampler='ddim'; got sampler={sampler!r} (allowed: eta=0)")
    return value


class DiffusersScheduler(SchedulerMixin, ConfigMixin):
    """A diffusers scheduler (``SchedulerMixin``, ``ConfigMixin``) computed by ddpm-core.

    Parameters
    ----------
    sampler : {"ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde"}
    num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_betas_zero_snr
        The schedule, as in ``DDPMScheduler`` (linear, scaled_linear, squaredcos_cap_v2,
        sigmoid or given betas), built in float64.
    variance_type : {"fixed_small", "fixed_small_log", "fixed_large", "learned_range"}
        The ancestral step's variance (``sampler="ddpm"`` only; the others drop a
        learned-variance head).
    clip_sample, clip_sample_range : x0_hat clipped to [-range, range] before each step.
    prediction_type : {"epsilon", "sample", "v_prediction"}
    thresholding : only False (diffusers' dynamic threshold is bounded by sample_max_value).
    eta : DDIM's noise scale in [0, 1], used where ``step`` is not given one.
    solver_type : {"midpoint", "heun"}, the DPM-Solvers' second-order correction.
    timestep_spacing : {"leading", "linspace", "trailing"} or None (the sampler's diffusers
        scheduler's default); steps_offset : shifts the ``"leading"`` steps.
    set_alpha_to_one : only True (DDIM's last step goes to x_0).
    """

    config_name = "scheduler_config.json"
    _compatibles = ["DDPMScheduler", "DDIMScheduler", "DPMSolverMultistepScheduler"]
    order = 1

    @register_to_config
    def __init__(self, sampler: str = "ddpm", num_train_timesteps: int = 1000, beta_start: float = 0.0001,
                 beta_end: float = 0.02, beta_schedule: str = "linear", trained_betas: Any = None,
                 variance_type: str = "fixed_small", clip_sample: bool = True, clip_sample_range: float = 1.0,
                 prediction_type: str = "epsilon", thresholding: bool = False, eta: float = 0.0,
                 solver_type: str = "midpoint", timestep_spacing: str | None = None, steps_offset: int = 0,
                 set_alpha_to_one: bool = True, rescale_betas_zero_snr: bool = False):
        check_choice("sampler", sampler, SAMPLERS)
        self.schedule, self._step_kw = _settings(dict(self.config))
        self._eta = _eta(sampler, eta)
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self._use_chain(self.schedule, None)

    # ------------------------------------------------------------------ the chain

    def _use_chain(self, chain: Schedule, device: Any) -> None:
        """Run ``chain`` (K steps) from now on; the multistep state starts afresh."""
        self.chain = chain
        self.timesteps = torch.from_numpy(chain.timesteps[::-1].copy()).to(device)  # (K,) int64, descending
        self._index = {int(t): i for i, t in enumerate(chain.timesteps)}
        self._x0_prev: torch.Tensor | None = None

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Choose the chain of ``num_inference_steps`` steps (``inference_chain``); sets
        ``timesteps`` (K,) (original-chain steps, descending) on ``device``."""
        c = self.config
        chain = inference_chain(self.schedule, c.sampler, num_inference_steps, c.timestep_spacing, c.steps_offset)
        self.num_inference_steps = int(num_inference_steps)
        self._use_chain(chain, device)

    def _step_index(self, timestep: Any) -> int:
        t = int(timestep.item() if isinstance(timestep, torch.Tensor) else timestep)
        if t not in self._index:
            raise ValueError(f"timestep={t} is not one of this scheduler's timesteps; call set_timesteps() and "
                             "step through scheduler.timesteps")
        return self._index[t]

    # ------------------------------------------------------------------ the step

    def _noise(self, t: int, eta: float, model_output: torch.Tensor, sample: torch.Tensor,
               generator: Any, variance_noise: torch.Tensor | None) -> torch.Tensor | None:
        """The step's standard normal draws (B, C, H, W), where diffusers' scheduler draws them."""
        sampler = self.config.sampler
        if not needs_noise(sampler, eta) or (sampler == "ddpm" and t == 0):
            return None
        if variance_noise is not None:
            return variance_noise.to(sample.device)
        dtype = torch.float32 if sampler == "dpmpp-2m-sde" else model_output.dtype  # as diffusers draws
        return randn_tensor(sample.shape, generator=generator, device=sample.device, dtype=dtype)

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, generator: Any = None,
             return_dict: bool = True, *, eta: float | None = None, use_clipped_model_output: bool = False,
             variance_noise: torch.Tensor | None = None) -> DiffusersSchedulerOutput | tuple:
        """One reverse step from ``timestep`` (one of ``timesteps``) to the chain's next step.

        Parameters
        ----------
        model_output : (B, C, H, W), or (B, 2C, H, W) with ``variance_type="learned_range"``
        timestep : int or 0-d tensor, an original-chain step in ``timesteps``
        sample : (B, C, H, W), x_t
        generator : torch.Generator (or a list of B) for the step's noise
        eta : DDIM's eta for this step (as ``DDIMPipeline`` passes it); None: the config's
        use_clipped_model_output : DDIM's eps re-derived from the clipped x0_hat
        variance_noise : (B, C, H, W) standard normal draws to use instead of drawing

        Returns
        -------
        DiffusersSchedulerOutput(prev_sample, pred_original_sample), each (B, C, H, W), or
        the tuple (prev_sample, pred_original_sample) when ``return_dict`` is False.
        """
        sampler = self.config.sampler
        i = self._step_index(timestep)
        eta = self._eta if eta is None else _eta(sampler, eta)
        noise = self._noise(int(self.chain.timesteps[i]), eta, model_output, sample, generator, variance_noise)
        ddim_eps = "clipped" if use_clipped_model_output else "network"  # diffusers' default: the network's
        start = self.chain.num_timesteps - 1  # a chain's first step: first order, whatever came before
        out = reverse_step(self.chain, model_output, sample, i, noise, sampler=sampler, eta=eta, ddim_eps=ddim_eps,
                           x0_prev=None if i == start else self._x0_prev, start=start, **self._step_kw)
        self._x0_prev = out.x0_hat if sampler in MULTISTEP else None
        if not return_dict:
            return out.x_prev, out.x0_hat
        return DiffusersSchedulerOutput(prev_sample=out.x_prev, pred_original_sample=out.x0_hat)

    # ------------------------------------------------------------------ the rest of the interface

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: Any) -> torch.Tensor:
        """x_t ~ q(x_t | x_0) (``ddpm_core.q_sample``) at original-chain ``timesteps``: an int,
        or an integer tensor of shape (), (1,) or (B,); samples and noise (B, C, H, W)."""
        t = torch.as_tensor(timesteps, device=original_samples.device).reshape(-1).long()
        if t.numel() == 1:
            t = t.expand(original_samples.shape[0])
        return q_sample(self.schedule, original_samples, t, noise)

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """``sample`` itself: the model sees x_t unscaled (``init_noise_sigma`` is 1)."""
        return sample

    def __len__(self) -> int:
        return self.config.num_train_timesteps
