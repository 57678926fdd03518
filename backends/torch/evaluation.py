"""``ddpm eval`` with the PyTorch backend: the bound in bits/dim (``bpd``, the one
framework-free ``ddpm_core.app.evaluation.bound.bpd`` with this backend) and the shared-latent
figure (Figure 7)."""

from __future__ import annotations

import os

import numpy as np
import torch

from ddpm_core.app.run.splits import heldout_images
from ddpm_core.backends.torch import api
from ddpm_core.backends.torch.api import bpd
from ddpm_core.checks import check_int

__all__ = ["bpd", "shared_latent"]


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
    from ddpm_core.app.run.images import to_uint8
    from ddpm_core.backends.torch.sampling import model_fn
    from ddpm_core.data import to_model_range

    k = check_int("k", k, 1)
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
