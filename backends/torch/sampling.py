"""Sampling a PyTorch U-Net in memory: the sampling driver (``ddpm_core.app.sampling``)
with this backend's chain (``ddpm_core.backends.torch.chain``).

- ancestral DDPM (Algorithm 2) with the fixed-small, fixed-large or learned variance,
  optionally on a respaced chain of ``steps`` steps;
- DDIM (Song et al. 2021) on ``steps`` steps with ``eta``;
- progressive generation: the x0_hat of selected steps (the paper's Figure 6);
- interpolation in x_t (the paper's Figure 8).

Sample j's noise depends only on ``(seed, j)`` (``ddpm_core.backends.torch.noise``). On
CUDA the model call runs in bf16 autocast. ``compile=True`` compiles it with
``mode="reduce-overhead"``; ``cuda_graph=True`` captures one whole denoising step (model
and the core's update, on fixed buffers) as a CUDA graph and replays it K times, which
removes the per-step launch overhead of both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from ddpm_core.app.sampling import driver
from ddpm_core.app.sampling.chains import chain_schedule, check_eta, progressive_steps
from ddpm_core.app.sampling.protocol import ChainSpec
from ddpm_core.backends.torch.chain import TorchChain, TorchSampling, model_fn
from ddpm_core.backends.torch.noise import SampleStreams, host_sync_errors, sample_seeds

__all__ = ["SampleStreams", "chain_schedule", "generate", "host_sync_errors", "interpolate_images",
           "model_fn", "progressive_frames", "sample_seeds"]

BACKEND = TorchSampling()


def _chain(net: nn.Module, schedule: Any, sampler: str, steps: int | None, eta: float, prediction: str,
           variance: str, clip: Any, guide: driver.GuideRequest | None, **kw: Any) -> TorchChain:
    spec = ChainSpec(chain_schedule(schedule, sampler, steps), sampler, check_eta(eta), prediction,
                     variance, clip)
    return TorchChain(net, spec, None if guide is None else guide.spec, **kw)


def generate(net: nn.Module, schedule: Any, *, n: int, sampler: str = "ddpm",
             steps: int | None = None, eta: float = 0.0, seed: int = 0,
             prediction: str = "eps", variance: str = "fixed_small",
             batch_size: int | None = None, clip: Any = True, compile: bool = False,
             cuda_graph: bool = False, device: Any = None, guide: driver.GuideRequest | None = None
             ) -> np.ndarray:
    """Sample ``n`` images, float32 (n, H, W, C) in the model range [-1, 1].

    ``device`` is ignored (the network's device is used); it is accepted for symmetry.
    ``clip=True`` clips x0_hat to [-1, 1] at every step, as the paper's sampler does.
    Sample j's noise depends only on ``(seed, j)`` (:class:`SampleStreams`).
    ``cuda_graph=True`` (a CUDA network only; not with ``compile``) replays one captured
    denoising step K times: the same images up to float32 rounding of the coefficients,
    which it gathers from tables on the device.
    ``guide``: labels and guidance (``ddpm_core.backends.torch.guided.make_guide``); not with
    ``cuda_graph``.
    """
    if cuda_graph and guide is not None:
        raise ValueError("cuda_graph=True does not support guided sampling (--class/--classifier); "
                         "leave it off")
    if cuda_graph:
        dev = next(net.parameters()).device
        if dev.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the network on a CUDA device; it is on {dev}")
        if compile:
            raise ValueError("cuda_graph=True and compile=True exclude each other "
                             "(compile uses CUDA graphs of its own); choose one")
    chain = _chain(net, schedule, sampler, steps, eta, prediction, variance, clip, guide, compile=compile,
                   static=bool(cuda_graph), capture=bool(cuda_graph))
    x, _ = driver.draw_chain(BACKEND, chain, n=n, seed=seed, batch_size=batch_size,
                             labels=None if guide is None else guide.labels)
    return np.moveaxis(x, 1, -1)


def progressive_frames(net: nn.Module, schedule: Any, *, n: int, frames: int, seed: int = 0,
                       sampler: str = "ddpm", steps: int | None = None, eta: float = 0.0,
                       prediction: str = "eps", variance: str = "fixed_small",
                       batch_size: int | None = None, clip: Any = True,
                       guide: driver.GuideRequest | None = None) -> np.ndarray:
    """x0_hat at ``frames`` evenly spaced steps (first step .. last), uint8 (F, n, H, W, C).

    The last frame is the final sample: :func:`generate`'s with the same arguments
    (``guide`` too). The paper's Figure 6 shows these predictions sharpening from coarse
    layout to fine detail.
    """
    chain = _chain(net, schedule, sampler, steps, eta, prediction, variance, clip, guide)
    keep = progressive_steps(chain.spec.schedule.num_timesteps, frames)
    _, f = driver.draw_chain(BACKEND, chain, n=n, seed=seed, batch_size=batch_size,
                             labels=None if guide is None else guide.labels, frame_steps=keep)
    return driver.to_images(f)


def interpolate_images(net: nn.Module, schedule: Any, x0_a: np.ndarray, x0_b: np.ndarray, *,
                       lambdas: Sequence[float], t: int, seed: int = 0,
                       prediction: str = "eps", variance: str = "fixed_small",
                       clip: Any = True, guide: driver.GuideRequest | None = None) -> np.ndarray:
    """Encode two images to step ``t``, mix ``(1-lam) x_t^a + lam x_t^b``, decode (Figure 8).

    Parameters
    ----------
    x0_a, x0_b : float32 (H, W, C) in [-1, 1]
    lambdas : sequence of float in [0, 1]
    t : int in [0, T), 0-based
    guide : labels of the L = len(lambdas) mixtures and classifier-free guidance
        (``make_guide`` with L labels; no classifier guidance here)

    Returns
    -------
    uint8 (len(lambdas), H, W, C); the same noise is used for every lambda.
    """
    chain = TorchChain(net, ChainSpec(schedule, "ddpm", 0.0, prediction, variance, clip),
                       None if guide is None else guide.spec)
    x = driver.interpolate_images(BACKEND, chain, np.moveaxis(x0_a, -1, 0), np.moveaxis(x0_b, -1, 0),
                                  lambdas=lambdas, t=t, seed=seed, labels=None if guide is None else guide.labels)
    return driver.to_images(x)
