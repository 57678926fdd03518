"""Framework-neutral model presets and the U-Net's structure (no framework imports)."""

from ddpm_core.models.architecture import (
    BlockSpec,
    ClassifierConfig,
    LevelSpec,
    UNetPlan,
    check_conditioning,
    classifier_config,
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
    "ClassifierConfig",
    "LevelSpec",
    "Preset",
    "TrainConfig",
    "UNetConfig",
    "UNetPlan",
    "check_conditioning",
    "classifier_config",
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
