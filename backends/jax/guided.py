"""Guided sampling with JAX: class labels, classifier-free and classifier guidance.

The guided chain is still the one compiled ``lax.scan`` of :class:`~.sampling.Sampler`
(built by ``ddpm_core.backends.jax.chain.JaxSampling.chain``):
labels are a traced argument of the scan, the classifier-free guided model output is one
batched network call on ``[x, x]`` with ``[y, null]``
(``ddpm_core.guidance.cfg_output``), and the classifier's gradient is ``jax.grad``
(``classifier.log_prob_grad``) inside the scan body, at the original-chain step. The
parameters of a guided chain are ``{"unet": ..., "classifier": ...}``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from ddpm_core.app.run.integrity import check_finite, verify_file
from ddpm_core.app.run.rundir import RunPaths
from ddpm_core.backends.jax import checkpoint as ckpt
from ddpm_core.backends.jax.classifier import Classifier, build_classifier, log_prob_grad
from ddpm_core.backends.jax.unet import UNet
from ddpm_core.guidance import cfg_output

__all__ = ["classifier_grad", "guided_model", "load_classifier"]


def guided_model(net: UNet, scale: float = 1.0, rescale: float = 0.0,
                 variance: str = "fixed_small") -> Callable[..., Any]:
    """``(params, x, t, y) -> float32 output`` for ``Sampler`` with labels.

    ``params["unet"]`` holds the U-Net's parameters. A class-conditional ``net``
    (K = ``net.config.num_classes``) at s = 1 is the conditional model itself (one pass);
    other s give the guided output of one batched call (G1, G2). An unconditional ``net``
    ignores ``y`` (its labels are the classifier's targets).
    """
    k = net.config.num_classes

    def call(params: Any, x: jax.Array, t: jax.Array, y: jax.Array | None) -> jax.Array:
        return net.apply({"params": params["unet"]}, x, t, y if k else None).astype(jnp.float32)

    if not k or scale == 1.0:  # (G1) at s = 1 is the conditional output whatever the rescale
        return call
    return lambda params, x, t, y: cfg_output(
        lambda xx, tt, yy: call(params, xx, tt, yy), x, t, y, k, scale, rescale=rescale,
        variance=variance)


def classifier_grad(classifier: Classifier) -> Callable[..., jax.Array]:
    """``(params, x, t, y) -> grad_x log p(y | x, t)`` with ``params["classifier"]``."""
    return lambda params, x, t, y: log_prob_grad(classifier, params["classifier"],
                                                 x.astype(jnp.float32), t, y)


def load_classifier(run_dir: str | os.PathLike, config: Any, info: dict[str, Any],
                    device: Any = None) -> tuple[Classifier, Any]:
    """``(classifier module, params)`` of a classifier run (its ``model.safetensors``)."""
    path = RunPaths.of(run_dir).model
    params = ckpt.load_weights(path, config)
    verify_file(info, path)
    check_finite(path, ckpt.flatten_tree(params, ""))
    return build_classifier(config), jax.device_put(params, device)
