"""The noise of PyTorch sampling: one generator per sample, seeded from ``(seed, j)``.

Sample ``j`` (its index in the whole request, not in its batch) owns one ``torch.Generator``
on the network's device, seeded once from ``(seed, j)`` (:func:`sample_seeds`); it draws
that sample's x_T and then the noise of every step (:class:`SampleStreams`). So a seed gives
the same images whatever ``n`` and ``batch_size``: ``n=4`` are the first 4 images of
``n=8``, as in the JAX backend (whose numbers differ: it draws from JAX keys).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ddpm_core.app.training.seeding import step_seed

__all__ = ["SampleStreams", "host_sync_errors", "interpolation_streams", "sample_seeds"]

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


def interpolation_streams(seed: int, count: int, image: Sequence[int], device: torch.device
                          ) -> tuple[torch.Tensor, torch.Tensor, Callable[[int], torch.Tensor]]:
    """``(noise_a, noise_b, noise_fn)`` of an interpolation's ``count`` mixtures (Figure 8).

    One generator seeded with ``step_seed(seed, 0, 12)`` draws one image each for the
    encoding noise of both sources, then one per chain step, in the order the steps run;
    every mixture shares them (each draw is expanded to (count, C, H, W)).
    """
    g = torch.Generator(device=device)
    g.manual_seed(step_seed(seed, 0, _STREAM_SAMPLE + 1))
    one = (1, *(int(s) for s in image))

    def draw(i: int = 0) -> torch.Tensor:
        return torch.randn(one, generator=g, device=device).expand(count, -1, -1, -1)

    noise_a = draw()
    noise_b = draw()
    return noise_a, noise_b, draw
