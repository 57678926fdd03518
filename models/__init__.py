"""Framework-neutral model presets and the U-Net's structure (no framework imports)."""

from ddpm_core.models.architecture import (
    BlockSpec,
    LevelSpec,
    UNetPlan,
    count_parameters,
    parameter_shapes,
    timestep_frequencies,
    unet_plan,
)
from ddpm_core.models.presets import (
    PREDICTIONS,
    VARIANCES,
    Preset,
    TrainConfig,
    UNetConfig,
    get_preset,
    list_presets,
    output_channels,
    unet_config,
    with_head,
)

__all__ = [
    "PREDICTIONS",
    "VARIANCES",
    "BlockSpec",
    "LevelSpec",
    "Preset",
    "TrainConfig",
    "UNetConfig",
    "UNetPlan",
    "count_parameters",
    "get_preset",
    "list_presets",
    "output_channels",
    "unet_config",
    "parameter_shapes",
    "timestep_frequencies",
    "unet_plan",
    "with_head",
]
