"""Run directories, training options and image files, shared by every backend.

Framework-neutral: NumPy and the standard library only (Pillow is imported inside
:func:`save_png`). Both the PyTorch and the JAX backend read and write the same run
directory through this module::

    RUN/
      run.json               format 1: backend, preset, unet, train, schedule, prediction,
                             variance, data, step (see docs/CONTRACT.md)
      model.safetensors      raw weights, canonical PyTorch ``state_dict`` naming
      ema.safetensors        EMA weights (what samples)
      state-<backend>.*      optimizer, step, RNG (never pickled objects)
      log.csv                one row per logged step
      samples/step-XXXXXX.png

Everything written here is written atomically: a temporary file in the same folder,
``fsync``, then ``os.replace``, so a crash leaves either the old or the new file.

Determinism
-----------
Data order, flips, timesteps and noise depend only on ``(seed, step)``
(:func:`step_seed`, :func:`batch_indices`), so a resumed run continues exactly and
``N`` ranks each take a fixed slice of the same global batch.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import secrets
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ddpm_core.losses import LOSSES
from ddpm_core.parameterization import PREDICTIONS, VARIANCES

if TYPE_CHECKING:
    from ddpm_core.schedules import Schedule

__all__ = [
    "BACKENDS",
    "LOSSES",
    "PREDICTIONS",
    "RUN_FORMAT",
    "TIMESTEP_SAMPLERS",
    "VARIANCES",
    "SAMPLERS",
    "CsvLog",
    "Progress",
    "RunPaths",
    "TrainOptions",
    "atomic_write_bytes",
    "atomic_write_json",
    "batch_indices",
    "chain_schedule",
    "check_loss_variance",
    "make_schedule",
    "resolve_options",
    "schedule_dict",
    "flip_mask",
    "image_grid",
    "interpolation_sources",
    "read_run_json",
    "save_npz",
    "save_png",
    "step_seed",
    "to_uint8",
    "write_run",
    "write_run_json",
]

RUN_FORMAT = 1
BACKENDS = ("torch", "jax")
TIMESTEP_SAMPLERS = ("uniform", "loss-second-moment")
DEVICES = ("auto", "cpu", "cuda", "gpu", "tpu")
RUN_KEYS = ("format", "backend", "preset", "unet", "train", "schedule", "prediction",
            "variance", "data", "step")


# --------------------------------------------------------------------------- options

def _check_choice(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def _check_int(name: str, value: Any, low: int, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")


def _check_float(name: str, value: Any, low: float, high: float, *, optional: bool = True,
                 low_open: bool = True, high_open: bool = False) -> None:
    if value is None and optional:
        return
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must be a number in {lo}{low}, {high}{hi}; got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Everything ``ddpm train`` needs; ``None`` means "the preset's default".

    Parameters
    ----------
    preset : str
        Model preset name (``ddpm_core.models.list_presets()``).
    out : str
        Run directory (created; with ``resume`` it must hold a run of the same preset).
    backend : {"torch", "jax"}
    steps : int, optional
        Total optimizer steps (absolute, also when resuming).
    resume : bool
        Continue from the checkpoint in ``out``.
    seed : int
        Seeds the initial weights, data order, flips, timesteps and noise.
    batch_size, lr, warmup, grad_clip, ema_decay, dropout, random_flip : optional
        Overrides of the preset's training defaults (SPEC.md: 128, 2e-4, 5000, 1.0,
        0.9999, 0.1, True for CIFAR10). ``batch_size`` is the global batch.
    loss : {"simple", "vlb", "hybrid"}, optional
        L_simple (eq. 14), the bound (eq. 5) or L_simple + lambda * L_vlb.
    prediction : {"eps", "x0", "v", "mean"}, optional
    variance : {"fixed_small", "fixed_large", "learned", "learned_range"}, optional
    timestep_sampler : {"uniform", "loss-second-moment"}
    data : str, optional
        Dataset name or path (``ddpm_core.data.load_dataset``); default the preset's.
    log_every, sample_every, ckpt_every : int
        Intervals in steps; 0 disables (a checkpoint is always written at the end).
    sample_n : int
        Images in each EMA sample grid.
    compile : bool
        ``torch.compile`` / ``jax.jit`` extras on accelerators.
    device : {"auto", "cpu", "cuda", "gpu", "tpu"}
    progress : bool
        Print a progress line to stderr.
    """

    preset: str
    out: str
    backend: str = "torch"
    steps: int | None = None
    resume: bool = False
    seed: int = 0
    batch_size: int | None = None
    lr: float | None = None
    warmup: int | None = None
    grad_clip: float | None = None
    ema_decay: float | None = None
    dropout: float | None = None
    random_flip: bool | None = None
    loss: str | None = None
    prediction: str | None = None
    variance: str | None = None
    timestep_sampler: str = "uniform"
    data: str | None = None
    log_every: int = 50
    sample_every: int = 0
    ckpt_every: int = 1000
    sample_n: int = 64
    compile: bool = False
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.preset, str) or not self.preset:
            raise ValueError(f"preset must be a non-empty preset name; got {self.preset!r}")
        if not isinstance(self.out, (str, os.PathLike)) or not str(self.out):
            raise ValueError(f"out must be a directory path; got {self.out!r}")
        _check_choice("backend", self.backend, BACKENDS)
        for name, allowed in (("loss", LOSSES), ("prediction", PREDICTIONS),
                              ("variance", VARIANCES)):
            if getattr(self, name) is not None:
                _check_choice(name, getattr(self, name), allowed)
        _check_choice("timestep_sampler", self.timestep_sampler, TIMESTEP_SAMPLERS)
        _check_choice("device", self.device, DEVICES)
        _check_int("steps", self.steps, 1, optional=True)
        _check_int("seed", self.seed, 0)
        _check_int("batch_size", self.batch_size, 1, optional=True)
        _check_int("warmup", self.warmup, 0, optional=True)
        for name in ("log_every", "sample_every", "ckpt_every"):
            _check_int(name, getattr(self, name), 0)
        _check_int("sample_n", self.sample_n, 1)
        _check_float("lr", self.lr, 0.0, 1.0)
        _check_float("grad_clip", self.grad_clip, 0.0, math.inf, high_open=True)
        _check_float("ema_decay", self.ema_decay, 0.0, 1.0, low_open=False, high_open=True)
        _check_float("dropout", self.dropout, 0.0, 1.0, low_open=False, high_open=True)
        if self.loss is not None and self.variance is not None:
            check_loss_variance(self.loss, self.variance)

    def replace(self, **changes: Any) -> TrainOptions:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings)."""
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        return d


def check_loss_variance(loss: str, variance: str) -> None:
    """A learned variance needs a loss that trains it; "hybrid" needs a learned variance."""
    learned = variance in ("learned", "learned_range")
    if loss == "hybrid" and not learned:
        raise ValueError("loss='hybrid' needs variance='learned' or 'learned_range'; "
                         f"got variance={variance!r}")
    if learned and loss == "simple":
        raise ValueError(f"variance={variance!r} is only trained by loss='vlb' or 'hybrid' "
                         "(L_simple gives the variance no gradient); got loss='simple'")


_TRAIN_OVERRIDES = {"steps": "num_steps", "warmup": "warmup_steps", "batch_size": "batch_size",
                    "lr": "lr", "grad_clip": "grad_clip", "ema_decay": "ema_decay",
                    "random_flip": "random_flip", "loss": "loss", "prediction": "prediction",
                    "variance": "variance"}


def resolve_options(options: TrainOptions) -> tuple[Any, Any, Any]:
    """The preset with ``options``' overrides applied: ``(preset, unet, train)``.

    ``train`` is the preset's ``TrainConfig`` with every non-``None`` override
    (steps -> num_steps, warmup -> warmup_steps, batch_size, lr, grad_clip, ema_decay,
    random_flip, loss, prediction, variance); ``unet`` has the output head for the
    prediction/variance and the ``dropout`` override. Both backends build from these.
    """
    from ddpm_core.models import get_preset, with_head

    preset = get_preset(options.preset)
    changes = {field: getattr(options, opt) for opt, field in _TRAIN_OVERRIDES.items()
               if getattr(options, opt) is not None}
    train = dataclasses.replace(preset.train, **changes)
    check_loss_variance(train.loss, train.variance)
    unet = with_head(preset.unet, prediction=train.prediction, variance=train.variance)
    if options.dropout is not None:
        unet = dataclasses.replace(unet, dropout=float(options.dropout))
    return preset, unet, train


def schedule_dict(train: Any) -> dict[str, Any]:
    """The ``schedule`` entry of run.json from a ``TrainConfig``."""
    return {"name": train.schedule, "num_timesteps": train.num_timesteps,
            "beta_start": train.beta_start, "beta_end": train.beta_end}


def make_schedule(schedule: Mapping[str, Any]) -> Any:
    """``ddpm_core.Schedule`` from a run.json ``schedule`` dict (see :func:`schedule_dict`)."""
    from ddpm_core import Schedule

    name, T = schedule["name"], int(schedule["num_timesteps"])
    if name == "cosine":
        return Schedule.cosine(T)
    if name in ("linear", "quadratic", "sigmoid", "scaled_linear"):
        return getattr(Schedule, name)(T, beta_start=float(schedule["beta_start"]),
                                       beta_end=float(schedule["beta_end"]))
    raise ValueError(f"schedule name must be one of linear, quadratic, sigmoid, "
                     f"scaled_linear, cosine; got {name!r}")


# --------------------------------------------------------------------------- files

def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # umask applies
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _suppress_oserror():
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (see :func:`atomic_write_bytes`)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    atomic_write_bytes(path, (text + "\n").encode("utf-8"))


class _suppress_oserror:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, value: Any, tb: Any) -> bool:
        return kind is not None and issubclass(kind, OSError)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (Path, os.PathLike)):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def _plain(obj: Any) -> Any:
    """Dataclasses/mappings/tuples -> JSON-ready dicts and lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# --------------------------------------------------------------------------- run.json

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


