"""The JAX half of the sampling driver: :class:`JaxSampling` (the
``ddpm_core.app.sampling.protocol.SampleBackend`` of this backend).

A chain is a :class:`~ddpm_core.backends.jax.sampling.Sampler` (the whole reverse chain as
one compiled ``lax.scan`` of the U-Net and the core's ``reverse_step``) with the parameters
it runs on (:class:`JaxChain`). Guided chains take labels as a traced argument and the
parameters ``{"unet": ..., "classifier": ...}`` (``ddpm_core.backends.jax.guided``). Sample
j's noise comes from the keys of ``fold_in(key(seed), j)`` (``sampling.sample_keys``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ddpm_core.app.run.integrity import check_finite, verify_file
from ddpm_core.app.run.rundir import RunPaths
from ddpm_core.app.sampling.protocol import ChainSpec, GuideSpec
from ddpm_core.backends.jax import checkpoint as ckpt
from ddpm_core.backends.jax.devices import compute_dtype, pick_devices
from ddpm_core.backends.jax.guided import classifier_grad, guided_model, load_classifier
from ddpm_core.backends.jax.sampling import Sampler, _normal, sample_keys
from ddpm_core.backends.jax.unet import UNet

__all__ = ["BACKEND", "JaxChain", "JaxNetwork", "JaxSampling"]


class JaxNetwork(NamedTuple):
    """A run's network: the Flax module and its parameters (on the run's device)."""

    module: UNet
    params: Any


class JaxChain(NamedTuple):
    """A :class:`Sampler` and the parameters it runs on; ``loop`` runs a Python loop over
    a jitted step instead of the scan (the same numbers; for benchmarks)."""

    sampler: Sampler
    params: Any
    loop: bool = False

    @property
    def spec(self) -> ChainSpec:
        return self.sampler.chain


def _device(params: Any) -> Any:
    """The device of the parameters (None, the default device, for host arrays)."""
    leaf = jax.tree.leaves(params)[0]
    return leaf.devices().pop() if isinstance(leaf, jax.Array) else None


class JaxSampling:
    """The JAX :class:`~ddpm_core.app.sampling.protocol.SampleBackend`."""

    name = "jax"
    pads_batches = True

    def load(self, run_dir: str | os.PathLike, info: dict[str, Any], *, use_ema: bool, device: str) -> JaxNetwork:
        from ddpm_core.models import UNetConfig

        paths = RunPaths.of(run_dir)
        config = UNetConfig.from_dict(info["unet"])
        devices = pick_devices(device)
        path = paths.ema if use_ema else paths.model
        params = ckpt.load_weights(path, config)
        verify_file(info, path)
        check_finite(path, ckpt.flatten_tree(params, ""))
        return JaxNetwork(UNet(config=config, dtype=compute_dtype(devices)), jax.device_put(params, devices[0]))

    def load_classifier(self, run_dir: Any, config: Any, info: dict[str, Any], network: JaxNetwork) -> Any:
        return load_classifier(run_dir, config, info, _device(network.params))

    def chain(self, network: JaxNetwork, spec: ChainSpec, guide: GuideSpec | None, *, compile: bool) -> JaxChain:
        net, params = network
        c = net.config
        shape = (c.in_channels, c.image_size, c.image_size)
        if guide is None:
            return JaxChain(Sampler(lambda p, x, t: net.apply({"params": p}, x, t), spec, shape), params)
        clf, clf_params = (None, None) if guide.classifier is None else guide.classifier
        use = guide.uses_classifier
        sampler = Sampler(guided_model(net, guide.scale, guide.rescale, spec.variance), spec, shape,
                          classifier=classifier_grad(clf) if use else None,
                          classifier_scale=guide.classifier_scale if use else 0.0)
        return JaxChain(sampler, {"unet": params, "classifier": clf_params})

    def draw(self, chain: JaxChain, seed: int, lo: int, hi: int) -> tuple[jax.Array, jax.Array]:
        keys = sample_keys(seed, np.arange(lo, hi), chain.sampler.num_steps)
        return _normal(keys[:, 0], chain.sampler.shape), keys[:, 1:]

    def interpolation_noise(self, chain: JaxChain, seed: int, count: int) -> tuple[Any, Any, Any]:
        s = chain.sampler
        keys = sample_keys(seed, np.zeros(1), s.num_steps + 1)  # one sample's keys, shared by all mixtures
        enc = _normal(keys[:, :2].reshape(-1), s.shape)  # noise_a, noise_b
        noise_a, noise_b = (jnp.broadcast_to(e, (count, *s.shape)) for e in enc)
        return noise_a, noise_b, jnp.broadcast_to(keys[:, 2:], (count, s.num_steps))

    def run(self, chain: JaxChain, x: Any, noise: Any, labels: np.ndarray | None, *, start: int | None,
            frame_steps: Sequence[int], on_step: Callable[[], None] | None = None
            ) -> tuple[jax.Array, jax.Array | None]:
        if chain.loop:
            if frame_steps:
                raise ValueError("loop=True keeps no frames; leave frame_steps empty")
            return chain.sampler.run_loop(chain.params, x, noise, start=start, labels=labels), None
        return chain.sampler.run(chain.params, x, noise, start=start, frame_steps=frame_steps, labels=labels,
                                 on_step=on_step)

    def asarray(self, chain_or_network: Any, x: np.ndarray) -> jax.Array:
        return jax.device_put(x, _device(chain_or_network.params))

    def numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def float32_model(self, network: JaxNetwork) -> Callable[[Any, Any], Any]:
        net32 = UNet(config=network.module.config, dtype=jnp.float32)
        apply = jax.jit(lambda p, x, t: net32.apply({"params": p}, x, t).astype(jnp.float32))
        return lambda x, t: apply(network.params, x, jnp.asarray(t, jnp.int32))

    def inference(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()


BACKEND = JaxSampling()
