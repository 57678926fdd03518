"""The JAX backend's interface to the ``ddpm`` command.

The functions of the sampling driver (``ddpm_core.app.sampling.driver``) and of ``ddpm
eval bpd`` (``ddpm_core.app.evaluation.bound.bpd``) with this backend bound by
``ddpm_core.app.backend_api``: the same functions,
signatures and results as ``ddpm_core.backends.torch.api``. Both read and write the run
directory (docs/run-directory.md); sampling needs only ``run.json`` and
``ema.safetensors`` (canonical layout), so it works on a run trained by either backend.

Examples are ``ddpm_core.backends.torch.api``'s with ``TrainOptions(..., backend="jax")``.
"""

from __future__ import annotations

import math

import jax

from ddpm_core.app.backend_api import bound_api
from ddpm_core.backends.jax.chain import BACKEND
from ddpm_core.backends.jax.training import train
from ddpm_core.backends.jax.unet import UNet, param_shapes

__all__ = ["BACKEND", "bpd", "interpolate", "load_run", "param_count", "progressive", "sample", "train"]

load_run, sample, progressive, interpolate, bpd = bound_api(BACKEND)


def param_count(preset_name: str) -> int:
    """Trainable parameters of the preset's Flax U-Net (shapes only, nothing allocated)."""
    from ddpm_core.models import get_preset

    shapes = param_shapes(UNet(config=get_preset(preset_name).unet))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
