"""Training loop of the JAX backend: Algorithm 1 on the core's losses, one jitted step.

One step (Ho et al. 2020, Algorithm 1, with the options of improved DDPM), exactly as the
PyTorch loop (``ddpm_core.backends.torch.training``):

1. ``x_0`` = the global batch of step ``s`` (``ddpm_core.runs.batch_indices``), flipped
   left-right where the preset says so (``ddpm_core.runs.flip_mask``), scaled to [-1, 1];
2. ``t ~ Uniform{0..T-1}`` (or the loss-second-moment importance sampler) from uniform
   draws seeded by ``(seed, s)`` (the same t as the PyTorch loop), ``eps ~ N(0, I)`` from
   the key ``fold_in(fold_in(seed_key(seed), NOISE), s)``, ``x_t = q_sample(x_0, t, eps)``;
3. ``loss = mean(w_t * training_losses(...))``, one Adam step with linear warm-up
   (``lr * min(1, (s + 1) / warmup)``) after clipping the gradient's global norm;
4. EMA of the weights: ``ema <- ema + (1 - decay) (theta - ema)``.

Steps 2-4 run as **one** ``jax.jit`` program. Dropout draws from
``fold_in(fold_in(seed_key(seed), DROPOUT), s)``. So every random number of step ``s`` depends
only on ``(seed, s)``: a resumed run continues exactly, and any number of devices sees the
same numbers (``jax_threefry_partitionable``).

Data parallel: a ``jax.sharding.Mesh`` over every device (all hosts), the batch sharded
along its ``"data"`` axis and the parameters replicated; XLA inserts the gradient
all-reduce. With ``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID`` set
(or a SLURM allocation of several tasks), ``jax.distributed.initialize`` joins the hosts
and each process feeds its slice of the global batch.

Accelerators compute in bfloat16 (parameters, optimizer and loss stay float32); the CPU
computes in float32.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ddpm_core import q_sample, training_losses
from ddpm_core.backends.jax import checkpoint as ckpt
from ddpm_core.backends.jax.sampling import (
    Chain,
    Sampler,
    chain_schedule,
    seed_key,
    to_images,
)
from ddpm_core.backends.jax.unet import UNet, init_params
from ddpm_core.data import load_dataset, to_model_range
from ddpm_core.models import UNetConfig
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
    write_run,
)
from ddpm_core.timesteps import LossSecondMoment, sample_timesteps

__all__ = [
    "NonFiniteLossError",
    "TrainState",
    "compute_dtype",
    "make_mesh",
    "make_optimizer",
    "maybe_initialize_distributed",
    "pick_devices",
    "train",
]

LOG_FIELDS = ("step", "loss", "grad_norm", "lr", "images_per_s", "seconds")
SAMPLE_STEPS = 50  # DDIM steps of the periodic EMA sample grids, as the PyTorch loop
_STREAM_T, _STREAM_NOISE, _STREAM_DROPOUT, _STREAM_INIT = 1, 2, 3, 4


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or inf; the last good checkpoint is kept."""


class TrainState(NamedTuple):
    """Everything the jitted step updates (replicated over the mesh)."""

    params: Any
    ema: Any
    opt_state: Any


# --------------------------------------------------------------------------- devices

