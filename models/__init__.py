"""The U-Net framework-neutrally: its configs, the named presets and its structure (no
framework imports)."""

from ddpm_core.models.architecture import (
    BlockSpec,
    ClassifierConfig,
    LevelSpec,
    UNetPlan,
    check_conditioning,
    check_input_shape,
    classifier_config,
    count_parameters,
    parameter_shapes,
    timestep_frequencies,
    unet_plan,
)
from ddpm_core.models.configs import (
    PREDICTIONS,
    SCHEDULES,
    VARIANCES,
    WEIGHTINGS,
    TrainConfig,
    UNetConfig,
    output_channels,
    with_head,
)
from ddpm_core.models.presets import Preset, get_preset, list_presets, unet_config

__all__ = [
    "PREDICTIONS",
    "SCHEDULES",
    "VARIANCES",
    "WEIGHTINGS",
    "BlockSpec",
    "ClassifierConfig",
    "LevelSpec",
    "Preset",
    "TrainConfig",
    "UNetConfig",
    "UNetPlan",
    "check_conditioning",
    "check_input_shape",
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
