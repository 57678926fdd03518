"""``ddpm eval`` with the JAX backend: the true variational bound in bits/dim.

The same computation as ``ddpm_core.backends.torch.evaluation``: the core's
:func:`ddpm_core.bits_per_dim` with every one of the T terms, a jitted float32 U-Net call
per term, and the noise of image j at step t from ``default_rng([seed, j, t])``, so both
backends give the same numbers on the same weights.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_core.app.evaluation import (
    batch_noise_fn,
    check_positive_int,
    heldout_images,
    summarize_bpd,
)
from ddpm_core.backends.jax import api
from ddpm_core.backends.jax.unet import UNet

__all__ = ["bpd"]


def bpd(run_dir: str | os.PathLike, *, n: int, batch_size: int | None = None, seed: int = 0,
        use_ema: bool = True, device: str = "auto", clip: bool = False) -> dict[str, Any]:
    """The bound of eq. (5) in bits/dim on the first ``n`` held-out images of a run.

    Arguments and result as ``ddpm_core.backends.torch.evaluation.bpd``. The network runs
    in float32 on every device (the bound needs full precision).
    """
    from ddpm_core import bits_per_dim
    from ddpm_core.data import to_model_range

    n = check_positive_int("n", n)
    bs = n if batch_size is None else check_positive_int("batch_size", batch_size)
    net, params, schedule, info = api.load_run(run_dir, use_ema=use_ema, device=device)
    net32 = UNet(config=net.config, dtype=jnp.float32)
    apply = jax.jit(lambda p, x, t: net32.apply({"params": p}, x, t).astype(jnp.float32))
    dev = jax.tree.leaves(params)[0].devices().pop()

    def fn(x: jax.Array, t: Any) -> jax.Array:
        return apply(params, x, jnp.asarray(t, jnp.int32))

    x_all = to_model_range(heldout_images(info, n)).transpose(0, 3, 1, 2)
    parts: list[list[np.ndarray]] = [[], [], [], []]
    for start in range(0, n, bs):
        x0 = jax.device_put(np.ascontiguousarray(x_all[start:start + bs]), dev)
        noise = batch_noise_fn(seed, start, tuple(x0.shape), lambda a: jax.device_put(a, dev))
        r = bits_per_dim(schedule, fn, x0, noise, prediction=info["prediction"],
                         variance=info["variance"], clip=True if clip else None)
        for k, a in enumerate((r.total, r.prior, r.terms, r.mse)):
            parts[k].append(np.asarray(a, np.float64))
    total, prior = np.concatenate(parts[0]), np.concatenate(parts[1])
    terms, mse = np.concatenate(parts[2], axis=1), np.concatenate(parts[3], axis=1)
    return summarize_bpd(total, prior, terms, mse)