def maybe_initialize_distributed() -> bool:
    """Join a multi-host run when the environment describes one; True if it did.

    ``JAX_COORDINATOR_ADDRESS`` (with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``), or a
    SLURM job with more than one task, triggers ``jax.distributed.initialize``. Must run
    before the first JAX computation; a second call is a no-op.
    """
    env = os.environ
    if jax.distributed.is_initialized():
        return True
    if env.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                                   num_processes=int(env.get("JAX_NUM_PROCESSES", "1")),
                                   process_id=int(env.get("JAX_PROCESS_ID", "0")))
        return True
    if int(env.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()
        return True
    return False


def pick_devices(name: str = "auto") -> list[Any]:
    """All devices (every host) of the requested platform; ``"auto"``: JAX's default."""
    platform = {"auto": None, "cpu": "cpu", "cuda": "gpu", "gpu": "gpu", "tpu": "tpu"}
    if name not in platform:
        raise ValueError(f"device must be one of {sorted(platform)}; got {name!r}")
    try:
        return list(jax.devices(platform[name]))
    except RuntimeError as e:
        raise RuntimeError(f"device={name!r}: no such JAX devices ({e})") from e


def make_mesh(devices: list[Any]) -> Mesh:
    """A 1-D mesh ``("data",)`` over ``devices``."""
    return Mesh(np.asarray(devices), ("data",))


def compute_dtype(devices: list[Any]) -> Any:
    """bfloat16 on accelerators, float32 on the CPU."""
    return jnp.float32 if devices[0].platform == "cpu" else jnp.bfloat16


# --------------------------------------------------------------------------- optimizer

def make_optimizer(train: Any) -> optax.GradientTransformation:
    """Clip at global norm, Adam, linear warm-up: ``lr * min(1, (count + 1) / warmup)``.

    ``count`` is the number of updates already applied, so the first step uses
    ``lr / warmup`` as the PyTorch loop does.
    """
    lr, warmup = float(train.lr), int(train.warmup_steps)

    def schedule(count: jax.Array) -> jax.Array:
        if warmup <= 0:
            return jnp.asarray(lr, jnp.float32)
        return lr * jnp.minimum(1.0, (count + 1).astype(jnp.float32) / warmup)

    clip = (optax.clip_by_global_norm(float(train.grad_clip)) if train.grad_clip
            else optax.identity())
    return optax.chain(clip, optax.scale_by_adam(), optax.scale_by_learning_rate(schedule))


def lr_at(train: Any, step: int) -> float:
    """The learning rate of step ``step`` (0-based), for the log."""
    if train.warmup_steps <= 0:
        return float(train.lr)
    return float(train.lr) * min(1.0, (step + 1) / train.warmup_steps)


# --------------------------------------------------------------------------- one step

def _stream_key(seed_key: jax.Array, stream: int, step: jax.Array) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(seed_key, stream), step)


@functools.lru_cache(maxsize=8)
def cached_train_step(unet: UNetConfig, dtype: Any, train: Any, mesh: Mesh) -> Any:
    """:func:`make_train_step` for a config, built (and compiled) once per process.

    ``train`` enters only through the fields the step uses (``num_steps`` and
    ``batch_size`` are normalised away), so runs of different lengths share one program.
    """
    net = UNet(config=unet, dtype=dtype)
    schedule = make_schedule(schedule_dict(train))
    return make_train_step(net, schedule, train, make_optimizer(train), mesh)


@functools.lru_cache(maxsize=8)
def cached_init(unet: UNetConfig, dtype: Any, train: Any, mesh: Mesh) -> Any:
    """Jitted ``key -> TrainState`` (fresh weights, EMA = weights, optimizer state),
    replicated over ``mesh``; built once per process."""
    net, tx = UNet(config=unet, dtype=dtype), make_optimizer(train)

    def init(key: jax.Array) -> TrainState:
        params = init_params(net, key)
        return TrainState(params, params, tx.init(params))

    return jax.jit(init, out_shardings=NamedSharding(mesh, P()))


def _step_key(train: Any) -> Any:
    return dataclasses.replace(train, num_steps=1, batch_size=1)


