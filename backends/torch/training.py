"""The PyTorch side of the training loop (``ddpm_core.app.training.trainer``): state and one step.

:class:`TorchTrainer` builds the U-Net, its EMA copy and Adam, and runs one step of
Algorithm 1 on the batch the shared loop draws (and its labels ``y`` for a class-conditional
run): ``eps`` from a generator seeded by ``(seed, step)`` (drawn for the global batch, then
sliced), ``x_t = q_sample(x_0, t, eps)``, the core's ``training_loss_terms`` (the loss, and
for ``vlb``/``hybrid`` its two parts for the log), one Adam step with
linear warm-up after clipping the global gradient norm, and the EMA update. Dropout draws
from the global generator, forked and seeded by ``(seed, step, rank)``.

Distributed: ``torchrun`` sets ``WORLD_SIZE``; the process group is joined (NCCL on CUDA,
gloo on the CPU) and the model wrapped in ``DistributedDataParallel``. On CUDA: bf16
autocast, channels_last, fused Adam, optional ``torch.compile``; on CPU the same code in
float32.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

import ddpm_core
from ddpm_core.app.run.images import to_uint8
from ddpm_core.app.run.options import TrainOptions
from ddpm_core.app.run.rundir import make_schedule, schedule_dict
from ddpm_core.app.training import trainer
from ddpm_core.app.training.logs import TERM_FIELDS
from ddpm_core.app.training.seeding import STREAM_DROPOUT, STREAM_INIT, STREAM_NOISE, step_seed
from ddpm_core.app.training.trainer import HostBatch, InitWeights, NonFiniteLossError, grid_labels
from ddpm_core.backends.torch import checkpoint as ckpt
from ddpm_core.backends.torch.guided import make_guide
from ddpm_core.backends.torch.sampling import generate
from ddpm_core.backends.torch.unet import UNet

__all__ = ["NonFiniteLossError", "TorchTrainer", "pick_device", "train"]

SAMPLE_STEPS = 100  # ancestral DDPM on a 100-step respaced chain for the EMA grids


def train(options: TrainOptions) -> dict[str, Any]:
    """Train (or resume) a run with PyTorch; see :func:`ddpm_core.app.training.trainer.train`."""
    if options.backend != "torch":
        raise ValueError(f"backend must be 'torch' for this function; got {options.backend!r}")
    return trainer.train(options, TorchTrainer)


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


def _join_process_group(device: torch.device) -> bool:
    """Join the group ``torchrun`` describes (WORLD_SIZE > 1); True if this call joined it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


