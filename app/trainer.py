"""The one training loop (Algorithm 1) of every backend, over a small backend protocol.

The loop owns everything that is not framework code: resolving the options against the
preset, checking the run directory, resuming, the data order, flips and timesteps of every
step (``ddpm_core.app.seeding``), the timestep sampler's state, the cadence of logs,
checkpoints and sample grids, the guard against a non-finite loss, the progress line and
the end of a distributed run. A backend (``ddpm_core.backends.{torch,jax}.training``)
supplies a :class:`TrainBackend`: it builds or restores its state, runs one optimizer step
on a :class:`HostBatch`, reads metrics back, saves, and samples a grid.

Step ``s`` (Ho et al. 2020, Algorithm 1, with the options of improved DDPM):

1. ``x_0`` = the global batch of step ``s`` (a seeded permutation per epoch), flipped
   left-right where the preset says so; each process takes its contiguous slice;
2. ``t ~ Uniform{0..T-1}`` (or the loss-second-moment importance sampler) from uniform
   draws seeded by ``(seed, s)``; the backend draws ``eps`` and forms
   ``x_t = q_sample(x_0, t, eps)`` (eq. 4);
3. ``loss = mean(w_t * training_losses(...))``, one Adam step with linear warm-up
   (:func:`lr_at`) after clipping the gradient's global norm;
4. EMA of the weights: ``ema <- decay * ema + (1 - decay) * theta``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ddpm_core.app.atomic import remove_stale_temporaries
from ddpm_core.app.images import image_grid, save_png
from ddpm_core.app.logs import LOG_FIELDS, CsvLog, Progress
from ddpm_core.app.options import TrainOptions, resolve_options
from ddpm_core.app.rundir import RunPaths, make_schedule, read_run_json, schedule_dict, write_run
from ddpm_core.app.seeding import batch_indices, flip_mask, timestep_draws
from ddpm_core.timesteps import LossSecondMoment, sample_timesteps, uniform_weights

__all__ = ["HostBatch", "NonFiniteLossError", "TrainBackend", "host_batch", "lr_at", "train"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class HostBatch:
    """One process's share of a step's batch, on the host.

    ``images`` uint8 (b, H, W, C) in 0..255; ``t`` int64 (b,) 0-based steps; ``weights``
    float32 (b,) importance weights 1 / (T p_t); ``t_global`` int64 (B,) the whole batch's
    steps (for the timestep sampler). ``b = B / world_size``.
    """

    images: np.ndarray
    t: np.ndarray
    weights: np.ndarray
    t_global: np.ndarray


class TrainBackend(Protocol):
    """What a framework supplies to :func:`train`.

    ``rank`` / ``world_size``: this process's data slice among the processes that feed
    data; ``shards``: how many parts the global batch is split into (processes or
    devices), which must divide it; ``main``: whether this process writes files.
    """

    name: str
    rank: int
    world_size: int
    shards: int
    main: bool

    def state_path(self, run_dir: str | Path) -> Path:
        """The backend's checkpoint file in ``run_dir``."""

    def start(self, run_dir: str | Path | None) -> tuple[int, dict[str, np.ndarray]]:
        """Build fresh state, or restore ``run_dir``'s checkpoint: ``(step, arrays)``."""

    def train_step(self, step: int, batch: HostBatch) -> Any:
        """One optimizer step; returns a handle on its metrics (left on the device)."""

    def read_metrics(self, handles: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Global ``(loss, grad_norm)`` float64 (n,) of ``n`` steps (every process calls it)."""

    def global_losses(self, handle: Any) -> np.ndarray:
        """The whole batch's per-sample losses (B,) of one step, on the host."""

    def save(self, run_dir: str | Path, step: int, arrays: dict[str, np.ndarray]) -> None:
        """Write the weights, EMA weights and the state of ``step`` (main process only)."""

    def sample_grid(self, n: int, seed: int) -> np.ndarray:
        """``n`` EMA samples, uint8 (n, H, W, C)."""

    def summary(self) -> dict[str, Any]:
        """``{"device": str, "world_size": int}`` for the summary."""

    def finish(self, ok: bool = True) -> None:
        """Leave the process group (if one was joined); if ``ok``, wait for every process
        first (after an error the others may never arrive)."""


def lr_at(train: Any, step: int) -> float:
    """Linear warm-up from 0 to ``lr`` over ``warmup_steps`` steps, then constant (0-based ``step``)."""
    if train.warmup_steps <= 0:
        return float(train.lr)
    return float(train.lr) * min(1.0, (step + 1) / train.warmup_steps)


def host_batch(data: np.ndarray, seed: int, step: int, train: Any, weights: np.ndarray | None,
               *, rank: int = 0, world_size: int = 1) -> HostBatch:
    """This process's images, timesteps and importance weights of ``step``.

    ``data`` uint8 (N, H, W, C); ``weights`` p_t (T,) or None for uniform. Depends only on
    ``(seed, step, rank, world_size)`` and the data.
    """
    B, T = train.batch_size, train.num_timesteps
    idx = batch_indices(seed, step, data.shape[0], B, rank=rank, world_size=world_size)
    x = data[idx]
    if train.random_flip:
        flip = flip_mask(seed, step, B, rank=rank, world_size=world_size)
        x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
    t, w = sample_timesteps(uniform_weights(T) if weights is None else weights,
                            timestep_draws(seed, step, B))
    per = B // world_size
    part = slice(rank * per, (rank + 1) * per)
    return HostBatch(np.ascontiguousarray(x), np.asarray(t[part], np.int64),
                     np.asarray(w[part], np.float32), np.asarray(t, np.int64))


def train(options: TrainOptions, make_backend: Any) -> dict[str, Any]:
    """Train (or resume) ``options.out`` with ``make_backend(options, unet, train)``.

    Returns
    -------
    dict
        ``{"run_dir", "steps" (total), "steps_run" (this call), "seconds", "images_per_s",
        "final_loss" (global), "device", "world_size", "main"}``; ``main``: whether this is
        the process that writes files and speaks.

    Raises
    ------
    NonFiniteLossError
        If the loss becomes NaN or inf (nothing is written after the last good checkpoint).
    """
    preset, unet_cfg, train_cfg = resolve_options(options)
    backend = make_backend(options, unet_cfg, train_cfg)
    if train_cfg.batch_size % backend.shards:
        raise ValueError(f"batch_size ({train_cfg.batch_size}) must be divisible by the number "
                         f"of {backend.name} data-parallel shards ({backend.shards})")
    try:
        _check_run_dir(options, unet_cfg, backend)
        data = _load_train_data(options, preset, unet_cfg)
        summary = _Loop(options, unet_cfg, train_cfg, backend, data).run()
    except BaseException:
        backend.finish(ok=False)
        raise
    backend.finish()  # every process waits until the main one has written its files
    return summary


def _load_train_data(options: TrainOptions, preset: Any, unet: Any) -> np.ndarray:
    """The training split, uint8 (N, H, W, C)."""
    from ddpm_core.data import load_dataset

    name = options.data or preset.data
    images = load_dataset(name, "train")
    want = (unet.image_size, unet.image_size, unet.in_channels)
    if images.shape[1:] != want:
        raise ValueError(f"{name}: images of shape {images.shape[1:]} (H, W, C) do not fit "
                         f"preset {options.preset!r}, which needs {want}")
    return images


def _check_run_dir(options: TrainOptions, unet: Any, backend: TrainBackend) -> None:
    paths = RunPaths.of(options.out)
    has_state = backend.state_path(options.out).is_file()
    if options.resume:
        info = read_run_json(options.out)
        if info["preset"] != options.preset or info["unet"] != _as_json(unet):
            raise ValueError(f"{paths.run_json}: the run was trained with preset "
                             f"{info['preset']!r} and a different U-Net; cannot resume it with "
                             f"preset {options.preset!r}")
        if not has_state:
            raise FileNotFoundError(f"{backend.state_path(options.out)}: no {backend.name} "
                                    "checkpoint to resume (was the run trained with another "
                                    "backend?)")
    elif has_state or _other_backend_run(paths, backend.name):
        raise FileExistsError(f"{options.out} already holds a run; pass --resume to continue "
                              "it or choose another --out")


def _other_backend_run(paths: RunPaths, backend: str) -> bool:
    try:
        return paths.run_json.is_file() and read_run_json(paths.root)["backend"] != backend
    except ValueError:
        return True


def _as_json(obj: Any) -> Any:
    return json.loads(json.dumps(dataclasses.asdict(obj), default=list))


@dataclasses.dataclass
class _Window:
    """Metric handles of the steps since the last read."""

    handles: list[Any] = dataclasses.field(default_factory=list)
    start: float = 0.0


class _Loop:
    def __init__(self, options: TrainOptions, unet_cfg: Any, train_cfg: Any,
                 backend: TrainBackend, data: np.ndarray) -> None:
        self.o, self.cfg, self.tc, self.b, self.data = options, unet_cfg, train_cfg, backend, data
        self.paths = RunPaths.of(options.out)
        self.schedule = make_schedule(schedule_dict(train_cfg))
        self.tsampler = (None if options.timestep_sampler == "uniform"
                         else LossSecondMoment.create(self.schedule.num_timesteps))
        self.step, arrays = backend.start(options.out if options.resume else None)
        if self.tsampler is not None and options.resume:
            self.tsampler = dataclasses.replace(self.tsampler, losses=arrays["tsampler/losses"],
                                                counts=arrays["tsampler/counts"])
        self.last_loss = float("nan")

    # ---------------------------------------------------------------- the loop

    def run(self) -> dict[str, Any]:
        o, total, start_step = self.o, self.tc.num_steps, self.step
        t0 = time.perf_counter()
        log = self._open_log()
        if self.b.main:
            write_run(o.out, o, self.cfg, self.tc, self.step)
        progress = Progress(total, self.tc.batch_size, enabled=o.progress and self.b.main)
        window = _Window(start=time.perf_counter())
        while self.step < total:
            window.handles.append(self._train_step(self.step))
            self.step += 1
            self._after_step(window, log, progress)
        if self.step > start_step or not self.b.state_path(o.out).is_file():
            self._save()
            self._sample_grid()
        progress.close()
        seconds = time.perf_counter() - t0
        done = self.step - start_step
        return {"run_dir": str(o.out), "steps": self.step, "steps_run": done,
                "seconds": seconds, "images_per_s": done * self.tc.batch_size / max(seconds, 1e-9),
                "final_loss": self.last_loss, **self.b.summary(), "main": self.b.main}

    def _train_step(self, step: int) -> Any:
        weights = None if self.tsampler is None else self.tsampler.weights()
        batch = host_batch(self.data, self.o.seed, step, self.tc, weights, rank=self.b.rank,
                           world_size=self.b.world_size)
        handle = self.b.train_step(step, batch)
        if self.tsampler is not None:
            self.tsampler = self.tsampler.update(batch.t_global, self.b.global_losses(handle))
        return handle

    def _after_step(self, window: _Window, log: CsvLog | None, progress: Progress) -> None:
        o, s, total = self.o, self.step, self.tc.num_steps
        boundary = (o.log_every and s % o.log_every == 0) or s == total
        ckpt_due = o.ckpt_every and s % o.ckpt_every == 0
        grid_due = o.sample_every and s % o.sample_every == 0 and s < total
        if not (boundary or ckpt_due or grid_due):
            return
        self._flush(window, log, progress)
        if ckpt_due and s < total:
            self._save()
        if grid_due:
            self._sample_grid()

    def _flush(self, window: _Window, log: CsvLog | None, progress: Progress) -> None:
        """Read the window's metrics (one device sync), stop on NaN/inf, log a line."""
        if not window.handles:
            return
        loss, grad_norm = self.b.read_metrics(window.handles)
        bad = np.flatnonzero(~(np.isfinite(loss) & np.isfinite(grad_norm)))
        if bad.size:
            self._stop(float(loss[bad[0]]), self.step - len(loss) + int(bad[0]) + 1)
        now = time.perf_counter()
        seconds = now - window.start
        mean_loss = float(np.mean(loss))
        self.last_loss = float(loss[-1])
        ips = len(loss) * self.tc.batch_size / max(seconds, 1e-9)
        row = {"step": self.step, "loss": mean_loss, "grad_norm": float(grad_norm[-1]),
               "lr": lr_at(self.tc, self.step - 1), "images_per_s": ips, "seconds": seconds}
        if log is not None:
            log.append(row)
        progress.update(self.step, mean_loss, ips)
        window.handles.clear()
        window.start = now

    def _stop(self, value: float, step: int) -> None:
        where = (f"The last good checkpoint (step {self._checkpoint_step()}) in {self.o.out} "
                 "is intact; resume it with a lower --lr or --grad-clip."
                 if self.b.state_path(self.o.out).is_file() else
                 f"No checkpoint was written yet in {self.o.out}; start again with a lower "
                 "--lr or --grad-clip.")
        raise NonFiniteLossError(f"training loss is {value} at step {step}; stopping. {where}")

    def _checkpoint_step(self) -> int | str:
        try:
            return read_run_json(self.o.out)["step"]
        except (OSError, ValueError):
            return "unknown"

    # ---------------------------------------------------------------- files

    def _open_log(self) -> CsvLog | None:
        if not self.b.main:
            return None
        self.paths.root.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.paths.root)
        return CsvLog(self.paths.log, LOG_FIELDS,
                      resume_step=self.step if self.o.resume else None)

    def _save(self) -> None:
        if not self.b.main:
            return
        arrays = {} if self.tsampler is None else {"tsampler/losses": self.tsampler.losses,
                                                   "tsampler/counts": self.tsampler.counts}
        self.b.save(self.o.out, self.step, arrays)
        write_run(self.o.out, self.o, self.cfg, self.tc, self.step)

    def _sample_grid(self) -> None:
        if not self.b.main:
            return
        images = self.b.sample_grid(self.o.sample_n, self.o.seed)
        save_png(self.paths.sample_png(self.step), image_grid(images))
