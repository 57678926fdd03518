"""``ddpm eval`` with the PyTorch backend: the true variational bound in bits/dim.

Every one of the T terms of eq. (5) is evaluated by the core's
:func:`ddpm_core.bits_per_dim` (T network calls per batch) on the first ``n`` images of the
run's held-out split. The noise of image j at step t is ``default_rng([seed, j, t])``
(``ddpm_core.app.evaluation.batch_noise_fn``), the same as the JAX backend's, so both backends
give the same numbers on the same weights.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from ddpm_core.app.evaluation import (
    batch_noise_fn,
    check_positive_int,
    heldout_images,
    summarize_bpd,
)
from ddpm_core.backends.torch import api

__all__ = ["bpd", "shared_latent"]


def _float32_model(net: torch.nn.Module) -> Any:
    """``(x_t, t) -> output`` in float32 (no autocast: the bound needs full precision)."""

    def fn(x: torch.Tensor, t: Any) -> torch.Tensor:
        return net(x, torch.as_tensor(t, device=x.device)).float()

    return fn


def bpd(run_dir: str | os.PathLike, *, n: int, batch_size: int | None = None, seed: int = 0,
        use_ema: bool = True, device: str = "auto", clip: bool = False) -> dict[str, Any]:
    """The bound of eq. (5) in bits/dim on the first ``n`` held-out images of a run.

    Parameters
    ----------
    run_dir : path of a run directory (either backend's)
    n : int, >= 1, at most the held-out split's size
    batch_size : int, >= 1, optional (default ``n``)
    seed : int, >= 0, seeds the noise of every term
    use_ema : bool, the EMA weights (default) or the raw ones
    clip : bool, clip x0_hat to [-1, 1] before the posterior mean (the model is then the
        clipped one; still a valid bound) and in the distortion; default False

    Returns
    -------
    dict, see :func:`ddpm_core.evaluation.summarize_bpd` (``bpd = prior + terms + decoder``;
    ``terms_per_t`` (T,), ``rmse_per_t`` (T,), ``bpd_per_image`` (n,)).
    """
    from ddpm_core import bits_per_dim
    from ddpm_core.data import to_model_range

    n = check_positive_int("n", n)
    bs = n if batch_size is None else check_positive_int("batch_size", batch_size)
    net, schedule, info = api.load_run(run_dir, use_ema=use_ema, device=device)
    dev = next(net.parameters()).device
    fn = _float32_model(net)
    x_all = to_model_range(heldout_images(info, n)).transpose(0, 3, 1, 2)
    parts: list[list[np.ndarray]] = [[], [], [], []]
    for start in range(0, n, bs):
        x0 = torch.from_numpy(np.ascontiguousarray(x_all[start:start + bs])).to(dev)
        noise = batch_noise_fn(seed, start, tuple(x0.shape),
                               lambda a: torch.from_numpy(a).to(dev))
        with torch.inference_mode():
            r = bits_per_dim(schedule, fn, x0, noise, prediction=info["prediction"],
                             variance=info["variance"], clip=True if clip else None)
        for k, a in enumerate((r.total, r.prior, r.terms, r.mse)):
            parts[k].append(a.double().cpu().numpy())
    total, prior = np.concatenate(parts[0]), np.concatenate(parts[1])
    terms, mse = np.concatenate(parts[2], axis=1), np.concatenate(parts[3], axis=1)
    return summarize_bpd(total, prior, terms, mse)


def shared_latent(run_dir: str | os.PathLike, *, index: int = 0,
                  ts: tuple[int, ...] = (250, 500, 750), k: int = 6, seed: int = 0,
                  use_ema: bool = True, device: str = "auto") -> np.ndarray:
    """Samples of p(x_0 | x_t) that share one latent x_t (the paper's Figure 7).

    Held-out image ``index`` is encoded once to each 0-based step in ``ts`` with
    q(x_t | x_0) (eq. 4), then decoded ``k`` times by the ancestral sampler with different
    noise (the core's ``interpolate`` with lambda = 0).

    Returns
    -------
    uint8 (len(ts), k + 2, H, W, C): per row the source image, x_t (clipped to [-1, 1])
    and the ``k`` decodes.
    """
    from ddpm_core import interpolate, q_sample
    from ddpm_core.app.images import to_uint8
    from ddpm_core.backends.torch.sampling import model_fn
    from ddpm_core.data import to_model_range

    k = check_positive_int("k", k)
    net, schedule, info = api.load_run(run_dir, use_ema=use_ema, device=device)
    T = schedule.num_timesteps
    if not ts or any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < T
                     for t in ts):
        raise ValueError(f"ts must be a non-empty list of integers in [0, {T}); got {ts!r}")
    dev = next(net.parameters()).device
    src = heldout_images(info, int(index) + 1)[int(index)]
    x0 = torch.from_numpy(to_model_range(src).transpose(2, 0, 1).copy()).to(dev)[None]
    g = torch.Generator(device=dev)
    g.manual_seed(int(seed))
    rows = []
    for t in ts:
        batch = x0.expand(k, -1, -1, -1)
        shared = torch.randn(x0.shape, generator=g, device=dev).expand_as(batch)
        x_t = q_sample(schedule, x0, t, shared[:1])

        def noise_fn(i: int, shape: tuple[int, ...] = tuple(batch.shape)) -> torch.Tensor:
            return torch.randn(shape, generator=g, device=dev)

        x = interpolate(schedule, model_fn(net), batch, batch, 0.0, t, shared, shared,
                        noise_fn, prediction=info["prediction"], variance=info["variance"],
                        clip=True)
        rows.append(torch.cat([x0, x_t.clamp(-1, 1), x], dim=0).permute(0, 2, 3, 1))
    return to_uint8(torch.stack(rows).cpu().numpy())
