"""The run directory: its paths, run.json and the schedule it records.

Its files (who writes each, when, what it holds, what is checked) are described in
docs/run-directory.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_core.app.run.atomic import atomic_write_json
from ddpm_core.app.run.options import BACKENDS, PREDICTIONS, VARIANCES, TrainOptions
from ddpm_core.app.run.schema import validate_run_json
from ddpm_core.checks import check_choice, check_int
from ddpm_core.schedule_entry import schedule_from_entry

__all__ = [
    "RUN_FORMAT",
    "RUN_KEYS",
    "RunPaths",
    "load_run_json",
    "make_schedule",
    "plain_json",
    "read_run_json",
    "run_options_dict",
    "schedule_dict",
    "write_run",
    "write_run_json",
]

RUN_FORMAT = 2
RUN_KEYS = ("format", "backend", "preset", "unet", "train", "schedule", "prediction",
            "variance", "data", "step")


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """The files of one run directory."""

    root: Path

    @classmethod
    def of(cls, run_dir: str | os.PathLike) -> RunPaths:
        return cls(Path(run_dir))

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def model(self) -> Path:
        return self.root / "model.safetensors"

    @property
    def ema(self) -> Path:
        return self.root / "ema.safetensors"

    @property
    def log(self) -> Path:
        return self.root / "log.csv"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    def state(self, backend: str, suffix: str) -> Path:
        """``state-<backend><suffix>``, e.g. ``state("torch", ".json")``."""
        return self.root / f"state-{backend}{suffix}"

    def sample_png(self, step: int) -> Path:
        return self.samples / f"step-{step:06d}.png"


def train_seconds(run_dir: str | os.PathLike) -> float | None:
    """Training wall time of a run: the sum of ``log.csv``'s ``seconds`` column (each row
    holds its logging window's), or None without a log or that column."""
    import csv

    log = RunPaths.of(run_dir).log
    if not log.is_file():
        return None
    with open(log, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return sum(float(r["seconds"]) for r in rows) if rows and "seconds" in rows[0] else None


def write_run_json(run_dir: str | os.PathLike, *, backend: str, preset: str, unet: Any,
                   train: Any, schedule: Mapping[str, Any], prediction: str, variance: str,
                   data: str, step: int, **extra: Any) -> dict[str, Any]:
    """Write ``run_dir/run.json`` (format 2) atomically and return the dict written.

    ``unet`` and ``train`` may be dataclasses (e.g. ``Preset.unet``) or mappings; the
    effective training settings belong in ``train``. ``extra`` keys (e.g. ``options``,
    ``loss``) are stored alongside.
    """
    check_choice("backend", backend, BACKENDS)
    check_choice("prediction", prediction, PREDICTIONS)
    check_choice("variance", variance, VARIANCES)
    check_int("step", step, 0)
    info = {"format": RUN_FORMAT, "backend": backend, "preset": preset, "unet": plain_json(unet),
            "train": plain_json(train), "schedule": plain_json(schedule), "prediction": prediction,
            "variance": variance, "data": str(data), "step": int(step)}
    info.update({k: plain_json(v) for k, v in extra.items()})
    atomic_write_json(RunPaths.of(run_dir).run_json, info)
    return info


def write_run(run_dir: str | os.PathLike, options: TrainOptions, unet: Any, train: Any,
              step: int, **extra: Any) -> dict[str, Any]:
    """run.json of a training run (both backends call this, so the files agree).

    ``unet``/``train`` are the resolved configs of :func:`resolve_options`.
    """
    return write_run_json(run_dir, backend=options.backend, preset=options.preset, unet=unet,
                          train=train, schedule=schedule_dict(train),
                          prediction=train.prediction, variance=train.variance,
                          data=options.data or _preset_data(options.preset), step=step,
                          seed=options.seed, timestep_sampler=options.timestep_sampler,
                          options=run_options_dict(options), **extra)


def run_options_dict(options: TrainOptions) -> dict[str, Any]:
    """The options of the run as given to the loop (resolved; ``out``/``resume`` left out)."""
    return {k: v for k, v in options.to_dict().items() if k not in ("out", "resume")}


def _preset_data(name: str) -> str:
    from ddpm_core.models import get_preset

    return get_preset(name).data


def read_run_json(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``run_dir/run.json`` and check it against its format's schema
    (:mod:`ddpm_core.app.run.schema`); errors name the file, the field and what is allowed."""
    path, info = load_run_json(run_dir, "a run directory written by `ddpm train`")
    return validate_run_json(info, path)


def load_run_json(run_dir: str | os.PathLike, what: str) -> tuple[Path, Any]:
    """``(path, parsed JSON)`` of ``run_dir/run.json``, unvalidated; ``what`` completes the
    missing-file message ("is RUN <what>?")."""
    path = RunPaths.of(run_dir).run_json
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no run.json; is {run_dir!s} {what}?")
    try:
        return path, json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable run.json ({e})") from e


def schedule_dict(train: Any) -> dict[str, Any]:
    """The ``schedule`` entry of run.json from a ``TrainConfig``."""
    return {"name": train.schedule, "num_timesteps": train.num_timesteps,
            "beta_start": train.beta_start, "beta_end": train.beta_end}


def make_schedule(schedule: Mapping[str, Any]) -> Any:
    """``ddpm_core.Schedule`` from a run.json ``schedule`` entry.

    The entry ``ddpm train`` writes (:func:`schedule_dict`) or an imported one: given
    ``betas`` and ``rescale_zero_terminal_snr`` (:mod:`ddpm_core.schedule_entry`).
    """
    return schedule_from_entry(schedule)


def plain_json(obj: Any) -> Any:
    """Dataclasses/mappings/tuples -> JSON-ready dicts and lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): plain_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_json(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
