"""Training loop of the PyTorch backend: Algorithm 1 on the core's losses.

One step (Ho et al. 2020, Algorithm 1, with the options of improved DDPM):

1. ``x_0`` = the global batch of step ``s`` (``ddpm_core.runs.batch_indices``: a seeded
   permutation per epoch), randomly flipped left-right where the preset says so;
2. ``t ~ Uniform{0..T-1}`` (or the loss-second-moment importance sampler),
   ``eps ~ N(0, I)``, ``x_t = q_sample(x_0, t, eps)`` (eq. 4);
3. ``loss = mean(w_t * training_losses(...))`` (L_simple eq. 14, the bound eq. 5 or the
   hybrid), one Adam step with linear warm-up and gradient clipping at global norm;
4. EMA of the weights: ``ema <- decay * ema + (1 - decay) * theta``.

Every random number of step ``s`` (data order, flips, t, eps, dropout) comes from
generators seeded by ``(seed, s)``, so ``--resume`` continues exactly and ``W`` ranks
(``torchrun``) each take a fixed slice of the single-process global batch.

On CUDA: bf16 autocast, channels_last, fused Adam, optional ``torch.compile``; on CPU the
same code in float32.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ddpm_core.backends.torch import checkpoint as ckpt
from ddpm_core.backends.torch.sampling import generate
from ddpm_core.backends.torch.unet import UNet
from ddpm_core.data import load_dataset
from ddpm_core.runs import (
    CsvLog,
    Progress,
    RunPaths,
    TrainOptions,
    batch_indices,
    flip_mask,
    image_grid,
    make_schedule,
    read_run_json,
    resolve_options,
    save_png,
    schedule_dict,
    step_seed,
    to_uint8,
    write_run,
)

__all__ = ["NonFiniteLossError", "train", "pick_device"]

LOG_FIELDS = ("step", "loss", "grad_norm", "lr", "images_per_s", "seconds")
SAMPLE_STEPS = 100  # ancestral DDPM on a 100-step respaced chain for the EMA grids

_STREAM_T, _STREAM_NOISE, _STREAM_DROPOUT, _STREAM_INIT = 1, 2, 3, 4


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the last good checkpoint is kept."""


# --------------------------------------------------------------------------- setup

@dataclasses.dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world_size > 1


def _init_distributed(device_kind: str) -> _Dist:
    """Join the process group ``torchrun`` describes (WORLD_SIZE > 1), else single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: CUDA (``cuda:LOCAL_RANK``) when available, else CPU."""
    if name in ("auto", "gpu"):
        name = "cuda" if torch.cuda.is_available() else ("cpu" if name == "auto" else name)
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' but torch.cuda.is_available() is False")
        return torch.device("cuda", local_rank)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda' for the torch backend; got {name!r}")


def _load_train_data(options: TrainOptions, preset: Any, unet: Any) -> torch.Tensor:
    name = options.data or preset.data
    images = load_dataset(name, "train")
    want = (unet.image_size, unet.image_size, unet.in_channels)
    if images.shape[1:] != want:
        raise ValueError(f"{name}: images of shape {images.shape[1:]} (H, W, C) do not fit "
                         f"preset {options.preset!r}, which needs {want}")
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _check_run_dir(options: TrainOptions, unet: Any) -> None:
    paths = RunPaths.of(options.out)
    has_state = ckpt.state_path(options.out).is_file()
    if options.resume:
        info = read_run_json(options.out)
        if info["preset"] != options.preset or info["unet"] != _as_json(unet):
            raise ValueError(f"{paths.run_json}: the run was trained with preset "
                             f"{info['preset']!r} and a different U-Net; cannot resume it with "
                             f"preset {options.preset!r}")
        if not has_state:
            raise FileNotFoundError(f"{ckpt.state_path(options.out)}: no checkpoint to resume")
    elif has_state:
        raise FileExistsError(f"{options.out} already holds a run; pass --resume to continue "
                              "it or choose another --out")


def _as_json(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(dataclasses.asdict(obj), default=list))


# --------------------------------------------------------------------------- one step

