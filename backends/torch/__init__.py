"""PyTorch backend of ddpm_core."""

from ddpm_core.backends.torch.unet import UNet, build_unet

__all__ = ["UNet", "build_unet"]

# Training, checkpoints, sampling and the `ddpm` command's interface (ddpm_core.backends.torch.api).
from ddpm_core.backends.torch.api import (  # noqa: E402
    interpolate,
    load_run,
    param_count,
    progressive,
    sample,
    train,
)
from ddpm_core.backends.torch.checkpoint import load_state, load_weights, save_state, save_weights  # noqa: E402
from ddpm_core.backends.torch.sampling import generate, interpolate_images, progressive_frames  # noqa: E402
from ddpm_core.backends.torch.training import NonFiniteLossError  # noqa: E402

__all__ += [
    "NonFiniteLossError",
    "generate",
    "interpolate",
    "interpolate_images",
    "load_run",
    "load_state",
    "load_weights",
    "param_count",
    "progressive",
    "progressive_frames",
    "sample",
    "save_state",
    "save_weights",
    "train",
]


def __getattr__(name: str):
    """``DiffusersScheduler`` is imported on first use: importing this package never imports diffusers."""
    if name == "DiffusersScheduler":
        from ddpm_core.backends.torch.diffusers_scheduler import DiffusersScheduler

        return DiffusersScheduler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
