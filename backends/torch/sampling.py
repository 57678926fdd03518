"""Sampling with a PyTorch U-Net through the core's ``sample_loop``.

- ancestral DDPM (Algorithm 2) with the fixed-small, fixed-large or learned variance,
  optionally on a respaced chain of ``steps`` steps;
- DDIM (Song et al. 2021) on ``steps`` steps with ``eta``;
- progressive generation: the x0_hat of selected steps (the paper's Figure 6);
- interpolation in x_t (the paper's Figure 8).

Randomness comes from a ``torch.Generator`` seeded per batch by ``(seed, batch index)``
(``ddpm_core.runs.step_seed``): the same call gives the same images. On CUDA the model
call runs in bf16 autocast and can be compiled with ``mode="reduce-overhead"`` (CUDA
graphs), which removes the per-step launch overhead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ddpm_core.runs import chain_schedule, step_seed, to_uint8

__all__ = ["chain_schedule", "generate", "interpolate_images", "model_fn", "progressive_frames"]

_STREAM_SAMPLE = 11

# guide(fn, lo, hi) -> (batch lo..hi-1's model callable, its loop), see ``_run``
Guide = Callable[[Callable[..., Any], int, int], tuple[Callable[..., Any], Callable[..., Any]]]


def model_fn(net: nn.Module, *, compile: bool = False) -> Callable[..., Any]:
    """``(x_t, t, y=None) -> float32 output`` without gradients (bf16 autocast on CUDA).

    ``y`` are the class labels of a class-conditional network (None for an unconditional one).
    """
    net.eval()
    device = next(net.parameters()).device
    call: Any = net
    if compile and device.type == "cuda":
        call = torch.compile(net, mode="reduce-overhead")
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
           else contextlib.nullcontext())

    def fn(x: torch.Tensor, t: Any, y: Any = None) -> torch.Tensor:
        with torch.inference_mode(), amp:
            return call(x, torch.as_tensor(t, device=x.device), y).float()

    return fn


def _batches(n: int, batch_size: int | None) -> list[tuple[int, int]]:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1; got {n!r}")
    bs = n if batch_size is None else batch_size
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    return [(lo, min(lo + bs, n)) for lo in range(0, n, bs)]


def _noise_source(shape: tuple[int, ...], device: torch.device, seed: int
                  ) -> tuple[torch.Tensor, Callable[[int], torch.Tensor]]:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    x_T = torch.randn(shape, generator=g, device=device)
    return x_T, lambda i: torch.randn(shape, generator=g, device=device)


def _run(net: nn.Module, schedule: Any, *, n: int, sampler: str, steps: int | None,
         eta: float, seed: int, prediction: str, variance: str, batch_size: int | None,
         clip: Any, compile: bool, keep: Callable[[int], bool], guide: Guide | None = None
         ) -> list[list[torch.Tensor]]:
    """Sample ``n`` images; per batch, the x0_hat of the steps ``keep(i)`` and the final x.

    ``guide(fn, lo, hi)`` gives batch ``lo .. hi - 1``'s model callable and loop (the
    core's ``sample_loop`` or a guided one with its arguments) from the plain ``fn``.
    """
    from ddpm_core import sample_loop

    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be in [0, 1]; got {eta!r}")
    sched = chain_schedule(schedule, sampler, steps)
    fn = model_fn(net, compile=compile)
    cfg = net.config
    device = next(net.parameters()).device
    out: list[list[torch.Tensor]] = []
    for b, (lo, hi) in enumerate(_batches(n, batch_size)):
        shape = (hi - lo, cfg.in_channels, cfg.image_size, cfg.image_size)
        x_T, noise_fn = _noise_source(shape, device, step_seed(seed, b, _STREAM_SAMPLE))
        call, loop = (fn, sample_loop) if guide is None else guide(fn, lo, hi)
        frames, x = [], x_T
        for st in loop(sched, call, x_T, noise_fn, sampler=sampler, eta=float(eta),
                              prediction=prediction, variance=variance, clip=clip):
            x = st.x
            if keep(st.step):
                frames.append(st.x0_hat)
        out.append([*frames, x])
    return out


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.float().permute(0, 2, 3, 1).cpu().numpy()


def generate(net: nn.Module, schedule: Any, *, n: int, sampler: str = "ddpm",
             steps: int | None = None, eta: float = 0.0, seed: int = 0,
             prediction: str = "eps", variance: str = "fixed_small",
             batch_size: int | None = None, clip: Any = True, compile: bool = False,
             device: Any = None, guide: Guide | None = None) -> np.ndarray:
    """Sample ``n`` images, float32 (n, H, W, C) in the model range [-1, 1].

    ``device`` is ignored (the network's device is used); it is accepted for symmetry.
    ``clip=True`` clips x0_hat to [-1, 1] at every step, as the paper's sampler does.
    ``guide``: labels and guidance (``ddpm_core.backends.torch.guided.make_guide``).
    """
    parts = _run(net, schedule, n=n, sampler=sampler, steps=steps, eta=eta, seed=seed,
                 prediction=prediction, variance=variance, batch_size=batch_size, clip=clip,
                 compile=compile, keep=lambda i: False, guide=guide)
    return np.concatenate([_nhwc(p[-1]) for p in parts])


def progressive_frames(net: nn.Module, schedule: Any, *, n: int, frames: int, seed: int = 0,
                       sampler: str = "ddpm", steps: int | None = None, eta: float = 0.0,
                       prediction: str = "eps", variance: str = "fixed_small",
                       batch_size: int | None = None, clip: Any = True) -> np.ndarray:
    """x0_hat at ``frames`` evenly spaced steps (first step .. last), uint8 (F, n, H, W, C).

    The last frame is the final sample. The paper's Figure 6 shows these predictions
    sharpening from coarse layout to fine detail.
    """
    sched = chain_schedule(schedule, sampler, steps)
    K = sched.num_timesteps
    if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= K:
        raise ValueError(f"frames must be an integer in [1, {K}]; got {frames!r}")
    wanted = set(np.rint(np.linspace(K - 1, 0, frames)).astype(int).tolist())
    parts = _run(net, schedule, n=n, sampler=sampler, steps=steps, eta=eta, seed=seed,
                 prediction=prediction, variance=variance, batch_size=batch_size, clip=clip,
                 compile=False, keep=lambda i: i in wanted)
    stacked = [np.stack([to_uint8(_nhwc(f)) for f in p[:-1]]) for p in parts]
    return np.concatenate(stacked, axis=1)


def interpolate_images(net: nn.Module, schedule: Any, x0_a: np.ndarray, x0_b: np.ndarray, *,
                       lambdas: Sequence[float], t: int, seed: int = 0,
                       prediction: str = "eps", variance: str = "fixed_small",
                       clip: Any = True) -> np.ndarray:
    """Encode two images to step ``t``, mix ``(1-lam) x_t^a + lam x_t^b``, decode (Figure 8).

    Parameters
    ----------
    x0_a, x0_b : float32 (H, W, C) in [-1, 1]
    lambdas : sequence of float in [0, 1]
    t : int in [0, T), 0-based

    Returns
    -------
    uint8 (len(lambdas), H, W, C); the same noise is used for every lambda.
    """
    from ddpm_core import interpolate

    lam = np.asarray(lambdas, dtype=np.float32)
    if lam.ndim != 1 or lam.size == 0 or lam.min() < 0 or lam.max() > 1:
        raise ValueError(f"lambdas must be a non-empty list of numbers in [0, 1]; got {lambdas!r}")
    T = schedule.num_timesteps
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < T:
        raise ValueError(f"t must be an integer in [0, {T}); got {t!r}")
    device = next(net.parameters()).device
    L = lam.size

    def batch(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, device=device).permute(2, 0, 1)[None].expand(L, -1, -1, -1)

    a, b = batch(x0_a), batch(x0_b)
    g = torch.Generator(device=device)
    g.manual_seed(step_seed(seed, 0, _STREAM_SAMPLE + 1))
    one = (1, *a.shape[1:])
    noise_a = torch.randn(one, generator=g, device=device).expand_as(a)
    noise_b = torch.randn(one, generator=g, device=device).expand_as(a)

    def noise_fn(i: int) -> torch.Tensor:
        return torch.randn(one, generator=g, device=device).expand_as(a)

    x = interpolate(schedule, model_fn(net), a, b, torch.as_tensor(lam, device=device), t,
                    noise_a, noise_b, noise_fn, prediction=prediction, variance=variance,
                    clip=clip)
    return to_uint8(_nhwc(x))