def write_run_json(run_dir: str | os.PathLike, *, backend: str, preset: str, unet: Any,
                   train: Any, schedule: Mapping[str, Any], prediction: str, variance: str,
                   data: str, step: int, **extra: Any) -> dict[str, Any]:
    """Write ``run_dir/run.json`` (format 1) atomically and return the dict written.

    ``unet`` and ``train`` may be dataclasses (e.g. ``Preset.unet``) or mappings; the
    effective training settings belong in ``train``. ``extra`` keys (e.g. ``options``,
    ``loss``) are stored alongside.
    """
    _check_choice("backend", backend, BACKENDS)
    _check_choice("prediction", prediction, PREDICTIONS)
    _check_choice("variance", variance, VARIANCES)
    _check_int("step", step, 0)
    info = {"format": RUN_FORMAT, "backend": backend, "preset": preset, "unet": _plain(unet),
            "train": _plain(train), "schedule": _plain(schedule), "prediction": prediction,
            "variance": variance, "data": str(data), "step": int(step)}
    info.update({k: _plain(v) for k, v in extra.items()})
    atomic_write_json(RunPaths.of(run_dir).run_json, info)
    return info


def write_run(run_dir: str | os.PathLike, options: TrainOptions, unet: Any, train: Any,
              step: int) -> dict[str, Any]:
    """run.json of a training run (both backends call this, so the files agree).

    ``unet``/``train`` are the resolved configs of :func:`resolve_options`.
    """
    return write_run_json(run_dir, backend=options.backend, preset=options.preset, unet=unet,
                          train=train, schedule=schedule_dict(train),
                          prediction=train.prediction, variance=train.variance,
                          data=options.data or _preset_data(options.preset), step=step,
                          seed=options.seed, timestep_sampler=options.timestep_sampler)


