"""Compatibility: the names of ``ddpm_core.runs`` now live in the application layer.

``ddpm_core.runs.TrainOptions`` and the other names documented before the application layer
moved to ``ddpm_core.app`` (folder ``app/``) keep working from here; new code imports from
the ``ddpm_core.app`` module that holds each name.
"""

from ddpm_core.app.run.atomic import atomic_write_bytes, atomic_write_json
from ddpm_core.app.run.images import image_grid, save_npz, save_png, to_uint8
from ddpm_core.app.run.options import (
    BACKENDS,
    DEVICES,
    LOSSES,
    PREDICTIONS,
    TIMESTEP_SAMPLERS,
    VARIANCES,
    TrainOptions,
    check_loss_variance,
    resolve_options,
)
from ddpm_core.app.run.rundir import (
    RUN_FORMAT,
    RunPaths,
    make_schedule,
    read_run_json,
    schedule_dict,
    write_run,
    write_run_json,
)
from ddpm_core.app.run.splits import interpolation_sources
from ddpm_core.app.sampling.chains import SAMPLERS, chain_schedule
from ddpm_core.app.training.logs import CsvLog, Progress
from ddpm_core.app.training.seeding import batch_indices, flip_mask, step_seed

__all__ = [
    "BACKENDS",
    "DEVICES",
    "LOSSES",
    "PREDICTIONS",
    "RUN_FORMAT",
    "SAMPLERS",
    "TIMESTEP_SAMPLERS",
    "VARIANCES",
    "CsvLog",
    "Progress",
    "RunPaths",
    "TrainOptions",
    "atomic_write_bytes",
    "atomic_write_json",
    "batch_indices",
    "chain_schedule",
    "check_loss_variance",
    "flip_mask",
    "image_grid",
    "interpolation_sources",
    "make_schedule",
    "read_run_json",
    "resolve_options",
    "save_npz",
    "save_png",
    "schedule_dict",
    "step_seed",
    "to_uint8",
    "write_run",
    "write_run_json",
]
