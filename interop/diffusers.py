"""diffusers' ``UNet2DModel`` / ``DDPMPipeline`` folders <-> ddpm-core run directories.

NumPy only, like :mod:`ddpm_core.interop.convert`: neither torch, jax nor diffusers is
imported, so the JAX backend samples an imported run on a machine without PyTorch. The
paper's released models (``google/ddpm-cifar10-32``, ``google/ddpm-celebahq-256``,
``google/ddpm-church-256``, ... and the ``ddpm-ema-*`` variants) are such folders::

    PATH/
      model_index.json                          (written on export; not needed to import)
      unet/config.json                          UNet2DModel config
      unet/diffusion_pytorch_model.safetensors  weights (a pickled .bin is refused)
      scheduler/scheduler_config.json           DDPMScheduler config
      ddpm_run.json                             (written on export: the source run.json)

The U-Net is the same network in both libraries when the diffusers config says
``freq_shift=1``, ``flip_sin_to_cos=False``, ``downsample_padding=0``, one attention head
(``attention_head_dim=None``), ``act_fn="silu"``, ``resnet_time_scale_shift="default"``,
``mid_block_scale_factor=1``, ... (:data:`UNET_REQUIRED`); diffusers' defaults differ on
several of these, and each changes the output, so every field is checked and the first one
that does not fit is named. The state dicts correspond one to one:

==================================== ===============================================
ddpm-core (canonical)                diffusers
==================================== ===============================================
temb.dense.0 / temb.dense.1          time_embedding.linear_1 / linear_2
down.i.block.j / down.i.attn.j       down_blocks.i.resnets.j / down_blocks.i.attentions.j
down.i.downsample.conv               down_blocks.i.downsamplers.0.conv
mid.block_1 / mid.attn_1 / block_2   mid_block.resnets.0 / attentions.0 / resnets.1
up.i.*  (level i, 0 = full size)     up_blocks.(L-1-i).*  (upsample -> upsamplers.0)
temb_proj / nin_shortcut             time_emb_proj / conv_shortcut
attention norm / q, k, v, proj_out   group_norm / to_q, to_k, to_v, to_out.0
  (1x1 convs, (C, C, 1, 1))            (linear layers, (C, C); old files: query, key,
                                       value, proj_attn)
norm_out                             conv_norm_out
==================================== ===============================================
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_core.app.run.atomic import atomic_write_bytes, atomic_write_json
from ddpm_core.app.run.integrity import file_hashes
from ddpm_core.app.run.progress import Progress
from ddpm_core.app.run.rundir import RUN_KEYS, RunPaths, read_run_json, write_run_json
from ddpm_core.interop.convert import load_safetensors, save_safetensors
from ddpm_core.interop.diffusers_config import (
    SCHEDULER_DEFAULTS,
    SchedulerSettings,
    read_scheduler_config,
    write_scheduler_config,
)
from ddpm_core.interop.diffusers_unet import (
    UNET_DEFAULTS,
    UNET_REQUIRED,
    diffusers_names,
    state_from_diffusers,
    state_to_diffusers,
    unet_from_diffusers_config,
    unet_to_diffusers_config,
)
from ddpm_core.models import (
    TrainConfig,
    UNetConfig,
    get_preset,
    list_presets,
    output_channels,
    with_head,
)
from ddpm_core.schedule_entry import schedule_from_entry
from ddpm_core.schedules import Schedule

__all__ = [
    "SIDECAR",
    "UNET_DEFAULTS",
    "UNET_REQUIRED",
    "diffusers_names",
    "export_diffusers",
    "import_diffusers",
    "read_diffusers_folder",
    "schedule_from_run_info",
    "state_from_diffusers",
    "state_to_diffusers",
    "unet_from_diffusers_config",
    "unet_to_diffusers_config",
]

UNET_DIR, SCHEDULER_DIR = "unet", "scheduler"
CONFIG, WEIGHTS, SCHEDULER_CONFIG = "config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json"
MODEL_INDEX = "model_index.json"
SIDECAR = "ddpm_run.json"
CUSTOM_PRESET = "custom"

# --------------------------------------------------------------------------- folders

def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; a diffusers DDPM folder has {UNET_DIR}/{CONFIG}, "
                                f"{UNET_DIR}/{WEIGHTS} and {SCHEDULER_DIR}/{SCHEDULER_CONFIG}")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def _weights_path(unet_dir: Path) -> Path:
    path = unet_dir / WEIGHTS
    if path.is_file():
        return path
    pickled = unet_dir / "diffusion_pytorch_model.bin"
    if pickled.is_file():
        folder = unet_dir.parent
        raise ValueError(
            f"{pickled}: a pickled PyTorch file, which ddpm-core does not load (unpickling runs code). "
            f"If you trust it, convert it once to {WEIGHTS} with diffusers: python -c \"from diffusers "
            f"import UNet2DModel; UNet2DModel.from_pretrained('{folder}', subfolder='unet')"
            f".save_pretrained('{unet_dir}', safe_serialization=True)\"")
    present = sorted(p.name for p in unet_dir.iterdir()) if unet_dir.is_dir() else []
    raise FileNotFoundError(f"{path}: missing (the folder holds {present}); sharded and variant "
                            f"(fp16) checkpoints are not read: save the model as one {WEIGHTS}")


def _with_file(path: Path, fn: Any, *args: Any) -> Any:
    """``fn(*args)``, its ValueError prefixed with the file it came from."""
    try:
        return fn(*args)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def read_diffusers_folder(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray], dict]:
    """The raw contents of a diffusers DDPM folder: ``(unet config, weights, scheduler config)``.

    Weights are read with safetensors into NumPy arrays (no pickle, no framework).
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder; expected a diffusers DDPM pipeline folder "
                                f"({UNET_DIR}/, {SCHEDULER_DIR}/)")
    unet_config = _read_json(root / UNET_DIR / CONFIG)
    scheduler_config = _read_json(root / SCHEDULER_DIR / SCHEDULER_CONFIG)
    weights_path = _weights_path(root / UNET_DIR)
    try:
        weights = load_safetensors(weights_path)
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ValueError(f"{weights_path}: not a readable safetensors file of NumPy dtypes ({e})") from e
    return unet_config, weights, scheduler_config