@contextlib.contextmanager
def _step_rng(seed: int, step: int, rank: int, device: torch.device) -> Iterator[None]:
    """Dropout draws from the global generator: fork it and seed by (seed, step, rank)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(step_seed(seed, step, STREAM_DROPOUT + 8 * rank))
        yield


@torch.no_grad()
def _load_numpy(net: nn.Module, arrays: dict[str, np.ndarray], source: Any) -> None:
    """Copy canonical NumPy weights into ``net`` (its device and dtype)."""
    try:
        net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()})
    except RuntimeError as e:
        raise ValueError(f"--init {source}: weights do not fit this U-Net ({e})") from e


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    torch._foreach_lerp_(list(ema.parameters()), [p.detach() for p in model.parameters()],
                         1.0 - decay)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


class TorchTrainer:
    """A :class:`ddpm_core.app.training.trainer.TrainBackend` for PyTorch."""

    name = "torch"
    network: Any = UNet  # built from the model config by start()
    device_data: bool | None = None  # hold the training set on the device (None: on CUDA)
    DEVICE_DATA_BYTES = 4 << 30
    # ``compile``: torch.compile's backend, and whether it applies on the CPU too (tests)
    compile_backend, compile_on_cpu = "inductor", False
    compile_mode: str | None = None  # torch.compile's mode ("reduce-overhead": CUDA graphs)

    def __init__(self, options: TrainOptions, unet_cfg: Any, train_cfg: Any) -> None:
        self.o, self.cfg, self.tc = options, unet_cfg, train_cfg
        self.device = pick_device(options.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.joined = _join_process_group(self.device)
        self.distributed = dist.is_initialized() and dist.get_world_size() > 1
        self.rank = dist.get_rank() if self.distributed else 0
        self.world_size = self.shards = dist.get_world_size() if self.distributed else 1
        self.main = self.rank == 0
        self.cuda = self.device.type == "cuda"
        self.schedule = make_schedule(schedule_dict(train_cfg))

    def state_path(self, run_dir: str | Path) -> Path:
        return ckpt.state_path(run_dir)

    @property
    def terms(self) -> tuple[str, ...]:
        """The loss's parts a step returns: L_simple and T * L_{t-1} for ``vlb``/``hybrid``."""
        return () if self.tc.loss == "simple" else TERM_FIELDS

    # ---------------------------------------------------------------- state

    def start(self, run_dir: str | Path | None, init: InitWeights | None = None
              ) -> tuple[int, dict[str, np.ndarray]]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(step_seed(self.o.seed, 0, STREAM_INIT))
            self.model = self.network(self.cfg)
        self.model.to(self.device)
        if self.cuda:
            self.model.to(memory_format=torch.channels_last)
        if init is not None:
            _load_numpy(self.model, init.model, self.o.init)
        self.ema = copy.deepcopy(self.model).eval().requires_grad_(False)
        if init is not None:
            _load_numpy(self.ema, init.ema, self.o.init)
        if self.distributed and getattr(self.cfg, "unet", self.cfg).in_channels == 1:
            # DDP's gradient buckets take the parameters' strides; single-channel data runs
            # the convolutions channels_last (see train_step), so do their gradients.
            self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.tc.lr, fused=True)
        step, arrays = 0, {}
        if run_dir is not None:
            info = ckpt.load_state(run_dir, model=self.model, ema=self.ema, optimizer=self.opt)
            step, arrays = info["step"], {k: v.numpy() for k, v in info["arrays"].items()}
        self.net = self._wrap()
        self.model.train()
        return step, arrays

    @property
    def compiled(self) -> bool:
        return bool(self.o.compile) and (self.cuda or self.compile_on_cpu)

    def _wrap(self) -> Any:
        """The model as the step calls it (DDP, compiled), and the update (compiled)."""
        net: Any = self.model
        if self.distributed:
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[self.device.index] if self.cuda else None)
        self.update = self._update
        self.lr = None
        if self.compiled:
            net = torch.compile(net, backend=self.compile_backend, mode=self.compile_mode)
            # the update's graph takes the learning rate as a tensor: no recompilation as
            # it warms up; PyTorch breaks the graph around optimizer.step on purpose, so
            # forward + backward and the update are two compiled graphs (pytorch#104053)
            self.update = torch.compile(self._update, backend=self.compile_backend, mode=self.compile_mode)
            self.lr = torch.zeros((), device=self.device)
        return net

    def save(self, run_dir: str | Path, step: int, arrays: dict[str, np.ndarray]) -> None:
        ckpt.save_state(run_dir, model=self.model, ema=self.ema, optimizer=self.opt, step=step,
                        scalars={"seed": self.o.seed},
                        arrays={k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()})

    # ---------------------------------------------------------------- one step

    def _noise(self, step: int, shape: tuple[int, ...]) -> torch.Tensor:
        """This rank's slice of the global batch's eps, seeded by (seed, step)."""
        g = torch.Generator(device=self.device)
        g.manual_seed(step_seed(self.o.seed, step, STREAM_NOISE))
        noise = torch.randn((shape[0] * self.world_size, *shape[1:]), generator=g,
                            device=self.device)
        return noise[self.rank * shape[0]:(self.rank + 1) * shape[0]]

    def hold_data(self, images: np.ndarray) -> bool:
        """Keep the training set (uint8 (N, H, W, C)) on the device: by default on CUDA when
        it takes at most ``DEVICE_DATA_BYTES``; ``device_data`` True or False forces it."""
        keep = self.device_data
        if keep is None:
            keep = self.cuda and images.nbytes <= self.DEVICE_DATA_BYTES
        self.data = torch.from_numpy(np.ascontiguousarray(images)).to(self.device) if keep else None
        return bool(keep)

    def _images(self, batch: HostBatch) -> torch.Tensor:
        """The batch's uint8 images (b, C, H, W) on the device: gathered from the held
        training set, or uploaded from the host batch."""
        if batch.images is None:
            x = self.data.index_select(0, self._upload(batch.indices))
            if batch.flips is not None:
                x = torch.where(self._upload(batch.flips)[:, None, None, None], x.flip(2), x)
            return x.permute(0, 3, 1, 2).contiguous()
        # NCHW rows as np.ascontiguousarray lays them out (for C = 1 it keeps the NHWC
        # strides, so single-channel data runs the convolutions channels_last)
        return self._upload(batch.images.transpose(0, 3, 1, 2))

    def _upload(self, array: np.ndarray) -> torch.Tensor:
        """A host array on the device, copied without waiting (pinned memory on CUDA)."""
        host = torch.from_numpy(np.ascontiguousarray(array))
        return host.pin_memory().to(self.device, non_blocking=True) if self.cuda else host

    def _inputs(self, step: int, batch: HostBatch) -> tuple[torch.Tensor, ...]:
        """``(x0, x_t, t, w, eps)`` of a step on the device; sets the step's learning rate."""
        x0 = self._images(batch).float() / 127.5 - 1.0
        t = torch.as_tensor(batch.t, device=self.device)
        w = torch.as_tensor(batch.weights, device=self.device)
        noise = self._noise(step, tuple(x0.shape))
        x_t = ddpm_core.q_sample(self.schedule, x0, t, noise, validate=False)  # t drawn here
        if self.cuda:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        lr = trainer.lr_at(self.tc, step)
        if self.lr is not None:
            self.lr.fill_(lr)  # a device write, no host read
            lr = self.lr
        for group in self.opt.param_groups:
            group["lr"] = lr
        return x0, x_t, t, w, noise

    def _clip_and_step(self) -> torch.Tensor:
        """Clip the global gradient norm, one Adam step; returns the norm."""
        clip = self.tc.grad_clip if self.tc.grad_clip is not None else math.inf
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), clip, foreach=True)
        self.opt.step()
        return grad_norm

    def _update(self) -> torch.Tensor:
        """The step after backward: clip, Adam, the EMA; returns the gradient norm."""
        grad_norm = self._clip_and_step()
        _ema_update(self.ema, self.model, self.tc.ema_decay)
        return grad_norm

    def _optimize(self, loss: torch.Tensor) -> torch.Tensor:
        """Backward, clip, one Adam step (no EMA: the classifier's step); returns the norm."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        return self._clip_and_step()

    def train_step(self, step: int, batch: HostBatch) -> tuple[torch.Tensor, ...]:
        graphs = self.compiled and self.compile_mode == "reduce-overhead"
        if graphs:  # CUDA graph replays may now reuse the previous step's graph memory
            torch.compiler.cudagraph_mark_step_begin()
        x0, x_t, t, w, noise = self._inputs(step, batch)
        cond = () if batch.labels is None else (torch.as_tensor(batch.labels, device=self.device),)
        with _step_rng(self.o.seed, step, self.rank, self.device), self._autocast():
            out = self.net(x_t, t, *cond)
        terms = ddpm_core.training_loss_terms(self.schedule, out.float(), x0, x_t, t, noise,
                                              loss=self.tc.loss, prediction=self.tc.prediction,
                                              variance=self.tc.variance, validate=False)
        loss = (terms.loss * w).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = self.update()
        if graphs:  # the handles outlive the step until the next log boundary reads them
            grad_norm = grad_norm.clone()
        parts = (torch.stack([(terms.simple * w).mean(), (terms.vlb * w).mean()]).detach()
                 if self.terms else None)
        return loss.detach(), grad_norm.detach(), terms.loss.detach(), parts

    def _autocast(self) -> Any:
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ---------------------------------------------------------------- metrics

    def read_metrics(self, handles: list[Any]
                     ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        # (n, 1 + parts): the loss, then its parts; one all-reduce and one copy for all
        losses = torch.stack([h[0] for h in handles]).double()[:, None]
        if self.terms:
            losses = torch.cat([losses, torch.stack([h[3] for h in handles]).double()], dim=1)
        grad_norm = torch.stack([h[1] for h in handles]).double()
        if self.distributed:  # the ranks' batches are equal: the global loss is their mean
            dist.all_reduce(losses)
            losses /= self.world_size
        values = losses.cpu().numpy()
        parts = {name: values[:, 1 + i] for i, name in enumerate(self.terms)}
        return values[:, 0], grad_norm.cpu().numpy(), parts

    def global_losses(self, handle: Any) -> np.ndarray:
        losses = handle[2].float()
        if self.distributed:
            parts = [torch.empty_like(losses) for _ in range(self.world_size)]
            dist.all_gather(parts, losses.contiguous())
            losses = torch.cat(parts)
        return losses.cpu().numpy()

    # ---------------------------------------------------------------- the rest

    def sample_grid(self, n: int, seed: int) -> np.ndarray:
        labels = grid_labels(n, self.cfg.num_classes) if self.cfg.num_classes else None
        x = generate(self.ema, self.schedule, n=n, sampler="ddpm",
                     steps=min(SAMPLE_STEPS, self.schedule.num_timesteps), seed=seed,
                     prediction=self.tc.prediction, variance=self.tc.variance,
                     device=self.device,
                     guide=make_guide(self.ema, labels))
        self.model.train()
        return to_uint8(x)

    def summary(self) -> dict[str, Any]:
        return {"device": str(self.device), "world_size": self.world_size}

    def finish(self, ok: bool = True) -> None:
        if self.distributed and ok:
            dist.barrier()
        if self.joined:
            dist.destroy_process_group()