def _preset_data(name: str) -> str:
    from ddpm_core.models import get_preset

    return get_preset(name).data


def read_run_json(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``run_dir/run.json``; errors name the file and the problem."""
    path = RunPaths.of(run_dir).run_json
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no run.json; is {run_dir!s} a run directory "
                                "written by `ddpm train`?")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable run.json ({e})") from e
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(info).__name__}")
    if info.get("format") != RUN_FORMAT:
        raise ValueError(f"{path}: format {info.get('format')!r} is not supported "
                         f"(this version reads format {RUN_FORMAT})")
    missing = [k for k in RUN_KEYS if k not in info]
    if missing:
        raise ValueError(f"{path}: missing keys {missing}")
    return info


# --------------------------------------------------------------------------- CSV log

class CsvLog:
    """Append-only CSV log with a fixed header.

    Parameters
    ----------
    path : path
    fields : sequence of str
        Column names; the first should be ``"step"``.
    resume_step : int, optional
        When given and the file exists, rows with ``step > resume_step`` (written after
        the checkpoint being resumed) are dropped first, so the log matches the weights.
        Otherwise an existing file is replaced.
    """

    def __init__(self, path: str | os.PathLike, fields: Sequence[str], *,
                 resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.fields = list(fields)
        rows = self._kept_rows(resume_step) if resume_step is not None else []
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.path, buf.getvalue().encode("utf-8"))

    def _kept_rows(self, resume_step: int) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return [r for r in rows if (step := _row_step(r)) is not None and step <= resume_step]

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row (missing columns left empty, floats with 6 significant digits)."""
        out = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(out)

    def read(self) -> list[dict[str, str]]:
        with self.path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))


