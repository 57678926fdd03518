"""What the one sampling driver (``ddpm_core.app.sampling.driver``) and its backends exchange.

:class:`SampleBackend` is what a framework supplies (``ddpm_core.backends.torch.chain`` and
``ddpm_core.backends.jax.chain``): load a run's network, build a chain (the network call and
the core's :func:`ddpm_core.reverse_step`, compiled where the framework compiles), draw a
batch's seeded noise, run the chain, and move arrays between host and device. Everything
else (argument checks, the chain's schedule, batching, labels, seeds, outputs) is the
driver's. :class:`ChainSpec` is the chain, :class:`GuideSpec` what the model call does
with labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol

import numpy as np

from ddpm_core.samplers import DEFAULT_DDIM_EPS
from ddpm_core.schedules import Schedule

__all__ = ["ChainSpec", "GuideSpec", "SampleBackend"]


class ChainSpec(NamedTuple):
    """One reverse chain: its (respaced) schedule and the settings of every step."""

    schedule: Schedule  # the chain's own schedule (``chain_schedule``), K steps
    sampler: str = "ddpm"
    eta: float = 0.0
    prediction: str = "eps"
    variance: str = "fixed_small"
    clip: Any = True
    ddim_eps: str = DEFAULT_DDIM_EPS  # DDIM's eps after clipping x0_hat (ddpm_core.samplers.DDIM_EPS)

    def step_kwargs(self) -> dict[str, Any]:
        """The keywords of every step of this chain (``ddpm_core.reverse_step`` /
        ``sample_loop``), the same in every backend's chain."""
        return {"sampler": self.sampler, "eta": self.eta, "prediction": self.prediction,
                "variance": self.variance, "clip": self.clip, "ddim_eps": self.ddim_eps}


class GuideSpec(NamedTuple):
    """What a chain's model call does with the labels of a guided request.

    ``num_classes`` is the diffusion model's K (0 for an unconditional model, whose labels
    are the classifier's targets); ``scale`` and ``rescale`` are classifier-free guidance's
    s and phi (G1, G2; s = 1 is the conditional model itself, one pass); ``classifier`` is
    the backend's loaded classifier (or None) guiding with ``classifier_scale`` (G3, G4;
    scale 0 is the unguided chain, the classifier is not called).
    """

    num_classes: int
    scale: float = 1.0
    rescale: float = 0.0
    classifier: Any = None
    classifier_scale: float = 0.0

    @property
    def uses_classifier(self) -> bool:
        return self.classifier is not None and self.classifier_scale != 0.0


class SampleBackend(Protocol):
    """The framework half of sampling. Arrays called "device" are the framework's own.

    Randomness is the backend's, and per sample: sample j of a request (its index in the
    whole request) draws from a stream seeded by ``(seed, j)`` only, so a seed gives the
    same images whatever ``n`` and ``batch_size``.
    """

    name: str
    pads_batches: bool  # every batch has batch_size rows (one compiled shape)

    def load(self, run_dir: Any, info: dict[str, Any], *, use_ema: bool, device: str) -> Any:
        """The run's network (``ema.safetensors`` or ``model.safetensors``, checked)."""

    def load_classifier(self, run_dir: Any, config: Any, info: dict[str, Any], network: Any) -> Any:
        """A classifier run's network on ``network``'s device."""

    def chain(self, network: Any, spec: ChainSpec, guide: GuideSpec | None, *, compile: bool) -> Any:
        """A runnable chain of ``network`` (reused for every batch of a request); its
        ``spec`` attribute is ``spec``."""

    def draw(self, chain: Any, seed: int, lo: int, hi: int) -> tuple[Any, Any]:
        """``(x_T (hi - lo, C, H, W), the chain's step noise)`` of samples ``lo .. hi - 1``."""

    def interpolation_noise(self, chain: Any, seed: int, count: int) -> tuple[Any, Any, Any]:
        """``(noise_a, noise_b, step noise)`` of ``count`` mixtures that share one stream."""

    def run(self, chain: Any, x: Any, noise: Any, labels: np.ndarray | None, *, start: int | None,
            frame_steps: Sequence[int], on_step: Callable[[], None] | None = None) -> tuple[Any, Any]:
        """The chain from ``x`` at step ``start`` (default K - 1) to x_0: ``(x_0, frames)``,
        ``frames`` (len(frame_steps), B, C, H, W) the x0_hat of the kept steps. ``on_step``
        is called on the host once per chain step, as it finishes (progress)."""

    def asarray(self, chain_or_network: Any, x: np.ndarray) -> Any:
        """A host array on the network's device."""

    def numpy(self, x: Any) -> np.ndarray:
        """A device array on the host (its dtype kept)."""

    def float32_model(self, network: Any) -> Callable[[Any, Any], Any]:
        """``(x_t, t) -> output`` in float32 without mixed precision (the bound's model)."""

    def inference(self) -> AbstractContextManager[Any]:
        """The context the bound's arithmetic runs in (no autograd)."""
