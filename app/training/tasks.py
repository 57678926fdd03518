"""``ddpm train``'s task (:class:`DiffusionTask`): its data, configs and run.json, the
completion of its options, and the weights of ``--init``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_core.app.run.integrity import check_finite, verify_file
from ddpm_core.app.run.options import TrainOptions, resolve_options, with_defaults
from ddpm_core.app.run.resume import resume_options
from ddpm_core.app.run.rundir import RunPaths, read_run_json, write_run
from ddpm_core.app.training.protocol import InitWeights, TrainData

__all__ = ["DiffusionTask", "as_json", "check_image_shape", "complete_options", "load_init_weights",
           "load_train_data"]


class DiffusionTask:
    """``ddpm train``: the diffusion model (unconditional or class-conditional)."""

    grids = True

    def complete(self, options: TrainOptions) -> TrainOptions:
        return complete_options(options)

    def load_data(self, options: TrainOptions) -> TrainData:
        from ddpm_core.data import load_dataset, load_labeled_dataset
        from ddpm_core.models import get_preset

        name = options.data or get_preset(options.preset).data
        if not options.class_conditional:
            return TrainData(load_dataset(name, "train"))
        try:
            labeled = load_labeled_dataset(name, "train")
        except ValueError as e:
            raise ValueError(f"--class-conditional needs labeled data: {e}") from e
        return TrainData(labeled.images, labeled.labels, tuple(labeled.class_names))

    def configs(self, options: TrainOptions, data: TrainData) -> tuple[Any, Any]:
        _, unet, train = resolve_options(options, data.num_classes or None)
        check_image_shape(options, data.images, unet)
        return unet, train

    def label_dropout(self, options: TrainOptions) -> float | None:
        return float(options.label_dropout or 0.0) if options.class_conditional else None

    def read_info(self, run_dir: str | Path) -> dict[str, Any]:
        return read_run_json(run_dir)

    def check_resume(self, options: TrainOptions, info: dict[str, Any], model: Any) -> None:
        if info["preset"] != options.preset or info["unet"] != as_json(model):
            raise ValueError(f"{RunPaths.of(options.out).run_json}: the run was trained with "
                             f"preset {info['preset']!r} and a different U-Net; cannot resume "
                             f"it with preset {options.preset!r}")

    def write_info(self, options: TrainOptions, model: Any, train: Any, data: TrainData,
                   step: int, **extra: Any) -> None:
        if options.class_conditional:
            extra["classes"] = data.classes()
        write_run(options.out, options, model, train, step, **extra)

    def weight_paths(self, paths: RunPaths) -> list[Path]:
        return [paths.model, paths.ema]

    def report(self, options: TrainOptions, backend: Any, data: TrainData) -> dict[str, Any]:
        return {}


def complete_options(options: TrainOptions) -> TrainOptions:
    """Unset options: the stored ones of a resumed run, else the defaults."""
    if not options.resume:
        return with_defaults(options)
    return resume_options(options, read_run_json(options.out), RunPaths.of(options.out).run_json)


def load_train_data(options: TrainOptions, preset: Any, unet: Any) -> np.ndarray:
    """The unlabeled training split, uint8 (N, H, W, C), checked against ``unet``."""
    from ddpm_core.data import load_dataset

    images = load_dataset(options.data or preset.data, "train")
    check_image_shape(options, images, unet)
    return images


def check_image_shape(options: TrainOptions, images: np.ndarray, unet: Any) -> None:
    """The training images must have the preset's (H, W, C)."""
    from ddpm_core.models import get_preset

    want = (unet.image_size, unet.image_size, unet.in_channels)
    if images.shape[1:] != want:
        name = options.data or get_preset(options.preset).data
        raise ValueError(f"{name}: images of shape {images.shape[1:]} (H, W, C) do not fit "
                         f"preset {options.preset!r}, which needs {want}")


def load_init_weights(run_dir: str | Path, unet: Any) -> InitWeights:
    """The weights of run ``run_dir`` for a new run whose U-Net is ``unet``.

    Raises ValueError naming the first U-Net field that differs (the architectures must be
    the same), and the errors of run.json, hash and finiteness checks of the source files.
    """
    from ddpm_core.interop.convert import load_safetensors

    info = read_run_json(run_dir)
    mine, theirs = as_json(unet), info["unet"]
    diff = [k for k in sorted(set(mine) | set(theirs))
            if k != "dropout" and mine.get(k) != theirs.get(k)]
    if diff:
        k = diff[0]
        raise ValueError(f"--init {run_dir}: its U-Net differs from this run's: {k} is "
                         f"{theirs.get(k)!r} there and {mine.get(k)!r} here (the architectures "
                         "must match; choose the preset and --prediction/--variance of that run)")
    paths, arrays = RunPaths.of(run_dir), []
    for path in (paths.model, paths.ema):
        if not path.is_file():
            raise FileNotFoundError(f"--init {run_dir}: {path} is missing")
        verify_file(info, path)
        weights = load_safetensors(path)
        check_finite(path, weights)
        arrays.append(weights)
    return InitWeights(*arrays)


def as_json(obj: Any) -> Any:
    return json.loads(json.dumps(dataclasses.asdict(obj), default=list))