def _check_empty(folder: Path, what: str) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(f"{folder}: already exists and is not an empty folder; {what} never "
                              "overwrites files (choose a new path)")


# --------------------------------------------------------------------------- run directories

def schedule_from_run_info(info: Mapping[str, Any]) -> Schedule:
    """The :class:`~ddpm_core.Schedule` of a run.json (``info["schedule"]``).

    Reads what ``ddpm train`` writes and what :func:`import_diffusers` writes (given
    ``betas``, ``rescale_zero_terminal_snr``); see
    :func:`ddpm_core.schedule_entry.schedule_from_entry`.
    """
    return schedule_from_entry(info["schedule"])


def _network_fields(config: UNetConfig) -> dict[str, Any]:
    """Everything of a U-Net config but dropout (training only: the same network at inference)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "dropout"}


def _match_preset(unet: UNetConfig, prediction: str, variance: str, preset: str | None) -> str | None:
    names = list_presets() if preset is None else [preset]
    for name in names:
        theirs = with_head(get_preset(name).unet, prediction=prediction, variance=variance)
        if _network_fields(theirs) == _network_fields(unet):
            return name
        if preset is not None:
            diff = sorted(k for k, v in _network_fields(theirs).items() if _network_fields(unet)[k] != v)
            raise ValueError(f"preset={preset!r} does not match the imported U-Net (differs in {diff})")
    return None


def _train_section(base: TrainConfig, schedule: Mapping[str, Any], prediction: str,
                   variance: str) -> TrainConfig:
    """The preset's training defaults with the imported objective and (where a TrainConfig
    can say it) schedule; run.json's ``schedule`` entry stays the authority."""
    train = dataclasses.replace(base, prediction=prediction, variance=variance,
                                num_timesteps=schedule["num_timesteps"])
    if schedule["name"] == "betas" or schedule.get("rescale_zero_terminal_snr"):
        return train  # a TrainConfig has no field for given or rescaled betas
    start, end = float(schedule["beta_start"]), float(schedule["beta_end"])
    if not 0 < start <= end < 1:  # TrainConfig's own limits
        return train
    return dataclasses.replace(train, schedule=schedule["name"], beta_start=start, beta_end=end)


