"""The PyTorch half of the sampling driver: :class:`TorchSampling` (the
``ddpm_core.app.sampling.protocol.SampleBackend`` of this backend) and its chains.

A chain is the network call (bf16 autocast on CUDA, ``torch.compile`` with ``compile``)
and the core's :func:`ddpm_core.reverse_step`, run either as the core's
:func:`ddpm_core.sample_loop` (eagerly, guided or not) or as one step on fixed buffers
replayed K times, captured as a CUDA graph with ``cuda_graph`` (:class:`StaticChain`).
The noise of sample j is its own generator's (``ddpm_core.backends.torch.noise``).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ddpm_core import needs_noise, reverse_step, sample_loop
from ddpm_core.app.run.integrity import check_finite, verify_file
from ddpm_core.app.run.rundir import RunPaths
from ddpm_core.app.sampling.protocol import ChainSpec, GuideSpec
from ddpm_core.backends.torch import checkpoint as ckpt
from ddpm_core.backends.torch.classifier import Classifier, log_prob_grad
from ddpm_core.backends.torch.noise import SampleStreams, host_sync_errors, interpolation_streams
from ddpm_core.guidance import cfg_output

__all__ = ["StaticChain", "TorchChain", "TorchSampling", "conditional_model", "load_classifier", "model_fn"]


def model_fn(net: nn.Module, *, compile: bool = False) -> Callable[..., Any]:
    """``(x_t, t, y=None) -> float32 output`` without gradients (bf16 autocast on CUDA).

    ``y`` are the class labels of a class-conditional network (None for an unconditional one).
    Autocast runs without its weight-cast cache (each weight is cast once per call anyway),
    which CUDA-graph capture requires.
    """
    net.eval()
    device = next(net.parameters()).device
    call: Any = net
    if compile and device.type == "cuda":
        call = torch.compile(net, mode="reduce-overhead")
    amp = (torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
           if device.type == "cuda" else contextlib.nullcontext())

    def fn(x: torch.Tensor, t: Any, y: Any = None) -> torch.Tensor:
        with torch.inference_mode(), amp:
            return call(x, torch.as_tensor(t, device=x.device), y).float()

    return fn


def conditional_model(fn: Callable[..., Any], y: torch.Tensor, num_classes: int, scale: float,
                      rescale: float = 0.0, variance: str = "fixed_small") -> Callable[[Any, Any], Any]:
    """``(x, t) -> output`` of a class-conditional model for labels ``y`` (B,).

    s = 1 is the conditional model itself (one pass, exactly the unguided sampler's call);
    otherwise the guided output of one batched call (G1, G2; ``ddpm_core.guidance.cfg_output``).
    ``fn(x, t, y)`` is :func:`model_fn`'s; an unconditional model (``num_classes = 0``)
    returns ``fn``.
    """
    if not num_classes:
        return fn
    if scale == 1.0:  # (G1) at s = 1 is the conditional output whatever the rescale
        return lambda x, t: fn(x, t, y)
    return lambda x, t: cfg_output(fn, x, t, y, num_classes, scale, rescale=rescale, variance=variance)


def _load_checked(net: nn.Module, path: Path, info: dict[str, Any], what: str) -> nn.Module:
    """``net`` with the weights of ``path``, checked against run.json's hash and for
    non-finite values first."""
    weights = ckpt.load_weights(path)
    verify_file(info, path)
    check_finite(path, {k: v.float().numpy() for k, v in weights.items()})
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match {what} ({' '.join(str(e).split())})") from e
    return net


def load_classifier(run_dir: str | os.PathLike, config: Any, info: dict[str, Any],
                    device: torch.device) -> Classifier:
    """The classifier of a classifier run (its ``model.safetensors``), in eval mode."""
    paths = RunPaths.of(run_dir)
    net = _load_checked(Classifier(config), paths.model, info, f"the classifier in {paths.run_json}")
    return net.to(device).eval()


class StaticChain:
    """The reverse chain as one step on fixed buffers, run K times; optionally a CUDA graph.

    The step (model call, then the core's ``reverse_step`` with a tensor step index) reads
    ``x``, ``x0`` (the previous step's x0_hat, a multistep sampler's state), ``i``,
    ``t_model`` and ``noise`` and writes ``x`` and ``x0``, so a captured graph replays it for
    every step after the host has refilled ``i``, ``t_model`` and ``noise``.
    Without ``capture`` the same step runs eagerly (the CPU-testable path). Every tensor is
    made and used under ``torch.inference_mode``.
    """

    def __init__(self, fn: Callable[[Any, Any], Any], spec: ChainSpec, shape: tuple[int, ...],
                 device: torch.device, *, capture: bool) -> None:
        self.fn, self.spec, self.sched = fn, spec, spec.schedule
        self.needs_noise = needs_noise(spec.sampler, spec.eta)
        self.x, self.x0, self.noise = (torch.zeros(shape, device=device) for _ in range(3))
        self.i, self.t_model = (torch.zeros(shape[0], dtype=torch.int64, device=device) for _ in range(2))
        self.graph = self._capture() if capture else None

    def _set_step(self, i: int) -> None:
        self.i.fill_(i)
        self.t_model.fill_(int(self.sched.timesteps[i]))

    def step(self) -> None:
        """One denoising step at the index in ``self.i``, in place on ``self.x``."""
        res = reverse_step(self.sched, self.fn(self.x, self.t_model), self.x, self.i, self.noise,
                           **self.spec.step_kwargs(), x0_prev=self.x0, start=self.sched.num_timesteps - 1)
        self.x0.copy_(res.x0_hat)
        self.x.copy_(res.x_prev)

    def _capture(self) -> torch.cuda.CUDAGraph:
        """Warm up on a side stream (allocations, autotuning, cached tables), then capture.

        The second warm-up step runs with synchronisation errors on: a step that reads a
        value on the host cannot be captured, and failing there leaves the device usable.
        """
        self._set_step(self.sched.num_timesteps - 1)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self.step()
            try:
                with host_sync_errors():
                    self.step()
            except RuntimeError as e:
                raise RuntimeError(f"cuda_graph=True: the sampling step synchronises with the host, "
                                   f"so it cannot be captured ({str(e).splitlines()[0]})") from e
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.step()
        return graph

    def run(self, x_T: torch.Tensor, streams: SampleStreams, keep: Callable[[int], bool],
            on_step: Callable[[], None] = lambda: None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The chain from ``x_T``: the x0_hat of the steps ``keep(i)`` and x_0."""
        self.x.copy_(x_T)
        self.x0.zero_()  # no previous x0_hat: the first step is first order (start)
        frames = []
        for i in range(self.sched.num_timesteps - 1, -1, -1):
            self._set_step(i)
            if self.needs_noise and i > 0:
                self.noise.copy_(streams(i))
            if self.graph is None:
                self.step()
            else:
                self.graph.replay()
            if keep(i):
                frames.append(self.x0.clone())
            on_step()
        return frames, self.x.clone()


class TorchChain:
    """A chain of one network: its model callable, spec and guidance, and (with
    ``static``) one :class:`StaticChain` per batch size."""

    def __init__(self, net: nn.Module, spec: ChainSpec, guide: GuideSpec | None, *, compile: bool = False,
                 static: bool = False, capture: bool = False) -> None:
        self.net, self.spec, self.guide = net, spec, guide
        self.fn = model_fn(net, compile=compile)
        self.device = next(net.parameters()).device
        cfg = net.config
        self.image = (cfg.in_channels, cfg.image_size, cfg.image_size)
        self.static, self.capture = static, capture
        self._static: dict[int, StaticChain] = {}
        if guide is not None and guide.uses_classifier:
            guide.classifier.eval()

    def _guided(self, labels: np.ndarray | None) -> tuple[Callable[..., Any], dict[str, Any]]:
        """The batch's model callable and ``sample_loop``'s classifier keywords."""
        g = self.guide
        if g is None or labels is None:
            return self.fn, {}
        y = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=self.device)
        call = conditional_model(self.fn, y, g.num_classes, g.scale, g.rescale, self.spec.variance)
        if not g.uses_classifier:
            return call, {}
        grad = functools.partial(_classifier_grad, g.classifier, y)
        return call, {"classifier_grad": grad, "classifier_scale": g.classifier_scale}

    def run(self, x: torch.Tensor, noise: Any, labels: np.ndarray | None, *, start: int | None,
            frame_steps: Sequence[int], on_step: Callable[[], None] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        wanted = set(frame_steps)
        on_step = on_step or (lambda: None)
        if self.static:
            with torch.inference_mode():
                chain = self._static.get(x.shape[0])
                if chain is None:
                    chain = self._static[x.shape[0]] = StaticChain(self.fn, self.spec, tuple(x.shape), self.device,
                                                                   capture=self.capture)
                frames, x = chain.run(x, noise, lambda i: i in wanted, on_step)
            return x, _stack(frames, x)
        call, extra = self._guided(labels)
        s = self.spec
        frames = []
        for st in sample_loop(s.schedule, call, x, noise, **s.step_kwargs(), start=start, **extra):
            x = st.x
            if st.step in wanted:
                frames.append(st.x0_hat)
            on_step()
        return x, _stack(frames, x)


def _stack(frames: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The kept x0_hat as (F, B, C, H, W); (0, B, C, H, W) when none is kept."""
    return torch.stack(frames) if frames else x.new_zeros((0, *x.shape))


def _classifier_grad(classifier: nn.Module, y: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return log_prob_grad(classifier, x.float(), t, y)


def _float32_model(net: nn.Module) -> Callable[[Any, Any], Any]:
    """``(x_t, t) -> output`` in float32 (no autocast: the bound needs full precision)."""

    def fn(x: torch.Tensor, t: Any) -> torch.Tensor:
        return net(x, torch.as_tensor(t, device=x.device)).float()

    return fn


class TorchSampling:
    """The PyTorch :class:`~ddpm_core.app.sampling.protocol.SampleBackend`."""

    name = "torch"
    pads_batches = False

    def load(self, run_dir: str | os.PathLike, info: dict[str, Any], *, use_ema: bool, device: str) -> nn.Module:
        from ddpm_core.backends.torch.training import pick_device
        from ddpm_core.backends.torch.unet import UNet
        from ddpm_core.models import UNetConfig

        paths = RunPaths.of(run_dir)
        net = _load_checked(UNet(UNetConfig.from_dict(info["unet"])), paths.ema if use_ema else paths.model,
                            info, f"the U-Net in {paths.run_json}")
        return net.to(pick_device(device)).eval()

    def load_classifier(self, run_dir: Any, config: Any, info: dict[str, Any], network: nn.Module) -> nn.Module:
        return load_classifier(run_dir, config, info, next(network.parameters()).device)

    def chain(self, network: nn.Module, spec: ChainSpec, guide: GuideSpec | None, *, compile: bool) -> TorchChain:
        return TorchChain(network, spec, guide, compile=compile)

    def draw(self, chain: TorchChain, seed: int, lo: int, hi: int) -> tuple[torch.Tensor, SampleStreams]:
        streams = SampleStreams(seed, lo, hi, chain.image, chain.spec.schedule.num_timesteps, chain.device)
        return streams.x_T, streams

    def interpolation_noise(self, chain: TorchChain, seed: int, count: int) -> tuple[Any, Any, Any]:
        return interpolation_streams(seed, count, chain.image, chain.device)

    def run(self, chain: TorchChain, x: Any, noise: Any, labels: np.ndarray | None, *, start: int | None,
            frame_steps: Sequence[int], on_step: Callable[[], None] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        return chain.run(x, noise, labels, start=start, frame_steps=frame_steps, on_step=on_step)

    def asarray(self, chain_or_network: Any, x: np.ndarray) -> torch.Tensor:
        net = chain_or_network.net if isinstance(chain_or_network, TorchChain) else chain_or_network
        return torch.as_tensor(x, device=next(net.parameters()).device)

    def numpy(self, x: torch.Tensor) -> np.ndarray:
        return x.detach().cpu().numpy()

    def float32_model(self, network: nn.Module) -> Callable[[Any, Any], Any]:
        return _float32_model(network)

    def inference(self) -> contextlib.AbstractContextManager[Any]:
        return torch.inference_mode()