def _generator(device: torch.device, seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def _batch(data: torch.Tensor, options: TrainOptions, train: Any, step: int, d: _Dist,
           device: torch.device) -> torch.Tensor:
    """This rank's x_0 of ``step``: uint8 -> [-1, 1] (``ddpm_core.data.to_model_range``)."""
    idx = batch_indices(options.seed, step, data.shape[0], train.batch_size, rank=d.rank,
                        world_size=d.world_size)
    x = data[torch.from_numpy(idx)]
    if train.random_flip:
        flip = torch.from_numpy(flip_mask(options.seed, step, train.batch_size, rank=d.rank,
                                          world_size=d.world_size))
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    x = x.to(device, non_blocking=True).float()
    return x / 127.5 - 1.0


def _noise_and_t(options: TrainOptions, step: int, shape: tuple[int, ...], T: int, d: _Dist,
                 device: torch.device, weights: np.ndarray | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """eps, t and the importance weights for this rank, drawn for the global batch."""
    from ddpm_core.timesteps import sample_timesteps, uniform_weights

    B = shape[0] * d.world_size
    sl = slice(d.rank * shape[0], (d.rank + 1) * shape[0])
    g = _generator(device, step_seed(options.seed, step, _STREAM_NOISE))
    noise = torch.randn((B, *shape[1:]), generator=g, device=device)[sl]
    u = np.random.default_rng([options.seed, step, _STREAM_T]).random(B)[sl]
    t, w = sample_timesteps(uniform_weights(T) if weights is None else weights, u)
    t_dev = torch.as_tensor(np.asarray(t, dtype=np.int64), device=device)
    w_dev = torch.as_tensor(np.asarray(w, dtype=np.float32), device=device)
    return noise, t_dev, w_dev


@contextlib.contextmanager
def _step_rng(seed: int, step: int, rank: int, device: torch.device) -> Iterator[None]:
    """Dropout draws from the global generator: fork it and seed by (seed, step, rank)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(step_seed(seed, step, _STREAM_DROPOUT + 8 * rank))
        yield


def _lr_at(train: Any, step: int) -> float:
    """Linear warm-up from 0 to ``lr`` over ``warmup_steps`` steps, then constant."""
    if train.warmup_steps <= 0:
        return float(train.lr)
    return float(train.lr) * min(1.0, (step + 1) / train.warmup_steps)


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    e = [p for p in ema.parameters()]
    m = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(e, m, 1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


# --------------------------------------------------------------------------- the loop

@dataclasses.dataclass
class _State:
    """Mutable per-run state of the loop (kept in one place)."""

    step: int
    tsampler: Any = None
    window_loss: Any = 0.0
    window_steps: int = 0
    window_start: float = 0.0
    last_loss: float = float("nan")
    last_grad_norm: float = float("nan")
    images: int = 0


def train(options: TrainOptions) -> dict[str, Any]:
    """Train (or resume) a run; see :class:`ddpm_core.runs.TrainOptions`.

    Returns
    -------
    dict
        ``{"run_dir", "steps" (total), "steps_run" (this call), "seconds", "images_per_s",
        "final_loss", "device", "world_size"}``.

    Raises
    ------
    NonFiniteLossError
        If the loss becomes NaN or inf (nothing is written after the last good checkpoint).
    """
    if options.backend != "torch":
        raise ValueError(f"backend must be 'torch' for this function; got {options.backend!r}")
    preset, unet_cfg, train_cfg = resolve_options(options)
    device = pick_device(options.device, int(os.environ.get("LOCAL_RANK", "0")))
    d = _init_distributed(device.type)
    if d.on and train_cfg.batch_size % d.world_size:
        raise ValueError(f"batch_size ({train_cfg.batch_size}) must be divisible by the number "
                         f"of processes ({d.world_size})")
    _check_run_dir(options, unet_cfg)
    data = _load_train_data(options, preset, unet_cfg)
    return _Trainer(options, unet_cfg, train_cfg, device, d, data).run()


class _Trainer:
    def __init__(self, options: TrainOptions, unet_cfg: Any, train_cfg: Any,
                 device: torch.device, d: _Dist, data: torch.Tensor) -> None:
        self.o, self.cfg, self.tc, self.device, self.d = options, unet_cfg, train_cfg, device, d
        self.data = data.pin_memory() if device.type == "cuda" else data
        self.schedule = make_schedule(schedule_dict(train_cfg))
        self.cuda = device.type == "cuda"
        self.paths = RunPaths.of(options.out)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(step_seed(options.seed, 0, _STREAM_INIT))
            self.model = UNet(unet_cfg)
        self.model.to(device)
        if self.cuda:
            self.model.to(memory_format=torch.channels_last)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=train_cfg.lr,
                                    fused=True if self.cuda else None,
                                    foreach=None if self.cuda else True)
        self.state = _State(step=0, tsampler=self._new_tsampler())
        if options.resume:
            self._resume()
        self.net = self._wrap()

    def _new_tsampler(self) -> Any:
        if self.o.timestep_sampler == "uniform":
            return None
        from ddpm_core.timesteps import LossSecondMoment

        return LossSecondMoment.create(self.schedule.num_timesteps)

    def _wrap(self) -> Any:
        net: Any = self.model
        if self.d.on:
            ids = [self.device.index] if self.cuda else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        if self.o.compile and self.cuda:
            net = torch.compile(net)
        return net

    # ---------------------------------------------------------------- checkpoints

    def _resume(self) -> None:
        info = ckpt.load_state(self.o.out, model=self.model, ema=self.ema, optimizer=self.opt)
        self.state.step = info["step"]
        if self.state.tsampler is not None:
            self.state.tsampler = _tsampler_from(self.state.tsampler, info["arrays"])

    def _save(self) -> None:
        if not self.d.main:
            return
        arrays = _tsampler_arrays(self.state.tsampler)
        ckpt.save_state(self.o.out, model=self.model, ema=self.ema, optimizer=self.opt,
                        step=self.state.step, scalars={"seed": self.o.seed}, arrays=arrays)
        write_run(self.o.out, self.o, self.cfg, self.tc, self.state.step)

    # ---------------------------------------------------------------- one step

    def _step(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        from ddpm_core import q_sample, training_losses

        x0 = _batch(self.data, self.o, self.tc, step, self.d, self.device)
        weights = None if self.state.tsampler is None else self.state.tsampler.weights()
        noise, t, w = _noise_and_t(self.o, step, tuple(x0.shape), self.schedule.num_timesteps,
                                   self.d, self.device, weights)
        x_t = q_sample(self.schedule, x0, t, noise)
        if self.cuda:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        for group in self.opt.param_groups:
            group["lr"] = _lr_at(self.tc, step)
        with _step_rng(self.o.seed, step, self.d.rank, self.device), self._autocast():
            out = self.net(x_t, t)
        losses = training_losses(self.schedule, out.float(), x0, x_t, t, noise, loss=self.tc.loss,
                                 prediction=self.tc.prediction, variance=self.tc.variance)
        loss = (losses * w).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.tc.grad_clip if self.tc.grad_clip is not None else math.inf
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip, foreach=True)
        self.opt.step()
        _ema_update(self.ema, self.model, self.tc.ema_decay)
        if self.state.tsampler is not None:
            self._update_tsampler(t, losses.detach())
        return loss.detach(), grad_norm.detach()

    def _autocast(self) -> Any:
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _update_tsampler(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        if self.d.on:
            t, losses = _all_gather(t), _all_gather(losses.float())
        self.state.tsampler = self.state.tsampler.update(t.cpu().numpy(),
                                                         losses.float().cpu().numpy())

    # ---------------------------------------------------------------- loop

    def run(self) -> dict[str, Any]:
        o, s, total = self.o, self.state, self.tc.num_steps
        start_step, t0 = s.step, time.perf_counter()
        log = self._open_log(resume=o.resume)
        if self.d.main:
            self.paths.root.mkdir(parents=True, exist_ok=True)
            _remove_stale_temporaries(self.paths.root)
            write_run(o.out, o, self.cfg, self.tc, s.step)
        progress = Progress(total, self.tc.batch_size, enabled=o.progress and self.d.main)
        s.window_start = time.perf_counter()
        self.model.train()
        while s.step < total:
            loss, grad_norm = self._step(s.step)
            s.step += 1
            self._after_step(loss, grad_norm, log, progress)
        if s.step > start_step or not ckpt.state_path(o.out).is_file():
            self._save()
            self._sample_grid()
        progress.close()
        seconds = time.perf_counter() - t0
        done = s.step - start_step
        return {"run_dir": str(o.out), "steps": s.step, "steps_run": done,
                "seconds": seconds, "images_per_s": done * self.tc.batch_size / max(seconds, 1e-9),
                "final_loss": s.last_loss, "device": str(self.device),
                "world_size": self.d.world_size}

    def _after_step(self, loss: torch.Tensor, grad_norm: torch.Tensor, log: CsvLog | None,
                    progress: Progress) -> None:
        o, s = self.o, self.state
        s.window_steps += 1
        s.window_loss = s.window_loss + loss  # on the device until the next log point
        boundary = (o.log_every and s.step % o.log_every == 0) or s.step == self.tc.num_steps
        ckpt_due = o.ckpt_every and s.step % o.ckpt_every == 0
        if not (boundary or ckpt_due or not self.cuda):
            return
        self._check_finite(loss, s.step)
        s.last_loss, s.last_grad_norm = float(loss), float(grad_norm)
        if boundary:
            self._log(log, progress)
        if ckpt_due and s.step < self.tc.num_steps:
            self._save()
        if o.sample_every and s.step % o.sample_every == 0 and s.step < self.tc.num_steps:
            self._sample_grid()

    def _check_finite(self, loss: torch.Tensor, step: int) -> None:
        value = loss
        if self.d.on:
            value = loss.clone()
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
        if not math.isfinite(float(value)) or not math.isfinite(float(self.state.window_loss)):
            last = self._last_checkpoint_step()
            raise NonFiniteLossError(
                f"training loss is {float(value)} at step {step}; stopping. The last good "
                f"checkpoint (step {last}) in {self.o.out} is intact; resume it with a lower "
                "--lr or --grad-clip.")

    def _last_checkpoint_step(self) -> int | str:
        try:
            return read_run_json(self.o.out)["step"]
        except (OSError, ValueError):
            return "none"

    def _log(self, log: CsvLog | None, progress: Progress) -> None:
        s = self.state
        now = time.perf_counter()
        seconds = now - s.window_start
        mean_loss = float(s.window_loss) / max(s.window_steps, 1)
        if self.d.on:
            mean_loss = _mean_across(mean_loss, self.device)
        ips = s.window_steps * self.tc.batch_size / max(seconds, 1e-9)
        row = {"step": s.step, "loss": mean_loss, "grad_norm": s.last_grad_norm,
               "lr": _lr_at(self.tc, s.step - 1), "images_per_s": ips, "seconds": seconds}
        if log is not None:
            log.append(row)
        progress.update(s.step, mean_loss, ips)
        s.window_loss, s.window_steps, s.window_start = 0.0, 0, now

    def _open_log(self, *, resume: bool) -> CsvLog | None:
        if not self.d.main:
            return None
        self.paths.root.mkdir(parents=True, exist_ok=True)
        return CsvLog(self.paths.log, LOG_FIELDS,
                      resume_step=self.state.step if resume else None)

    def _sample_grid(self) -> None:
        if not self.d.main:
            return
        x = generate(self.ema, self.schedule, n=self.o.sample_n, sampler="ddpm",
                     steps=min(SAMPLE_STEPS, self.schedule.num_timesteps), seed=self.o.seed,
                     prediction=self.tc.prediction, variance=self.tc.variance,
                     device=self.device)
        save_png(self.paths.sample_png(self.state.step), image_grid(to_uint8(x)))
        self.model.train()


# --------------------------------------------------------------------------- helpers

def _remove_stale_temporaries(root: Any) -> None:
    """Delete ``.<name>.<hex>.tmp`` files left by a writer that was killed mid-write."""
    for f in root.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            f.unlink()


def _all_gather(x: torch.Tensor) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)


def _mean_across(value: float, device: torch.device) -> float:
    v = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(v)
    return float(v) / dist.get_world_size()


def _tsampler_arrays(tsampler: Any) -> dict[str, torch.Tensor]:
    if tsampler is None:
        return {}
    out = {}
    for f in dataclasses.fields(tsampler):
        value = getattr(tsampler, f.name)
        out[f"tsampler/{f.name}"] = torch.as_tensor(np.asarray(value))
    return out


def _tsampler_from(template: Any, arrays: dict[str, torch.Tensor]) -> Any:
    values = {}
    for f in dataclasses.fields(template):
        a = arrays[f"tsampler/{f.name}"].numpy()
        old = getattr(template, f.name)
        values[f.name] = type(old)(a.item()) if np.ndim(old) == 0 and not isinstance(
            old, np.ndarray) else a
    return dataclasses.replace(template, **values)