def _folder_configs(info: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (unet, scheduler) diffusers configs of a run.json."""
    unet = UNetConfig.from_dict(info["unet"])
    scheduler = write_scheduler_config(info["schedule"], prediction=info["prediction"],
                                       variance=info["variance"], clip=info.get("clip", 1.0))
    return unet_to_diffusers_config(unet), scheduler


def _normalised(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> Any:
    merged = {**defaults, **{k: v for k, v in config.items() if not k.startswith("_")}}
    return json.loads(json.dumps(merged))


def _sidecar_run(root: Path, unet_config: dict, scheduler_config: dict) -> dict[str, Any] | None:
    """The exported run's run.json, if the folder's configs are still what it exports to."""
    path = root / SIDECAR
    if not path.is_file():
        return None
    info = _read_json(path)
    if any(k not in info for k in RUN_KEYS):
        return None
    try:
        unet, scheduler = _folder_configs(info)
    except (ValueError, TypeError, KeyError):
        return None
    same = (_normalised(unet, UNET_DEFAULTS) == _normalised(unet_config, UNET_DEFAULTS)
            and _normalised(scheduler, SCHEDULER_DEFAULTS) == _normalised(scheduler_config, SCHEDULER_DEFAULTS))
    return info if same else None


def _safetensors_bytes(state: Mapping[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v) for k, v in state.items()})


def _float32(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float32, copy=False) if np.issubdtype(v.dtype, np.floating) else v
            for k, v in state.items()}


def _new_run_info(root: Path, unet: UNetConfig, settings: SchedulerSettings, preset: str | None) -> dict[str, Any]:
    """run.json of an imported folder: the preset's training defaults (if one matches)
    with the folder's U-Net, schedule, objective and clipping."""
    found = get_preset(preset) if preset else None
    train = _train_section(found.train if found else TrainConfig(), settings.schedule,
                           settings.prediction, settings.variance)
    return {"backend": "torch", "preset": preset or CUSTOM_PRESET, "unet": unet, "train": train,
            "schedule": settings.schedule, "prediction": settings.prediction,
            "variance": settings.variance, "data": found.data if found else "", "step": 0,
            "clip": settings.clip, "imported_from": str(root.resolve())}


def import_diffusers(path: str | os.PathLike, out_run_dir: str | os.PathLike, *,
                     preset: str | None = None, data: str | None = None,
                     progress: bool = False) -> dict[str, Any]:
    """Read a diffusers DDPM folder and write a ddpm-core run directory.

    Parameters
    ----------
    path : path
        The pipeline folder (``unet/config.json``, ``unet/diffusion_pytorch_model.safetensors``,
        ``scheduler/scheduler_config.json``).
    out_run_dir : path
        The new run directory; it must not exist or be empty.
    preset : str, optional
        Record this preset (its U-Net must match, dropout aside). Default: the first preset
        whose U-Net matches, else ``"custom"``.
    data : str, optional
        The run's dataset name. Default: the preset's, else ``""``.
    progress : bool
        Show the stages (read, convert, each file written) on stderr
        (:class:`~ddpm_core.app.run.progress.Progress`).

    Returns
    -------
    dict
        The run.json written: backend ``"torch"`` (the weights are in the canonical
        layout, which both backends read), the U-Net config, the schedule entry,
        prediction, variance, ``clip`` (the x0 clipping range or None), step 0 and
        ``imported_from``. ``model.safetensors`` and ``ema.safetensors`` hold the same
        weights (float32).

    A folder written by :func:`export_diffusers` carries ``ddpm_run.json``; when the folder's
    configs are still those that run exports to, its run.json is restored as it was (so
    ``import_diffusers(export_diffusers(run))`` is the identity).
    """
    with Progress(5, "import", unit="stage", enabled=progress, every=20.0) as bar:
        return _import(Path(path), Path(out_run_dir), preset, data, bar)


def _import(root: Path, out: Path, preset: str | None, data: str | None, bar: Progress) -> dict[str, Any]:
    unet_config, weights, scheduler_config = read_diffusers_folder(root)
    bar.update(1, done="read")
    scheduler_file = root / SCHEDULER_DIR / SCHEDULER_CONFIG
    settings = _with_file(scheduler_file, read_scheduler_config, scheduler_config)
    unet = _with_file(root / UNET_DIR / CONFIG, unet_from_diffusers_config, unet_config)
    want = output_channels(unet.in_channels, prediction=settings.prediction, variance=settings.variance)
    if unet.out_channels != want:
        raise ValueError(f"{root / UNET_DIR / CONFIG}: out_channels={unet.out_channels} does not fit "
                         f"variance_type={settings.variance!r} in {scheduler_file} (needs {want})")
    state = _float32(_with_file(root / UNET_DIR / WEIGHTS, state_from_diffusers, weights, unet))
    bar.update(1, done="converted")
    _check_empty(out, "import")
    name = _match_preset(unet, settings.prediction, settings.variance, preset)
    info = _sidecar_run(root, unet_config, scheduler_config) or _new_run_info(root, unet, settings, name)
    if preset is not None:
        info["preset"] = preset
    if data is not None:
        info["data"] = data
    paths = RunPaths.of(out)
    blob = _safetensors_bytes(state)  # serialised once for both files
    for file in (paths.model, paths.ema):
        atomic_write_bytes(file, blob)
        bar.update(1, done=file.name)
    info["files"] = file_hashes([paths.model, paths.ema])  # this run's files, not the exporter's
    written = write_run_json(out, **{k: v for k, v in info.items() if k not in ("format", "pending")})
    bar.update(1, done="run.json")
    return written


def export_diffusers(run_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                     use_ema: bool = True, progress: bool = False) -> Path:
    """Write a run as a folder that diffusers' ``DDPMPipeline.from_pretrained`` loads.

    Parameters
    ----------
    run_dir : path
        A run directory (trained or imported).
    out_dir : path
        The new folder; it must not exist or be empty.
    use_ema : bool
        Export ``ema.safetensors`` (default, what samples) or ``model.safetensors``.
    progress : bool
        Show the stages (convert, each file written) on stderr.

    Returns
    -------
    Path
        ``out_dir``, holding ``model_index.json``, ``unet/config.json``,
        ``unet/diffusion_pytorch_model.safetensors``, ``scheduler/scheduler_config.json``
        (the run's schedule, prediction, variance and clipping; a run.json without ``clip``
        clips to [-1, 1] as ``ddpm sample`` does) and ``ddpm_run.json`` (the run.json).

    Raises
    ------
    ValueError
        Naming what diffusers cannot express: ``ch_mult[0] != 1``, ``resamp_with_conv=False``,
        ``prediction="mean"``, ``variance="learned"``, a respaced schedule.
    """
    with Progress(3, "export", unit="stage", enabled=progress, every=30.0) as bar:
        return _export(RunPaths.of(run_dir), Path(out_dir), use_ema, bar)


def _export(paths: RunPaths, out: Path, use_ema: bool, bar: Progress) -> Path:
    info = read_run_json(paths.root)
    unet = UNetConfig.from_dict(info["unet"])
    unet_config, scheduler_config = _with_file(paths.run_json, _folder_configs, info)
    source = paths.ema if use_ema else paths.model
    state = _with_file(source, state_to_diffusers, load_safetensors(source), unet)
    bar.update(1, done="converted")
    _check_empty(out, "export")
    save_safetensors(out / UNET_DIR / WEIGHTS, state, metadata={"format": "pt"})
    bar.update(1, done=WEIGHTS)
    atomic_write_json(out / UNET_DIR / CONFIG, unet_config)
    atomic_write_json(out / SCHEDULER_DIR / SCHEDULER_CONFIG, scheduler_config)
    atomic_write_json(out / SIDECAR, info)
    atomic_write_json(out / MODEL_INDEX, {"_class_name": "DDPMPipeline",
                                          "scheduler": ["diffusers", "DDPMScheduler"],
                                          "unet": ["diffusers", "UNet2DModel"]})
    bar.update(1, done="configs")
    return out
