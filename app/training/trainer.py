"""The one training loop (Algorithm 1) of every backend, over a small backend protocol.

The loop owns everything that is not framework code: resolving the options against the
preset, checking the run directory, resuming, the data order, flips, timesteps and dropped
labels of every step (``ddpm_core.app.training.seeding``), the timestep sampler's state, the cadence
of logs, checkpoints and sample grids, the guard against a non-finite loss, the progress
line, the TensorBoard events (``ddpm_core.app.training.tensorboard``) and the end of a
distributed run. A backend (``ddpm_core.backends.{torch,jax}.training``)
supplies a :class:`TrainBackend`: it builds or restores its state, runs one optimizer step
on a :class:`HostBatch`, reads metrics back, saves, and samples a grid.

What is trained is a :class:`RunTask`: :class:`DiffusionTask` (``ddpm train``, the default)
or the noise-aware classifier of ``ddpm train-classifier``
(:class:`ddpm_core.app.training.classifier_train.ClassifierTask`). A task loads the data, resolves
the configs, reads and writes the run's run.json and names its weight files; the loop,
the lock, the atomic checkpoints, exact resume, the progress line and the NaN guard are
the same for every task.

Step ``s`` (Ho et al. 2020, Algorithm 1, with the options of improved DDPM):

1. ``x_0`` = the global batch of step ``s`` (a seeded permutation per epoch), flipped
   left-right where the preset says so; each process takes its contiguous slice;
2. ``t ~ Uniform{0..T-1}`` (or the loss-second-moment importance sampler) from uniform
   draws seeded by ``(seed, s)``; the backend draws ``eps`` and forms
   ``x_t = q_sample(x_0, t, eps)`` (eq. 4);
   A class-conditional run gives the network the images' labels ``y``, each replaced by
   the null label K with probability ``label_dropout`` (seeded by ``(seed, s)``);
3. ``loss = mean(w_t * training_losses(...))``, one Adam step with linear warm-up
   (:func:`lr_at`) after clipping the gradient's global norm;
4. EMA of the weights: ``ema <- decay * ema + (1 - decay) * theta``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from ddpm_core.app.run.atomic import remove_stale_temporaries
from ddpm_core.app.run.images import image_grid, save_png
from ddpm_core.app.run.integrity import check_state_step, file_hashes, verify_file
from ddpm_core.app.run.lock import run_lock
from ddpm_core.app.run.options import TrainOptions
from ddpm_core.app.run.outputs import check_train_out
from ddpm_core.app.run.rundir import RunPaths, make_schedule, schedule_dict
from ddpm_core.app.training.batches import grid_labels, host_batch, loss_weight_table
from ddpm_core.app.training.logs import CsvLog, Progress, log_fields
from ddpm_core.app.training.protocol import (
    HostBatch,
    InitWeights,
    NonFiniteLossError,
    RunTask,
    TrainBackend,
    TrainData,
    lr_at,
)
from ddpm_core.app.training.tasks import DiffusionTask, load_init_weights, load_train_data
from ddpm_core.app.training.tensorboard import NullBoard, open_board
from ddpm_core.timesteps import LossSecondMoment

# The loop's parts are importable from here too (the backends' one import).
__all__ = ["DiffusionTask", "HostBatch", "InitWeights", "NonFiniteLossError", "RunTask",
           "TrainBackend", "TrainData", "grid_labels", "host_batch", "load_init_weights",
           "load_train_data", "lr_at", "train"]


def train(options: TrainOptions, make_backend: Any, task: RunTask | None = None
          ) -> dict[str, Any]:
    """Train (or resume) ``options.out`` with ``make_backend(options, model, train)``.

    ``task`` says what is trained (default :class:`DiffusionTask`); ``model`` is the
    config its ``configs`` gives (the U-Net's for a diffusion run).

    Returns
    -------
    dict
        ``{"run_dir", "steps" (total), "steps_run" (this call), "seconds", "images_per_s",
        "final_loss" (global), "device", "world_size", "main"}`` and the task's report;
        ``main``: whether this is the process that writes files and speaks.

    Raises
    ------
    NonFiniteLossError
        If the loss becomes NaN or inf (nothing is written after the last good checkpoint).
    """
    task = DiffusionTask() if task is None else task
    check_train_out(options.out, resume=options.resume)
    options = task.complete(options)
    data = task.load_data(options)  # before the configs: K comes from the data
    model_cfg, train_cfg = task.configs(options, data)
    backend = make_backend(options, model_cfg, train_cfg)
    if train_cfg.batch_size % backend.shards:
        raise ValueError(f"batch_size ({train_cfg.batch_size}) must be divisible by the number "
                         f"of {backend.name} data-parallel shards ({backend.shards})")
    try:
        with run_lock(options.out, enabled=backend.main):
            _check_run_dir(options, model_cfg, backend, task)
            summary = _Loop(options, model_cfg, train_cfg, backend, data, task).run()
    except BaseException:
        backend.finish(ok=False)
        raise
    backend.finish()  # every process waits until the main one has written its files
    return summary


def _check_run_dir(options: TrainOptions, model: Any, backend: TrainBackend,
                   task: RunTask) -> None:
    paths = RunPaths.of(options.out)
    has_state = backend.state_path(options.out).is_file()
    if options.resume:
        task.check_resume(options, task.read_info(options.out), model)
        if not has_state:
            raise FileNotFoundError(f"{backend.state_path(options.out)}: no {backend.name} "
                                    "checkpoint to resume (was the run trained with another "
                                    "backend?)")
    elif has_state or _other_backend_run(paths, backend.name, task):
        raise FileExistsError(f"{options.out} already holds a run; pass --resume to continue "
                              "it or choose another --out")


def _saved_step(run_dir: Any, task: RunTask) -> int | None:
    """The step of the checkpoint run.json records (None before the first one)."""
    try:
        info = task.read_info(run_dir)
    except (OSError, ValueError):
        return None
    return int(info["step"])


def _other_backend_run(paths: RunPaths, backend: str, task: RunTask) -> bool:
    try:
        return paths.run_json.is_file() and task.read_info(paths.root)["backend"] != backend
    except ValueError:
        return True


@dataclasses.dataclass
class _Window:
    """Metric handles of the steps since the last read."""

    handles: list[Any] = dataclasses.field(default_factory=list)
    start: float = 0.0


class _Loop:
    def __init__(self, options: TrainOptions, model_cfg: Any, train_cfg: Any,
                 backend: TrainBackend, data: TrainData, task: RunTask) -> None:
        self.o, self.cfg, self.tc, self.b, self.data = options, model_cfg, train_cfg, backend, data
        self.task, self.label_dropout = task, task.label_dropout(options)
        self.paths = RunPaths.of(options.out)
        self.schedule = make_schedule(schedule_dict(train_cfg))
        self.tsampler = (None if options.timestep_sampler == "uniform"
                         else LossSecondMoment.create(self.schedule.num_timesteps))
        self.loss_weights = loss_weight_table(self.schedule, train_cfg)
        self.files: dict[str, str] = {}
        self.step, arrays = self._start()
        if self.tsampler is not None and options.resume:
            self.tsampler = dataclasses.replace(self.tsampler, losses=arrays["tsampler/losses"],
                                                counts=arrays["tsampler/counts"])
        self.last_loss = float("nan")
        self.board: NullBoard = NullBoard()  # run() opens the TensorBoard writer
        self.gather = not getattr(backend, "hold_data", lambda images: False)(data.images)

    def _start(self) -> tuple[int, dict[str, np.ndarray]]:
        """Fresh state, or the checked checkpoint of a resumed run (hash and step)."""
        if not self.o.resume:
            init = None if self.o.init is None else load_init_weights(self.o.init, self.cfg)
            return self.b.start(None, init)
        info = self.task.read_info(self.o.out)
        state = self.b.state_path(self.o.out)
        verify_file(info, state)
        step, arrays = self.b.start(self.o.out)
        check_state_step(info, step, state)
        self.files = dict(info.get("files", {}))
        return step, arrays

    # ---------------------------------------------------------------- the loop

    def run(self) -> dict[str, Any]:
        o, start_step = self.o, self.step
        t0 = time.perf_counter()
        # first: without tensorboardX nothing is written
        self.board = open_board(o.out, start_step, enabled=bool(o.tensorboard) and self.b.main)
        try:
            self._run_steps(start_step)
        finally:
            self.board.close()
        seconds = time.perf_counter() - t0
        done = self.step - start_step
        return {"run_dir": str(o.out), "steps": self.step, "steps_run": done,
                "seconds": seconds, "images_per_s": done * self.tc.batch_size / max(seconds, 1e-9),
                "final_loss": self.last_loss, **self.b.summary(), "main": self.b.main,
                **self.task.report(o, self.b, self.data)}

    def _run_steps(self, start_step: int) -> None:
        o, total = self.o, self.tc.num_steps
        log = self._open_log()
        if self.b.main:
            self._write_info(self.step, files=self.files)
        progress = Progress(total, self.tc.batch_size, enabled=o.progress and self.b.main, initial=start_step)
        window = _Window(start=time.perf_counter())
        while self.step < total:
            window.handles.append(self._train_step(self.step))
            self.step += 1
            self._after_step(window, log, progress)
        if self.step > start_step or not self.b.state_path(o.out).is_file():
            self._save()
            self._sample_grid()
        progress.close()

    def _train_step(self, step: int) -> Any:
        weights = None if self.tsampler is None else self.tsampler.weights()
        batch = host_batch(self.data.images, self.o.seed, step, self.tc, weights,
                           rank=self.b.rank, world_size=self.b.world_size,
                           labels=None if self.label_dropout is None else self.data.labels,
                           num_classes=self.data.num_classes,
                           label_dropout=self.label_dropout or 0.0,
                           loss_weights=self.loss_weights, gather=self.gather)
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
        loss, grad_norm, parts = self.b.read_metrics(window.handles)
        bad = np.flatnonzero(~(np.isfinite(loss) & np.isfinite(grad_norm)))
        if bad.size:
            self._stop(float(loss[bad[0]]), self.step - len(loss) + int(bad[0]) + 1)
        now = time.perf_counter()
        seconds = now - window.start
        mean_loss = float(np.mean(loss))
        self.last_loss = float(loss[-1])
        ips = len(loss) * self.tc.batch_size / max(seconds, 1e-9)
        row = {"step": self.step, "loss": mean_loss, "grad_norm": float(grad_norm[-1]),
               "lr": lr_at(self.tc, self.step - 1), "images_per_s": ips, "seconds": seconds,
               **{name: float(np.mean(values)) for name, values in parts.items()}}
        if log is not None:
            log.append(row)
        self.board.scalars(row)
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
            return self.task.read_info(self.o.out)["step"]
        except (OSError, ValueError):
            return "unknown"

    # ---------------------------------------------------------------- files

    def _open_log(self) -> CsvLog | None:
        if not self.b.main:
            return None
        self.paths.root.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.paths.root)
        return CsvLog(self.paths.log, log_fields(self.b.terms),
                      resume_step=self.step if self.o.resume else None)

    def _save(self) -> None:
        if not self.b.main:
            return
        arrays = {} if self.tsampler is None else {"tsampler/losses": self.tsampler.losses,
                                                   "tsampler/counts": self.tsampler.counts}
        saved = _saved_step(self.o.out, self.task)
        if saved is not None:  # a crash inside the write leaves old or new files: say so
            self._write_info(saved, files=self.files, pending={"step": self.step})
        self.b.save(self.o.out, self.step, arrays)
        self.files = file_hashes([self.b.state_path(self.o.out),
                                  *self.task.weight_paths(self.paths)])
        self._write_info(self.step, files=self.files)

    def _write_info(self, step: int, **extra: Any) -> None:
        self.task.write_info(self.o, self.cfg, self.tc, self.data, step, **extra)

    def _sample_grid(self) -> None:
        if not (self.b.main and self.task.grids):
            return
        grid = image_grid(self.b.sample_grid(self.o.sample_n, self.o.seed))
        save_png(self.paths.sample_png(self.step), grid)
        self.board.image(self.step, grid)
