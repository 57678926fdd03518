"""JAX backend of ddpm_core."""

from ddpm_core.backends.jax.unet import UNet, build_unet, init_params

__all__ = ["UNet", "build_unet", "init_params"]

# Training, checkpoints and the compiled sampler (api.py is what the `ddpm` command calls).
from ddpm_core.backends.jax.sampling import Chain, Sampler, chain_schedule  # noqa: E402
from ddpm_core.backends.jax.training import NonFiniteLossError  # noqa: E402

__all__ += ["Chain", "NonFiniteLossError", "Sampler", "chain_schedule"]