def make_train_step(net: UNet, schedule: Any, train: Any, tx: optax.GradientTransformation,
                    mesh: Mesh) -> Any:
    """The jitted step ``(state, key, step, x0, t, w) -> (state, metrics)``.

    ``x0`` float32 (B, C, H, W), ``t`` int32 (B,) and ``w`` float32 (B,) (importance
    weights) are sharded along the batch; ``state``, ``key`` (the run's base key) and
    ``step`` are replicated. A step whose loss or gradient is not finite leaves the state
    unchanged (the loop then stops); ``metrics["finite"]`` says which happened.
    """
    batch, repl = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    decay = float(train.ema_decay)

    def step_fn(state: TrainState, key: jax.Array, step: jax.Array, x0: jax.Array,
                t: jax.Array, w: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
        noise = jax.random.normal(_stream_key(key, _STREAM_NOISE, step), x0.shape, x0.dtype)
        noise = jax.lax.with_sharding_constraint(noise, batch)
        rngs = {"dropout": _stream_key(key, _STREAM_DROPOUT, step)}
        x_t = q_sample(schedule, x0, t, noise)

        def loss_fn(params: Any) -> tuple[jax.Array, jax.Array]:
            out = jnp.asarray(net.apply({"params": params}, x_t, t, train=True, rngs=rngs))
            losses = training_losses(schedule, out.astype(jnp.float32), x0, x_t, t, noise,
                                     loss=train.loss, prediction=train.prediction,
                                     variance=train.variance)
            return jnp.mean(losses * w), losses

        (loss, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = jax.tree.map(lambda e, p: e + (1.0 - decay) * (p - e), state.ema, params)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = TrainState(params, ema, opt_state)
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        return new, {"loss": loss, "grad_norm": grad_norm, "finite": finite, "losses": losses}

    donate = (0,) if mesh.devices.flat[0].platform != "cpu" else ()
    return jax.jit(step_fn, in_shardings=(repl, repl, repl, batch, batch, batch),
                   out_shardings=(repl, repl), donate_argnums=donate)


# --------------------------------------------------------------------------- data

def _load_train_data(options: TrainOptions, preset: Any, unet: Any) -> np.ndarray:
    name = options.data or preset.data
    images = load_dataset(name, "train")
    want = (unet.image_size, unet.image_size, unet.in_channels)
    if images.shape[1:] != want:
        raise ValueError(f"{name}: images of shape {images.shape[1:]} (H, W, C) do not fit "
                         f"preset {options.preset!r}, which needs {want}")
    return images


def host_batch(data: np.ndarray, options: TrainOptions, train: Any, step: int, T: int,
               weights: np.ndarray | None, *, rank: int = 0, world_size: int = 1
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """This process's ``x_0`` float32 (b, C, H, W), ``t`` int32 (b,), ``w`` float32 (b,).

    The same images, flips and timesteps as the PyTorch loop draws for ``(seed, step)``.
    """
    B = train.batch_size
    idx = batch_indices(options.seed, step, data.shape[0], B, rank=rank,
                        world_size=world_size)
    x = data[idx]
    if train.random_flip:
        flip = flip_mask(options.seed, step, B, rank=rank, world_size=world_size)
        x = np.where(flip[:, None, None, None], x[:, :, ::-1], x)
    per = B // world_size
    u = np.random.default_rng([options.seed, step, _STREAM_T]).random(B)
    u = u[rank * per:(rank + 1) * per]
    if weights is None:
        t, w = np.minimum((u * T).astype(np.int64), T - 1), np.ones_like(u)
    else:
        t, w = sample_timesteps(weights, u)
    x0 = np.ascontiguousarray(to_model_range(x).transpose(0, 3, 1, 2))
    return x0, np.asarray(t, np.int32), np.asarray(w, np.float32)


# --------------------------------------------------------------------------- the loop

def train(options: TrainOptions) -> dict[str, Any]:
    """Train (or resume) a run with JAX; see :class:`ddpm_core.runs.TrainOptions`.

    Returns
    -------
    dict
        ``{"run_dir", "steps" (total), "steps_run" (this call), "seconds", "images_per_s",
        "final_loss", "device", "world_size"}`` (``world_size``: number of devices).

    Raises
    ------
    NonFiniteLossError
        If the loss becomes NaN or inf (nothing is written after the last good checkpoint).
    """
    if options.backend != "jax":
        raise ValueError(f"backend must be 'jax' for this function; got {options.backend!r}")
    preset, unet_cfg, train_cfg = resolve_options(options)
    maybe_initialize_distributed()
    devices = pick_devices(options.device)
    if train_cfg.batch_size % len(devices):
        raise ValueError(f"batch_size ({train_cfg.batch_size}) must be divisible by the "
                         f"number of devices ({len(devices)})")
    _check_run_dir(options, unet_cfg)
    data = _load_train_data(options, preset, unet_cfg)
    return _Trainer(options, unet_cfg, train_cfg, devices, data).run()


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
            raise FileNotFoundError(f"{ckpt.state_path(options.out)}: no JAX checkpoint to "
                                    "resume (was the run trained with another backend?)")
    elif has_state or _other_backend_run(paths):
        raise FileExistsError(f"{options.out} already holds a run; pass --resume to continue "
                              "it or choose another --out")


def _other_backend_run(paths: RunPaths) -> bool:
    try:
        return paths.run_json.is_file() and read_run_json(paths.root)["backend"] != "jax"
    except ValueError:
        return True


def _as_json(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(dataclasses.asdict(obj), default=list))


@dataclasses.dataclass
class _Window:
    """Metrics since the last log line (device arrays until read)."""

    metrics: list[dict[str, jax.Array]] = dataclasses.field(default_factory=list)
    start: float = 0.0


class _Trainer:
    def __init__(self, options: TrainOptions, unet_cfg: Any, train_cfg: Any,
                 devices: list[Any], data: np.ndarray) -> None:
        self.o, self.cfg, self.tc, self.data = options, unet_cfg, train_cfg, data
        self.devices, self.mesh = devices, make_mesh(devices)
        self.main = jax.process_index() == 0
        self.paths = RunPaths.of(options.out)
        self.schedule = make_schedule(schedule_dict(train_cfg))
        self.net = UNet(config=unet_cfg, dtype=compute_dtype(devices))
        self.key = seed_key(options.seed)
        self.repl = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P("data"))
        self.step, self.tsampler, self.last_loss = 0, self._new_tsampler(), float("nan")
        if options.resume:
            self._resume()
        else:
            self.state = self._init_state()
        self.step_fn = cached_train_step(unet_cfg, self.net.dtype, _step_key(train_cfg),
                                         self.mesh)

    def _new_tsampler(self) -> LossSecondMoment | None:
        if self.o.timestep_sampler == "uniform":
            return None
        return LossSecondMoment.create(self.schedule.num_timesteps)

    def _init_state(self) -> TrainState:
        init = cached_init(self.cfg, self.net.dtype, _step_key(self.tc), self.mesh)
        return init(jax.random.fold_in(self.key, _STREAM_INIT))

    # ---------------------------------------------------------------- checkpoints

    def _resume(self) -> None:
        init = cached_init(self.cfg, self.net.dtype, _step_key(self.tc), self.mesh)
        st = jax.eval_shape(init, self.key)  # templates: shapes and dtypes only
        info = ckpt.load_state(self.o.out, params=st.params, ema=st.ema, opt_state=st.opt_state)
        self.state = jax.device_put(TrainState(info["params"], info["ema"], info["opt_state"]),
                                    self.repl)
        self.step = info["step"]
        if self.tsampler is not None:
            self.tsampler = dataclasses.replace(
                self.tsampler, losses=info["arrays"]["tsampler/losses"],
                counts=info["arrays"]["tsampler/counts"])

    def _save(self) -> None:
        if not self.main:
            return
        arrays = {} if self.tsampler is None else {"tsampler/losses": self.tsampler.losses,
                                                   "tsampler/counts": self.tsampler.counts}
        st = self.state
        ckpt.save_state(self.o.out, config=self.cfg, params=st.params, ema=st.ema,
                        opt_state=st.opt_state, key=self.key, step=self.step,
                        scalars={"seed": self.o.seed}, arrays=arrays)
        write_run(self.o.out, self.o, self.cfg, self.tc, self.step)

    # ---------------------------------------------------------------- one step

    def _device_batch(self, step: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        weights = None if self.tsampler is None else self.tsampler.weights()
        parts = host_batch(self.data, self.o, self.tc, step, self.schedule.num_timesteps,
                           weights, rank=jax.process_index(), world_size=jax.process_count())
        return tuple(jax.make_array_from_process_local_data(self.batch_sharding, a)
                     for a in parts)

    def _run_step(self, step: int) -> dict[str, jax.Array]:
        x0, t, w = self._device_batch(step)
        self.state, metrics = self.step_fn(self.state, self.key, np.int32(step), x0, t, w)
        if self.tsampler is not None:
            self.tsampler = self.tsampler.update(_host_all(t), _host_all(metrics["losses"]))
        return metrics

    # ---------------------------------------------------------------- loop

    def run(self) -> dict[str, Any]:
        o, total, start_step = self.o, self.tc.num_steps, self.step
        t0 = time.perf_counter()
        log = self._open_log()
        if self.main:
            write_run(o.out, o, self.cfg, self.tc, self.step)
        progress = Progress(total, self.tc.batch_size, enabled=o.progress and self.main)
        window = _Window(start=time.perf_counter())
        while self.step < total:
            window.metrics.append(self._run_step(self.step))
            self.step += 1
            self._after_step(window, log, progress)
        if self.step > start_step or not ckpt.state_path(o.out).is_file():
            self._save()
            self._sample_grid()
        progress.close()
        seconds = time.perf_counter() - t0
        done = self.step - start_step
        return {"run_dir": str(o.out), "steps": self.step, "steps_run": done,
                "seconds": seconds, "images_per_s": done * self.tc.batch_size / max(seconds, 1e-9),
                "final_loss": self.last_loss, "device": str(self.devices[0].platform),
                "world_size": len(self.devices)}

    def _after_step(self, window: _Window, log: CsvLog | None, progress: Progress) -> None:
        o, s = self.o, self.step
        boundary = (o.log_every and s % o.log_every == 0) or s == self.tc.num_steps
        ckpt_due = o.ckpt_every and s % o.ckpt_every == 0
        grid_due = o.sample_every and s % o.sample_every == 0 and s < self.tc.num_steps
        if not (boundary or ckpt_due or grid_due):
            return
        self._flush(window, log, progress)
        if ckpt_due and s < self.tc.num_steps:
            self._save()
        if grid_due:
            self._sample_grid()

    def _flush(self, window: _Window, log: CsvLog | None, progress: Progress) -> None:
        """Read the window's metrics (one device sync), stop on NaN/inf, log a line."""
        if not window.metrics:
            return
        got = jax.device_get([{k: m[k] for k in ("loss", "grad_norm", "finite")}
                              for m in window.metrics])
        first_bad = next((n for n, m in enumerate(got) if not bool(m["finite"])), None)
        if first_bad is not None:
            bad_step = self.step - len(got) + first_bad + 1
            raise NonFiniteLossError(
                f"training loss is {float(got[first_bad]['loss'])} at step {bad_step}; "
                f"stopping. The last good checkpoint (step {self._last_checkpoint_step()}) "
                f"in {self.o.out} is intact; resume it with a lower --lr or --grad-clip.")
        now = time.perf_counter()
        seconds = now - window.start
        mean_loss = float(np.mean([float(m["loss"]) for m in got]))
        self.last_loss = float(got[-1]["loss"])
        ips = len(got) * self.tc.batch_size / max(seconds, 1e-9)
        row = {"step": self.step, "loss": mean_loss, "grad_norm": float(got[-1]["grad_norm"]),
               "lr": lr_at(self.tc, self.step - 1), "images_per_s": ips, "seconds": seconds}
        if log is not None:
            log.append(row)
        progress.update(self.step, mean_loss, ips)
        window.metrics.clear()
        window.start = now

    def _last_checkpoint_step(self) -> int | str:
        try:
            return read_run_json(self.o.out)["step"] if ckpt.state_path(self.o.out).is_file() \
                else "none"
        except (OSError, ValueError):
            return "none"

    def _open_log(self) -> CsvLog | None:
        if not self.main:
            return None
        self.paths.root.mkdir(parents=True, exist_ok=True)
        return CsvLog(self.paths.log, LOG_FIELDS,
                      resume_step=self.step if self.o.resume else None)

    def _sample_grid(self) -> None:
        if not self.main:
            return
        sampler = _grid_sampler(self.cfg, self.net.dtype, _step_key(self.tc))
        # One device's replica: the grid is this process's own computation (multi-host safe).
        ema = jax.tree.map(lambda a: a.addressable_data(0), self.state.ema)
        x, _ = sampler.generate(ema, n=self.o.sample_n, seed=self.o.seed)
        save_png(self.paths.sample_png(self.step), image_grid(to_images(x)))


@functools.lru_cache(maxsize=4)
def _grid_sampler(unet: UNetConfig, dtype: Any, train: Any) -> Sampler:
    """The DDIM sampler of the periodic EMA grids (compiled once per process)."""
    schedule = make_schedule(schedule_dict(train))
    steps = min(SAMPLE_STEPS, schedule.num_timesteps)
    chain = Chain(chain_schedule(schedule, "ddim", steps), "ddim",
                  prediction=train.prediction, variance=train.variance)
    net = UNet(config=unet, dtype=dtype)
    return Sampler(lambda p, x, t: net.apply({"params": p}, x, t), chain,
                   (unet.in_channels, unet.image_size, unet.image_size))


def _host_all(x: jax.Array) -> np.ndarray:
    """The whole (batch-sharded) array on this host."""
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


