"""The PyTorch backend's interface to the ``ddpm`` command.

The functions of the sampling driver (``ddpm_core.app.sampling.driver``) and of ``ddpm
eval bpd`` (``ddpm_core.app.evaluation.bound.bpd``) with this backend bound by
``ddpm_core.app.backend_api``: the JAX backend's
``api`` has the same functions with the same signatures. Both read and write the run
directory (docs/run-directory.md).

Examples
--------
>>> from ddpm_core.app.run.options import TrainOptions
>>> summary = train(TrainOptions(preset="tiny", out="runs/tiny", steps=20))  # doctest: +SKIP
>>> images = sample("runs/tiny", n=16, sampler="ddim", steps=20)  # doctest: +SKIP
>>> images.shape, images.dtype  # doctest: +SKIP
((16, 8, 8, 1), dtype('uint8'))
"""

from __future__ import annotations

import torch

from ddpm_core.app.backend_api import bound_api
from ddpm_core.backends.torch.sampling import BACKEND
from ddpm_core.backends.torch.training import train
from ddpm_core.backends.torch.unet import UNet

__all__ = ["BACKEND", "bpd", "interpolate", "load_run", "param_count", "progressive", "sample", "train"]

load_run, sample, progressive, interpolate, bpd = bound_api(BACKEND)


def param_count(preset_name: str) -> int:
    """Trainable parameters of the preset's PyTorch U-Net (built on the meta device)."""
    from ddpm_core.models import get_preset

    with torch.device("meta"):
        net = UNet(get_preset(preset_name).unet)
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
