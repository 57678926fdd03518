"""Sampling with a PyTorch U-Net through the core's ``sample_loop``.

- ancestral DDPM (Algorithm 2) with the fixed-small, fixed-large or learned variance,
  optionally on a respaced chain of ``steps`` steps;
- DDIM (Song et al. 2021) on ``steps`` steps with ``eta``;
- progressive generation: the x0_hat of selected steps (the paper's Figure 6);
- interpolation in x_t (the paper's Figure 8).

Randomness
----------
Sample ``j`` (its index in the whole request, not in its batch) owns one ``torch.Generator``
on the network's device, seeded once from ``(seed, j)`` (:func:`sample_seeds`); it draws
that sample's x_T and then the noise of every step (:class:`SampleStreams`). So a seed gives
the same images whatever ``n`` and ``batch_size``: ``n=4`` are the first 4 images of
``n=8``, as in the JAX backend (whose numbers differ: it draws from JAX keys).

On CUDA the model call runs in bf16 autocast. ``compile=True`` compiles it with
``mode="reduce-overhead"``; ``cuda_graph=True`` captures one whole denoising step (model
and the core's update, on fixed buffers) as a CUDA graph and replays it K times, which
removes the per-step launch overhead of both.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ddpm_core.app.chains import chain_schedule
from ddpm_core.app.images import to_uint8
from ddpm_core.app.seeding import step_seed

__all__ = ["SampleStreams", "chain_schedule", "generate", "host_sync_errors", "interpolate_images",
           "model_fn", "progressive_frames", "sample_seeds"]

_STREAM_SAMPLE = 11
_CHUNK_FLOATS = 1 << 16  # one sample's step noise is drawn this many floats (whole steps) at a time


@contextlib.contextmanager
def host_sync_errors() -> Iterator[None]:
    """CUDA calls that synchronise with the host raise inside the block; the previous mode
    is restored on every exit. (PyTorch warns that the mode is a prototype each time it is
    set; that warning is silenced here so that ``-W error`` cannot leave the mode on.)"""
    def set_mode(mode: Any) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Synchronization debug mode is a prototype",
                                    UserWarning)
            torch.cuda.set_sync_debug_mode(mode)

    old = torch.cuda.get_sync_debug_mode()
    set_mode("error")
    try:
        yield
    finally:
        set_mode(old)


# guide(fn, lo, hi) -> (batch lo..hi-1's model callable, its loop), see ``_run``
Guide = Callable[[Callable[..., Any], int, int], tuple[Callable[..., Any], Callable[..., Any]]]


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


def _batches(n: int, batch_size: int | None) -> list[tuple[int, int]]:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1; got {n!r}")
    bs = n if batch_size is None else batch_size
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise ValueError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    return [(lo, min(lo + bs, n)) for lo in range(0, n, bs)]


def sample_seeds(seed: int, lo: int, hi: int) -> list[int]:
    """Generator seeds of samples ``lo .. hi - 1`` of a request; distinct for distinct j.

    With ``k = step_seed(seed, 0, 11)``: ``seed_j = (k >> 32) << 32 | h((k + j) mod 2**32)``,
    where ``h`` is the "lowbias32" integer hash, a bijection of 32-bit integers. So no two
    samples of one request share a stream even though PyTorch's CPU generator (a Mersenne
    Twister) keeps only the low 32 bits of its seed; CUDA's Philox uses all 64.
    """
    if isinstance(lo, bool) or not isinstance(lo, int) or not 0 <= lo <= hi <= 2**32:
        raise ValueError(f"sample indices must satisfy 0 <= lo <= hi <= 2**32; got lo={lo!r}, hi={hi!r}")
    k = step_seed(seed, 0, _STREAM_SAMPLE)
    m32 = np.uint64(0xFFFFFFFF)
    x = (np.arange(lo, hi, dtype=np.uint64) + np.uint64(k & 0xFFFFFFFF)) & m32
    for shift, mul in ((16, 0x7FEB352D), (15, 0x846CA68B)):
        x = ((x ^ (x >> np.uint64(shift))) * np.uint64(mul)) & m32
    x = x ^ (x >> np.uint64(16))
    return [int(v) | (k >> 32) << 32 for v in x.tolist()]


class SampleStreams:
    """The noise of samples ``lo .. hi - 1`` of a request: sample j's depends on (seed, j) only.

    Sample ``j`` owns a ``torch.Generator`` on ``device`` seeded once with its
    :func:`sample_seeds` value. Its stream is x_T (one ``normal_`` of one image, (C, H, W)),
    then the noise of the chain's steps K-1, ..., 1 in that order, drawn ``chunk`` steps at a
    time as one ``normal_`` of (chunk, C, H, W), with ``chunk = max(1, 2**16 // (C H W))``
    (the last chunk holds the steps left). A batch's noise is these rows stacked, so ``n``,
    ``batch_size`` and the other samples never change sample j's images, at the cost of
    ``hi - lo`` draws per chunk instead of one draw per step.

    Parameters
    ----------
    seed : int >= 0
    lo, hi : global indices of the batch's first and one-past-last sample
    image_shape : (C, H, W)
    num_steps : K, the chain's length
    device : the network's device

    Attributes
    ----------
    x_T : float32 (hi - lo, C, H, W)
    """

    def __init__(self, seed: int, lo: int, hi: int, image_shape: Sequence[int], num_steps: int,
                 device: torch.device) -> None:
        self._gens = [torch.Generator(device=device).manual_seed(s) for s in sample_seeds(seed, lo, hi)]
        self._image = tuple(int(s) for s in image_shape)
        self._device = device
        self.num_steps = int(num_steps)
        self.chunk = max(1, _CHUNK_FLOATS // int(np.prod(self._image)))
        self.x_T = self._draw(1)[:, 0]
        # the current chunk: chain positions start .. start + len - 1 (none drawn yet)
        self._start, self._block = 0, torch.empty((len(self._gens), 0, *self._image), device=device)

    def _draw(self, steps: int) -> torch.Tensor:
        """The next ``steps`` images of every sample's stream, (B, steps, C, H, W)."""
        out = torch.empty((len(self._gens), steps, *self._image), device=self._device)
        for row, g in zip(out, self._gens, strict=True):
            row.normal_(generator=g)
        return out

    def __call__(self, i: int) -> torch.Tensor:
        """Noise of step ``i`` (B, C, H, W); steps are asked for in order K-1, K-2, ..., 1."""
        K = self.num_steps
        if isinstance(i, bool) or not isinstance(i, int) or not 1 <= i < K:
            raise ValueError(f"i must be a step index in [1, {K}) (step 0 adds no noise); got {i!r}")
        pos = K - 1 - i  # chain position: 0 for the first step
        end = self._start + self._block.shape[1]
        if not self._start <= pos < end:
            if pos != end:
                raise ValueError(f"noise of step {i} asked for out of order: steps run from "
                                 f"{K - 1} down to 1 and the next one is {K - 1 - end}")
            self._start, self._block = pos, self._draw(min(self.chunk, K - 1 - pos))
        return self._block[:, pos - self._start]


class _StaticChain:
    """The reverse chain as one step on fixed buffers, run K times; optionally a CUDA graph.

    The step (model call, then the core's ``ddpm_step`` or ``ddim_step`` with a tensor step
    index) reads ``x``, ``i``, ``t_model`` and ``noise`` and writes ``x`` and ``x0``, so a
    captured graph replays it for every step after the host has refilled ``i``, ``t_model``
    and ``noise``. Without ``capture`` the same step runs eagerly (the CPU-testable path).
    Every tensor is made and used under ``torch.inference_mode``.
    """

    def __init__(self, fn: Callable[[Any, Any], Any], sched: Any, shape: tuple[int, ...],
                 device: torch.device, *, sampler: str, eta: float, prediction: str,
                 variance: str, clip: Any, capture: bool) -> None:
        self.fn, self.sched, self.sampler, self.eta = fn, sched, sampler, float(eta)
        self.kw = {"prediction": prediction, "clip": clip}
        self.variance = variance
        self.needs_noise = sampler == "ddpm" or self.eta > 0
        self.x, self.x0, self.noise = (torch.zeros(shape, device=device) for _ in range(3))
        self.i, self.t_model = (torch.zeros(shape[0], dtype=torch.int64, device=device)
                                for _ in range(2))
        self.graph = self._capture() if capture else None

    def _set_step(self, i: int) -> None:
        self.i.fill_(i)
        self.t_model.fill_(int(self.sched.timesteps[i]))

    def step(self) -> None:
        """One denoising step at the index in ``self.i``, in place on ``self.x``."""
        from ddpm_core import ddim_step, ddpm_step

        out = self.fn(self.x, self.t_model)
        if self.sampler == "ddpm":
            res = ddpm_step(self.sched, out, self.x, self.i, self.noise, variance=self.variance,
                            **self.kw)
        else:  # DDIM ignores a learned variance head, as the core's sample_loop does
            res = ddim_step(self.sched, out[:, : self.x.shape[1]], self.x, self.i, self.i - 1,
                            self.noise if self.eta > 0 else None, eta=self.eta, **self.kw)
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

    def run(self, streams: SampleStreams, keep: Callable[[int], bool]
            ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The chain from ``streams.x_T``: the x0_hat of the steps ``keep(i)`` and x_0."""
        self.x.copy_(streams.x_T)
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
        return frames, self.x.clone()


def _run(net: nn.Module, schedule: Any, *, n: int, sampler: str, steps: int | None,
         eta: float, seed: int, prediction: str, variance: str, batch_size: int | None,
         clip: Any, compile: bool, keep: Callable[[int], bool], static: bool = False,
         capture: bool = False, guide: Guide | None = None) -> list[list[torch.Tensor]]:
    """Sample ``n`` images; per batch, the x0_hat of the steps ``keep(i)`` and the final x.

    ``static``: run each batch through :class:`_StaticChain` (captured as a CUDA graph with
    ``capture``) instead of the core's ``sample_loop``; the same noise either way.
    ``guide(fn, lo, hi)`` gives batch ``lo .. hi - 1``'s model callable and loop (the
    core's ``sample_loop`` or a guided one with its arguments) from the plain ``fn``.
    """
    from ddpm_core import sample_loop

    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must be in [0, 1]; got {eta!r}")
    sched = chain_schedule(schedule, sampler, steps)
    fn = model_fn(net, compile=compile)
    cfg = net.config
    device = next(net.parameters()).device
    image = (cfg.in_channels, cfg.image_size, cfg.image_size)
    chains: dict[int, _StaticChain] = {}
    out: list[list[torch.Tensor]] = []
    for lo, hi in _batches(n, batch_size):
        streams = SampleStreams(seed, lo, hi, image, sched.num_timesteps, device)
        if static:
            with torch.inference_mode():
                chain = chains.get(hi - lo)
                if chain is None:
                    chain = chains[hi - lo] = _StaticChain(
                        fn, sched, (hi - lo, *image), device, sampler=sampler, eta=eta,
                        prediction=prediction, variance=variance, clip=clip, capture=capture)
                frames, x = chain.run(streams, keep)
            out.append([*frames, x])
            continue
        call, loop = (fn, sample_loop) if guide is None else guide(fn, lo, hi)
        frames, x = [], streams.x_T
        for st in loop(sched, call, streams.x_T, streams, sampler=sampler, eta=float(eta),
                       prediction=prediction, variance=variance, clip=clip):
            x = st.x
            if keep(st.step):
                frames.append(st.x0_hat)
        out.append([*frames, x])
    return out


def _nhwc(x: torch.Tensor) -> np.ndarray:
    return x.float().permute(0, 2, 3, 1).cpu().numpy()


def generate(net: nn.Module, schedule: Any, *, n: int, sampler: str = "ddpm",
             steps: int | None = None, eta: float = 0.0, seed: int = 0,
             prediction: str = "eps", variance: str = "fixed_small",
             batch_size: int | None = None, clip: Any = True, compile: bool = False,
             cuda_graph: bool = False, device: Any = None, guide: Guide | None = None
             ) -> np.ndarray:
    """Sample ``n`` images, float32 (n, H, W, C) in the model range [-1, 1].

    ``device`` is ignored (the network's device is used); it is accepted for symmetry.
    ``clip=True`` clips x0_hat to [-1, 1] at every step, as the paper's sampler does.
    Sample j's noise depends only on ``(seed, j)`` (:class:`SampleStreams`).
    ``cuda_graph=True`` (a CUDA network only; not with ``compile``) replays one captured
    denoising step K times: the same images up to float32 rounding of the coefficients,
    which it gathers from tables on the device.
    ``guide``: labels and guidance (``ddpm_core.backends.torch.guided.make_guide``); not with
    ``cuda_graph``.
    """
    if cuda_graph and guide is not None:
        raise ValueError("cuda_graph=True does not support guided sampling (--class/--classifier); "
                         "leave it off")
    if cuda_graph:
        dev = next(net.parameters()).device
        if dev.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the network on a CUDA device; it is on {dev}")
        if compile:
            raise ValueError("cuda_graph=True and compile=True exclude each other "
                             "(compile uses CUDA graphs of its own); choose one")
    parts = _run(net, schedule, n=n, sampler=sampler, steps=steps, eta=eta, seed=seed,
                 prediction=prediction, variance=variance, batch_size=batch_size, clip=clip,
                 compile=compile, keep=lambda i: False, static=bool(cuda_graph),
                 capture=bool(cuda_graph), guide=guide)
    return np.concatenate([_nhwc(p[-1]) for p in parts])


def progressive_frames(net: nn.Module, schedule: Any, *, n: int, frames: int, seed: int = 0,
                       sampler: str = "ddpm", steps: int | None = None, eta: float = 0.0,
                       prediction: str = "eps", variance: str = "fixed_small",
                       batch_size: int | None = None, clip: Any = True,
                       guide: Guide | None = None) -> np.ndarray:
    """x0_hat at ``frames`` evenly spaced steps (first step .. last), uint8 (F, n, H, W, C).

    The last frame is the final sample: :func:`generate`'s with the same arguments
    (``guide`` too: labels and guidance, ``ddpm_core.backends.torch.guided.make_guide``).
    The paper's Figure 6 shows these predictions sharpening from coarse layout to fine
    detail.
    """
    sched = chain_schedule(schedule, sampler, steps)
    K = sched.num_timesteps
    if isinstance(frames, bool) or not isinstance(frames, int) or not 1 <= frames <= K:
        raise ValueError(f"frames must be an integer in [1, {K}]; got {frames!r}")
    wanted = set(np.rint(np.linspace(K - 1, 0, frames)).astype(int).tolist())
    parts = _run(net, schedule, n=n, sampler=sampler, steps=steps, eta=eta, seed=seed,
                 prediction=prediction, variance=variance, batch_size=batch_size, clip=clip,
                 compile=False, keep=lambda i: i in wanted, guide=guide)
    stacked = [np.stack([to_uint8(_nhwc(f)) for f in p[:-1]]) for p in parts]
    return np.concatenate(stacked, axis=1)


def interpolate_images(net: nn.Module, schedule: Any, x0_a: np.ndarray, x0_b: np.ndarray, *,
                       lambdas: Sequence[float], t: int, seed: int = 0,
                       prediction: str = "eps", variance: str = "fixed_small",
                       clip: Any = True, guide: Guide | None = None) -> np.ndarray:
    """Encode two images to step ``t``, mix ``(1-lam) x_t^a + lam x_t^b``, decode (Figure 8).

    Parameters
    ----------
    x0_a, x0_b : float32 (H, W, C) in [-1, 1]
    lambdas : sequence of float in [0, 1]
    t : int in [0, T), 0-based
    guide : labels of the L = len(lambdas) mixtures and classifier-free guidance
        (``make_guide`` with L labels); ``guide(fn, 0, L)``'s model decodes, with the
        core's loop (no classifier guidance here)

    Returns
    -------
    uint8 (len(lambdas), H, W, C); the same noise is used for every lambda.
    """
    from ddpm_core import interpolate

    lam = np.asarray(lambdas, dtype=np.float32)
    if lam.ndim != 1 or lam.size == 0 or lam.min() < 0 or lam.max() > 1:
        raise ValueError(f"lambdas must be a non-empty list of numbers in [0, 1]; got {lambdas!r}")
    T = schedule.num_timesteps
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < T:
        raise ValueError(f"t must be an integer in [0, {T}); got {t!r}")
    device = next(net.parameters()).device
    L = lam.size

    def batch(x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, device=device).permute(2, 0, 1)[None].expand(L, -1, -1, -1)

    a, b = batch(x0_a), batch(x0_b)
    g = torch.Generator(device=device)
    g.manual_seed(step_seed(seed, 0, _STREAM_SAMPLE + 1))
    one = (1, *a.shape[1:])
    noise_a = torch.randn(one, generator=g, device=device).expand_as(a)
    noise_b = torch.randn(one, generator=g, device=device).expand_as(a)

    def noise_fn(i: int) -> torch.Tensor:
        return torch.randn(one, generator=g, device=device).expand_as(a)

    model = model_fn(net) if guide is None else guide(model_fn(net), 0, L)[0]
    x = interpolate(schedule, model, a, b, torch.as_tensor(lam, device=device), t,
                    noise_a, noise_b, noise_fn, prediction=prediction, variance=variance,
                    clip=clip)
    return to_uint8(_nhwc(x))