def _row_step(row: Mapping[str, str]) -> int | None:
    try:
        return int(row.get("step", ""))
    except ValueError:
        return None


# --------------------------------------------------------------------------- determinism

def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed that depends only on ``(seed, step, stream)``.

    Backends seed their generator for step ``step`` with this, so the randomness of a
    step does not depend on how many steps ran before it in this process.
    """
    _check_int("seed", seed, 0)
    _check_int("step", step, 0)
    _check_int("stream", stream, 0)
    state = np.random.SeedSequence([int(seed), int(step), int(stream)]).generate_state(2)
    return int((int(state[0]) << 32 | int(state[1])) & ((1 << 63) - 1))


def batch_indices(seed: int, step: int, num_examples: int, batch_size: int, *,
                  rank: int = 0, world_size: int = 1) -> np.ndarray:
    """Dataset indices of this rank's share of the global batch of ``step``.

    The data are visited epoch by epoch, each epoch in the order of a permutation seeded by
    ``(seed, epoch)``; step ``s`` takes global positions ``s*B .. s*B + B - 1`` of that
    endless sequence (``B = batch_size``, the global batch). Rank ``r`` of ``world_size``
    takes the contiguous block ``r*B/W .. (r+1)*B/W - 1`` of it, so the union over ranks is
    the single-process batch in the same order (the DistributedSampler split, but exact for
    any step).

    Returns
    -------
    ndarray of int64, shape (batch_size // world_size,)
    """
    _check_int("num_examples", num_examples, 1)
    _check_int("batch_size", batch_size, 1)
    _check_int("world_size", world_size, 1)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}); got {rank!r}")
    if batch_size % world_size:
        raise ValueError(f"batch_size ({batch_size}) must be divisible by world_size "
                         f"({world_size})")
    per = batch_size // world_size
    pos = step * batch_size + rank * per + np.arange(per, dtype=np.int64)
    epochs, offsets = np.divmod(pos, num_examples)
    out = np.empty(per, dtype=np.int64)
    for epoch in np.unique(epochs):
        perm = _permutation(seed, int(epoch), num_examples)
        sel = epochs == epoch
        out[sel] = perm[offsets[sel]]
    return out


def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([int(seed), int(epoch), 0x5EED]).permutation(n)


def flip_mask(seed: int, step: int, batch_size: int, *, rank: int = 0,
              world_size: int = 1) -> np.ndarray:
    """Boolean (batch_size // world_size,) mask of the images flipped left-right at ``step``.

    Drawn for the whole global batch from ``(seed, step)`` and sliced like
    :func:`batch_indices`.
    """
    per = batch_size // world_size
    rng = np.random.default_rng([int(seed), int(step), 0xF11B])
    return rng.random(batch_size)[rank * per:(rank + 1) * per] < 0.5


# --------------------------------------------------------------------------- images

def to_uint8(x: Any) -> np.ndarray:
    """Map model-range images in [-1, 1] to uint8 {0..255}: round((x + 1) * 127.5), clipped.

    The inverse of ``ddpm_core.data.to_model_range`` on the 256 grid points.
    """
    a = np.asarray(x, dtype=np.float64)
    return np.clip(np.rint((a + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, *, ncols: int | None = None, pad: int = 2,
               pad_value: int = 255) -> np.ndarray:
    """Tile uint8 images (N, H, W, C) into one (rows*(H+pad)+pad, cols*(W+pad)+pad, C) image.

    ``ncols`` defaults to ``ceil(sqrt(N))``; empty cells are ``pad_value``.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[0] == 0:
        raise ValueError("images must be a non-empty uint8 array of shape (N, H, W, C); got "
                         f"dtype {images.dtype} shape {images.shape}")
    n, h, w, c = images.shape
    cols = int(ncols) if ncols else math.ceil(math.sqrt(n))
    if cols < 1:
        raise ValueError(f"ncols must be >= 1; got {ncols!r}")
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), pad_value, np.uint8)
    for k in range(n):
        r, q = divmod(k, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w] = images[k]
    return grid


