"""The JAX side of the training loop (``ddpm_core.app.training.trainer``): one jitted step.

:class:`JaxTrainer` runs step ``s`` of Algorithm 1 on the batch the shared loop draws, as
**one** ``jax.jit`` program: ``eps ~ N(0, I)`` from the key
``fold_in(fold_in(seed_key(seed), NOISE), s)``, ``x_t = q_sample(x_0, t, eps)``, the core's
``training_loss_terms`` (the loss, and for ``vlb``/``hybrid`` its two parts for the log), one
Adam step with the shared linear warm-up (``warmup_lr``)
after clipping the gradient's global norm, and ``ema <- ema + (1 - decay) (theta - ema)``.
Dropout draws from ``fold_in(fold_in(seed_key(seed), DROPOUT), s)``. Every random number
of step ``s`` depends only on ``(seed, s)``: a resumed run continues exactly, and any
number of devices sees the same numbers (``jax_threefry_partitionable``).

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
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ddpm_core import q_sample, training_loss_terms
from ddpm_core.app.run.options import TrainOptions
from ddpm_core.app.run.rundir import make_schedule, schedule_dict
from ddpm_core.app.training import trainer
from ddpm_core.app.training.logs import TERM_FIELDS
from ddpm_core.app.training.protocol import warmup_lr
from ddpm_core.app.training.seeding import STREAM_DROPOUT, STREAM_INIT, STREAM_NOISE
from ddpm_core.app.training.trainer import HostBatch, InitWeights, NonFiniteLossError, grid_labels, lr_at
from ddpm_core.backends.jax import checkpoint as ckpt
from ddpm_core.backends.jax.classifier import Classifier, build_classifier
from ddpm_core.backends.jax.devices import (
    compute_dtype,
    make_mesh,
    maybe_initialize_distributed,
    pick_devices,
)
from ddpm_core.backends.jax.sampling import Chain, Sampler, chain_schedule, seed_key, to_images
from ddpm_core.backends.jax.unet import UNet, init_params
from ddpm_core.data import to_model_range
from ddpm_core.models import ClassifierConfig, UNetConfig

__all__ = [
    "JaxTrainer",
    "NonFiniteLossError",
    "TrainState",
    "compute_dtype",
    "device_batch",
    "lr_at",
    "make_mesh",
    "make_optimizer",
    "maybe_initialize_distributed",
    "network",
    "pick_devices",
    "train",
]

SAMPLE_STEPS = 50  # DDIM steps of the periodic EMA sample grids


class TrainState(NamedTuple):
    """Everything the jitted step updates (replicated over the mesh)."""

    params: Any
    ema: Any
    opt_state: Any


# --------------------------------------------------------------------------- optimizer

def make_optimizer(train: Any) -> optax.GradientTransformation:
    """Clip at global norm, Adam, and the warm-up of ``app.training.protocol.warmup_lr``
    (``count``, the number of updates already applied, is its 0-based step)."""
    lr, warmup = float(train.lr), int(train.warmup_steps)

    def schedule(count: jax.Array) -> jax.Array:
        return jnp.asarray(warmup_lr(lr, warmup, count.astype(jnp.float32), jnp.minimum), jnp.float32)

    clip = (optax.clip_by_global_norm(float(train.grad_clip)) if train.grad_clip
            else optax.identity())
    return optax.chain(clip, optax.scale_by_adam(), optax.scale_by_learning_rate(schedule))


# --------------------------------------------------------------------------- one step

def _stream_key(seed_key: jax.Array, stream: int, step: jax.Array) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(seed_key, stream), step)


def network(config: UNetConfig | ClassifierConfig, dtype: Any) -> Any:
    """The Flax module of a model config: the U-Net, or the noise-aware classifier."""
    if isinstance(config, ClassifierConfig):
        return build_classifier(config, dtype=dtype)
    return UNet(config=config, dtype=dtype)


@functools.lru_cache(maxsize=8)
def cached_train_step(unet: UNetConfig | ClassifierConfig, dtype: Any, train: Any,
                      mesh: Mesh) -> Any:
    """:func:`make_train_step` for a config, built (and compiled) once per process.

    ``train`` enters only through the fields the step uses (``num_steps`` and
    ``batch_size`` are normalised away), so runs of different lengths share one program.
    """
    net = network(unet, dtype)
    schedule = make_schedule(schedule_dict(train))
    return make_train_step(net, schedule, train, make_optimizer(train), mesh)


@functools.lru_cache(maxsize=8)
def cached_init(unet: UNetConfig | ClassifierConfig, dtype: Any, train: Any, mesh: Mesh) -> Any:
    """Jitted ``key -> TrainState`` (fresh weights, EMA = weights, optimizer state),
    replicated over ``mesh``; built once per process."""
    net, tx = network(unet, dtype), make_optimizer(train)

    def init(key: jax.Array) -> TrainState:
        params = init_params(net, key)
        return TrainState(params, params, tx.init(params))

    return jax.jit(init, out_shardings=NamedSharding(mesh, P()))


def _step_key(train: Any) -> Any:
    return dataclasses.replace(train, num_steps=1, batch_size=1)


def make_train_step(net: UNet, schedule: Any, train: Any, tx: optax.GradientTransformation,
                    mesh: Mesh) -> Any:
    """The jitted step ``(state, key, step, x0, t, w[, y]) -> (state, metrics)``.

    ``x0`` float32 (B, C, H, W), ``t`` int32 (B,), ``w`` float32 (B,) (importance
    weights) and, for a class-conditional ``net``, ``y`` int32 (B,) labels in [0, K] are
    sharded along the batch; ``state``, ``key`` (the run's base key) and
    ``step`` are replicated. For a :class:`~ddpm_core.backends.jax.classifier.Classifier`
    ``net`` the loss is the cross-entropy of its logits on ``x_t`` for the classes ``y``.
    A step whose loss or gradient is not finite leaves the state unchanged (the loop then
    stops); ``metrics["finite"]`` says which happened. ``metrics["parts"]`` float32 (2,):
    the weighted batch means of L_simple and T * L_{t-1} (``loss`` ``vlb`` or ``hybrid``).
    """
    batch, repl = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    decay = float(train.ema_decay)
    classify = isinstance(net, Classifier)

    def step_fn(state: TrainState, key: jax.Array, step: jax.Array, x0: jax.Array,
                t: jax.Array, w: jax.Array, *y: jax.Array
                ) -> tuple[TrainState, dict[str, jax.Array]]:
        noise = jax.random.normal(_stream_key(key, STREAM_NOISE, step), x0.shape, x0.dtype)
        noise = jax.lax.with_sharding_constraint(noise, batch)
        rngs = {"dropout": _stream_key(key, STREAM_DROPOUT, step)}
        x_t = q_sample(schedule, x0, t, noise, validate=False)  # t drawn by the loop

        def loss_fn(params: Any) -> tuple[jax.Array, tuple[jax.Array, Any]]:
            if classify:
                logits = net.apply({"params": params}, x_t, t, train=True, rngs=rngs)
                losses = optax.softmax_cross_entropy_with_integer_labels(
                    logits.astype(jnp.float32), y[0])
                return jnp.mean(losses * w), (losses, None)
            out = jnp.asarray(net.apply({"params": params}, x_t, t, *y, train=True, rngs=rngs))
            terms = training_loss_terms(schedule, out.astype(jnp.float32), x0, x_t, t, noise,
                                        loss=train.loss, prediction=train.prediction,
                                        variance=train.variance, validate=False)
            parts = (None if terms.vlb is None else
                     jnp.stack([jnp.mean(terms.simple * w), jnp.mean(terms.vlb * w)]))
            return jnp.mean(terms.loss * w), (terms.loss, parts)

        (loss, (losses, parts)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = jax.tree.map(lambda e, p: e + (1.0 - decay) * (p - e), state.ema, params)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = TrainState(params, ema, opt_state)
        new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, state)
        metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite, "losses": losses}
        return new, metrics if parts is None else {**metrics, "parts": parts}

    donate = (0,) if mesh.devices.flat[0].platform != "cpu" else ()
    labels = (batch,) if net.config.num_classes or classify else ()
    return jax.jit(step_fn, in_shardings=(repl, repl, repl, batch, batch, batch, *labels),
                   out_shardings=(repl, repl), donate_argnums=donate)


# --------------------------------------------------------------------------- the backend

def train(options: TrainOptions) -> dict[str, Any]:
    """Train (or resume) a run with JAX; see :func:`ddpm_core.app.training.trainer.train`."""
    if options.backend != "jax":
        raise ValueError(f"backend must be 'jax' for this function; got {options.backend!r}")
    return trainer.train(options, JaxTrainer)


def device_batch(batch: HostBatch, sharding: NamedSharding) -> tuple[jax.Array, ...]:
    """``x_0`` float32 (B, C, H, W) in [-1, 1], ``t`` int32 (B,), ``w`` float32 (B,) (and
    the labels ``y`` int32 (B,) of a batch that has them), each assembled from every
    process's share and sharded along the batch."""
    x0 = np.ascontiguousarray(to_model_range(batch.images).transpose(0, 3, 1, 2))
    parts = (x0, batch.t.astype(np.int32), batch.weights)
    if batch.labels is not None:
        parts += (batch.labels.astype(np.int32),)
    return tuple(jax.make_array_from_process_local_data(sharding, a) for a in parts)


class JaxTrainer:
    """A :class:`ddpm_core.app.training.trainer.TrainBackend` for JAX (one jitted step)."""

    name = "jax"

    def __init__(self, options: TrainOptions, unet_cfg: Any, train_cfg: Any) -> None:
        self.o, self.cfg, self.tc = options, unet_cfg, train_cfg
        maybe_initialize_distributed()
        self.devices = pick_devices(options.device)
        self.mesh = make_mesh(self.devices)
        self.rank, self.world_size = jax.process_index(), jax.process_count()
        self.shards, self.main = len(self.devices), self.rank == 0
        self.dtype = compute_dtype(self.devices)
        self.key = seed_key(options.seed)
        self.repl = NamedSharding(self.mesh, P())
        self.batch_sharding = NamedSharding(self.mesh, P("data"))

    def state_path(self, run_dir: str | Path) -> Path:
        return ckpt.state_path(run_dir)

    def start(self, run_dir: str | Path | None, init: InitWeights | None = None
              ) -> tuple[int, dict[str, np.ndarray]]:
        init_fn = cached_init(self.cfg, self.dtype, _step_key(self.tc), self.mesh)
        self.step_fn = cached_train_step(self.cfg, self.dtype, _step_key(self.tc), self.mesh)
        if run_dir is None:
            self.state = init_fn(jax.random.fold_in(self.key, STREAM_INIT))
            if init is not None:
                self.state = jax.device_put(self.state._replace(
                    params=_flax_params(init.model, self.cfg, self.o.init),
                    ema=_flax_params(init.ema, self.cfg, self.o.init)), self.repl)
            return 0, {}
        st = jax.eval_shape(init_fn, self.key)  # templates: shapes and dtypes only
        info = ckpt.load_state(run_dir, params=st.params, ema=st.ema, opt_state=st.opt_state)
        self.state = jax.device_put(TrainState(info["params"], info["ema"], info["opt_state"]),
                                    self.repl)
        return info["step"], info["arrays"]

    def save(self, run_dir: str | Path, step: int, arrays: dict[str, np.ndarray]) -> None:
        st = self.state
        ckpt.save_state(run_dir, config=self.cfg, params=st.params, ema=st.ema,
                        opt_state=st.opt_state, key=self.key, step=step,
                        scalars={"seed": self.o.seed}, arrays=arrays)

    def train_step(self, step: int, batch: HostBatch) -> dict[str, jax.Array]:
        arrays = device_batch(batch, self.batch_sharding)
        self.state, metrics = self.step_fn(self.state, self.key, np.int32(step), *arrays)
        return metrics

    @property
    def terms(self) -> tuple[str, ...]:
        """The loss's parts a step returns: L_simple and T * L_{t-1} for ``vlb``/``hybrid``."""
        plain = self.tc.loss == "simple" or isinstance(self.cfg, ClassifierConfig)
        return () if plain else TERM_FIELDS

    def read_metrics(self, handles: list[Any]
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        got = jax.device_get([(m["loss"], m["grad_norm"], m.get("parts")) for m in handles])
        parts = {name: np.asarray([g[2][i] for g in got], np.float64)
                 for i, name in enumerate(self.terms)}
        return (np.asarray([g[0] for g in got], np.float64),
                np.asarray([g[1] for g in got], np.float64), parts)

    def global_losses(self, handle: Any) -> np.ndarray:
        return _host_all(handle["losses"])

    def sample_grid(self, n: int, seed: int) -> np.ndarray:
        sampler = _grid_sampler(self.cfg, self.dtype, _step_key(self.tc))
        # One device's replica: the grid is this process's own computation (multi-host safe).
        ema = jax.tree.map(lambda a: a.addressable_data(0), self.state.ema)
        if self.cfg.num_classes:
            sampler = _labeled_grid_sampler(self.cfg, self.dtype, _step_key(self.tc), n)
        x, _ = sampler.generate(ema, n=n, seed=seed)
        return to_images(x)

    def summary(self) -> dict[str, Any]:
        return {"device": str(self.devices[0].platform), "world_size": len(self.devices)}

    def finish(self, ok: bool = True) -> None:
        if self.world_size > 1 and ok:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("ddpm_core train finished")


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


@functools.lru_cache(maxsize=4)
def _labeled_grid_sampler(unet: UNetConfig, dtype: Any, train: Any, n: int) -> Sampler:
    """The grid sampler of a class-conditional run: labels ``grid_labels(n, K)``."""
    plain = _grid_sampler(unet, dtype, train)
    net, y = UNet(config=unet, dtype=dtype), jnp.asarray(grid_labels(n, unet.num_classes))
    return Sampler(lambda p, x, t: net.apply({"params": p}, x, t, y), plain.chain, plain.shape)


def _flax_params(arrays: dict[str, np.ndarray], config: UNetConfig, source: Any) -> Any:
    """Canonical (PyTorch-layout) weights as a float32 Flax ``params`` tree."""
    from ddpm_core.interop.convert import torch_to_flax

    try:
        return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), torch_to_flax(arrays, config))
    except ValueError as e:
        raise ValueError(f"--init {source}: weights do not fit this U-Net ({e})") from e


def _host_all(x: jax.Array) -> np.ndarray:
    """The whole (batch-sharded) array on this host."""
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


