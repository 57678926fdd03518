"""The run directory of a noise-aware classifier (``ddpm train-classifier``).

::

    CLF/
      run.json               kind "classifier": the classifier config, the diffusion
                             schedule it was trained on (original-chain t), the classes,
                             backend, data, step, file hashes
      model.safetensors      the weights, canonical PyTorch ``state_dict`` naming (either
                             backend reads them through ``ddpm_core.interop.convert``)
      state-<backend>.*      optimizer, step (resumable, like a diffusion run)
      log.csv

Sampling with classifier guidance reads a classifier run with :func:`read_classifier_run`
and checks it against the model with :func:`check_classifier_fits`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from ddpm_core.app.atomic import atomic_write_json
from ddpm_core.app.options import BACKENDS
from ddpm_core.app.rundir import RunPaths, load_run_json
from ddpm_core.app.schema import validate_schedule_entry

__all__ = ["CLASSIFIER_FORMAT", "check_classifier_fits", "read_classifier_run",
           "write_classifier_run"]

CLASSIFIER_FORMAT = 1
_KEYS = ("format", "kind", "backend", "classifier", "schedule", "classes", "data", "step")


def write_classifier_run(run_dir: str | os.PathLike, *, backend: str, config: Any,
                         schedule: Mapping[str, Any], class_names: Sequence[str], data: str,
                         step: int, **extra: Any) -> dict[str, Any]:
    """Write ``run_dir/run.json`` of a classifier run atomically; returns the dict written.

    ``config`` is a ``ClassifierConfig``; ``schedule`` the run.json schedule entry of the
    diffusion chain the classifier was trained on; ``extra`` keys (``options``, ``files``,
    ``train``) are stored alongside.
    """
    info = {"format": CLASSIFIER_FORMAT, "kind": "classifier", "backend": backend,
            "classifier": config.to_dict(), "schedule": dict(schedule),
            "classes": {"num_classes": config.num_classes, "names": list(class_names)},
            "data": str(data), "step": int(step), **extra}
    _validate(info, RunPaths.of(run_dir).run_json)
    atomic_write_json(RunPaths.of(run_dir).run_json, info)
    return info


def read_classifier_run(run_dir: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """``(ClassifierConfig, run_info)`` of a classifier run; errors name the file and field."""
    from ddpm_core.models import ClassifierConfig

    path, info = load_run_json(run_dir, "a classifier run written by `ddpm train-classifier`")
    _validate(info, path)
    try:
        config = ClassifierConfig.from_dict(info["classifier"])
    except (TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: field 'classifier' is not a classifier config ({e})") from e
    return config, info


def _validate(info: Any, path: Any) -> None:
    if not isinstance(info, dict) or info.get("kind") != "classifier":
        kind = info.get("kind", "a diffusion run") if isinstance(info, dict) else info
        raise ValueError(f"{path}: not a classifier run (kind {kind!r}); train one with "
                         "`ddpm train-classifier`")
    missing = [k for k in _KEYS if k not in info]
    if missing:
        raise ValueError(f"{path}: field {missing[0]!r} is missing")
    if info["format"] != CLASSIFIER_FORMAT:
        raise ValueError(f"{path}: field 'format' is {info['format']!r}; allowed: "
                         f"{CLASSIFIER_FORMAT}")
    if info["backend"] not in BACKENDS:
        raise ValueError(f"{path}: field 'backend' is {info['backend']!r}; allowed: "
                         f"{', '.join(BACKENDS)}")
    classes = info["classes"]
    if (not isinstance(classes, dict) or not isinstance(classes.get("names"), list)
            or len(classes["names"]) != classes.get("num_classes")):
        raise ValueError(f"{path}: field 'classes' is {classes!r}; allowed: "
                         "{'num_classes': K, 'names': [K names]}")
    validate_schedule_entry(info["schedule"], path)


def check_classifier_fits(config: Any, info: Mapping[str, Any], unet: Any,
                          schedule_entry: Mapping[str, Any], num_classes: int | None,
                          path: Any = "classifier") -> None:
    """Refuse a classifier that cannot guide a model: another image size or channel count,
    another diffusion chain (T), or (for a class-conditional model) other classes."""
    mine = config.unet
    for field in ("image_size", "in_channels"):
        if getattr(mine, field) != getattr(unet, field):
            raise ValueError(f"{path}: the classifier takes {field}={getattr(mine, field)} but "
                             f"the model's {field} is {getattr(unet, field)}")
    T, want = info["schedule"]["num_timesteps"], schedule_entry["num_timesteps"]
    if T != want:
        raise ValueError(f"{path}: the classifier was trained on a {T}-step chain but the "
                         f"model's chain has {want} steps")
    if num_classes and num_classes != config.num_classes:
        raise ValueError(f"{path}: the classifier has {config.num_classes} classes but the "
                         f"model has {num_classes}")