def save_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Save a uint8 (H, W, C) image with C in {1, 3, 4} (or (H, W)) as PNG, atomically."""
    from PIL import Image

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3
                                                          and img.shape[2] not in (1, 3, 4)):
        raise ValueError("image must be uint8 (H, W) or (H, W, C) with C in 1, 3, 4; got "
                         f"dtype {img.dtype} shape {img.shape}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def save_npz(path: str | os.PathLike, **arrays: Iterable[Any]) -> Path:
    """Save arrays to an uncompressed ``.npz`` atomically."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


# --------------------------------------------------------------------------- shared by both backends

SAMPLERS = ("ddpm", "ddim")


def chain_schedule(schedule: Schedule, sampler: str, steps: int | None) -> Schedule:
    """The (respaced) schedule a sampler runs on.

    ``ddpm``: the full chain, or ``steps`` evenly spaced steps (improved DDPM respacing);
    ``ddim``: ``steps`` steps (default ``min(50, T)``) with DDIM's stride (``"ddim{steps}"``).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}; got {sampler!r}")
    T = schedule.num_timesteps
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or not 1 <= steps <= T):
        raise ValueError(f"steps must be an integer in [1, {T}]; got {steps!r}")
    if sampler == "ddim":
        return schedule.respace(f"ddim{steps or min(50, T)}")
    if steps is None or steps == T:
        return schedule
    return schedule.respace(str(steps))


def interpolation_sources(info: dict[str, Any], pair: Sequence[int]) -> np.ndarray:
    """The two source images, uint8 (2, H, W, C): ``pair`` indexes the run's held-out split.

    Datasets without a held-out split (folders, .npz) use their training images.
    """
    from ddpm_core.data import load_dataset

    try:
        images = load_dataset(info["data"], "heldout")
    except ValueError:
        images = load_dataset(info["data"], "train")
    i, j = (int(k) for k in pair)
    for k in (i, j):
        if not 0 <= k < images.shape[0]:
            raise ValueError(f"pair indices must be in [0, {images.shape[0]}); got {tuple(pair)}")
    return images[[i, j]]


class Progress:
    """A one-line stderr progress display: step, loss, images/s, ETA."""

    def __init__(self, total: int, batch_size: int, *, enabled: bool) -> None:
        self.total, self.batch_size, self.enabled = total, batch_size, enabled
        self.tty = enabled and sys.stderr.isatty()

    def update(self, step: int, loss: float, ips: float) -> None:
        """Show step ``step`` with its loss and throughput."""
        if not self.enabled:
            return
        eta = _fmt_seconds((self.total - step) * self.batch_size / ips if ips > 0 else 0.0)
        line = (f"step {step}/{self.total} ({100.0 * step / self.total:3.0f}%) | "
                f"loss {loss:.4f} | {ips:,.0f} img/s | ETA {eta}")
        sys.stderr.write("\r" + line.ljust(78) if self.tty else line + "\n")
        sys.stderr.flush()

    def close(self) -> None:
        """End the line on a terminal."""
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds)) if math.isfinite(seconds) else 0
    h, rem = divmod(seconds, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"
