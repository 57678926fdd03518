"""The noise-aware classifier of Dhariwal & Nichol 2021 in Flax, and its gradient.

The same network as :mod:`ddpm_core.backends.torch.classifier`: the U-Net's encoder half
(:class:`~ddpm_core.backends.jax.unet.Encoder`), then GroupNorm, SiLU, global average pool
and a zero-initialised Dense layer to K logits. Its parameter tree converts to and from the
canonical (PyTorch ``state_dict``) layout with :mod:`ddpm_core.interop.convert`, given the
:class:`~ddpm_core.models.ClassifierConfig`.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> net = build_classifier("tiny", 10)
>>> params = init_params(net, jax.random.key(0))
>>> x, t, y = jnp.zeros((2, 1, 8, 8)), jnp.array([3, 500]), jnp.array([7, 0])
>>> net.apply({"params": params}, x, t).shape, log_prob_grad(net, params, x, t, y).shape
((2, 10), (2, 1, 8, 8))
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ddpm_core.backends.jax.unet import _ZEROS, Encoder, _per_sample, check_labels, init_params
from ddpm_core.models import ClassifierConfig, Preset, UNetConfig, classifier_config

__all__ = ["Classifier", "build_classifier", "init_params", "log_prob_grad"]


class Classifier(Encoder):
    """p(y | x_t, t): ``apply({"params": p}, x, t, train=False) -> logits`` (B, K).

    Attributes
    ----------
    config : UNetConfig
        The backbone (``ClassifierConfig.unet``).
    num_classes : int
        K, the number of logits.
    dtype : jax dtype
        Compute dtype (parameters stay float32).

    Notes
    -----
    ``x`` float (B, C, S, S) NCHW like the U-Net's input; ``t`` (B,) integer timestep
    indices of the original chain (a scalar broadcasts): on a respaced sampling chain,
    pass ``schedule.timesteps[i]``, the same ``t`` the diffusion model is given.
    """

    num_classes: int = 2

    @property
    def classifier_config(self) -> ClassifierConfig:
        """The :class:`~ddpm_core.models.ClassifierConfig` (what ``convert`` takes)."""
        return ClassifierConfig(self.config, self.num_classes)

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array | int, train: bool = False) -> jax.Array:
        t = self._check_inputs(x, t)
        h, _ = self.encode(x, self.embed(t, None), train)
        h = jnp.mean(nn.silu(self.norm("norm_out")(h)), axis=(1, 2))
        return nn.Dense(self.num_classes, kernel_init=_ZEROS, bias_init=_ZEROS, dtype=self.dtype,
                        name="head")(h)


def build_classifier(preset_or_config: ClassifierConfig | Preset | UNetConfig | str,
                     num_classes: int | None = None, dtype: Any = jnp.float32) -> Classifier:
    """A :class:`Classifier` module (initialise it with :func:`init_params`).

    ``preset_or_config`` and ``num_classes`` are :func:`ddpm_core.models.classifier_config`'s
    (a ClassifierConfig, or the preset / U-Net whose encoder it uses and K); ``dtype`` is
    the compute dtype (parameters are float32).
    """
    config = classifier_config(preset_or_config, num_classes)
    return Classifier(config=config.unet, num_classes=config.num_classes, dtype=dtype)


def log_prob_grad(model: Classifier, params: Any, x: jax.Array, t: jax.Array | int,
                  y: jax.Array | int) -> jax.Array:
    r"""The batched gradient :math:`\nabla_{x} \log p_\phi(y_i \mid x_i, t_i)` per sample.

    ``jax.grad`` of the summed log-probabilities: samples do not interact in the network
    (GroupNorm normalises each sample on its own), so the gradient of the sum with respect
    to sample i is that sample's own gradient. A pure function: call it inside a jitted
    sampling chain (labels are range-checked only when concrete; under ``jit`` a label
    outside [0, K) gives NaN).

    Parameters
    ----------
    model, params : the classifier and its ``"params"`` collection
    x : (B, C, S, S) float, the noisy sample x_t
    t : int or (B,) int, original-chain timestep indices (``schedule.timesteps[i]``)
    y : int or (B,) int, target classes in [0, K)

    Returns
    -------
    (B, C, S, S) array in ``x``'s dtype: give it to ``ddpm_core.classifier_guidance_mean``
    or ``ddpm_core.classifier_guidance_eps``.
    """
    k = model.num_classes
    check_labels(y, k - 1)
    y = _per_sample("y", y, x)

    def total_log_prob(x_in: jax.Array) -> jax.Array:
        logits = model.apply({"params": params}, x_in, t).astype(jnp.float32)
        log_p = jax.nn.log_softmax(logits, axis=-1)
        return jnp.sum(jnp.take_along_axis(log_p, jnp.clip(y, 0, k - 1)[:, None], axis=1))

    valid = ((y >= 0) & (y < k)).reshape((-1,) + (1,) * (x.ndim - 1))
    return jnp.where(valid, jax.grad(total_log_prob)(x), jnp.nan)
