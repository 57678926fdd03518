"""The noise-aware classifier of Dhariwal & Nichol 2021 in PyTorch, and its gradient.

The encoder half of the paper's U-Net (:class:`~ddpm_core.backends.torch.unet.Encoder`:
time embedding, time-conditioned residual blocks, downsampling, attention where the preset
has it, the middle block), then a pooling head: GroupNorm, SiLU, global average pool and a
Dense layer to K logits (zero-initialised, so an untrained classifier is uniform, as the
zero-initialised head of guided-diffusion's classifier). The ``state_dict`` names and
shapes are :func:`ddpm_core.models.parameter_shapes` of the
:class:`~ddpm_core.models.ClassifierConfig` (the canonical layout); the Flax classifier
(:mod:`ddpm_core.backends.jax.classifier`) holds the same parameters.

Examples
--------
>>> import torch
>>> net = build_classifier("tiny", 10).eval()
>>> x, t, y = torch.zeros(2, 1, 8, 8), torch.tensor([3, 500]), torch.tensor([7, 0])
>>> net(x, t).shape, log_prob_grad(net, x, t, y).shape
(torch.Size([2, 10]), torch.Size([2, 1, 8, 8]))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ddpm_core.backends.torch.unet import Encoder, _check_label_range, _init, _norm, _per_sample
from ddpm_core.models import ClassifierConfig, Preset, UNetConfig, classifier_config, unet_plan

__all__ = ["Classifier", "build_classifier", "log_prob_grad"]


class Classifier(Encoder):
    """p(y | x_t, t): ``forward(x, t) -> logits`` (B, K).

    ``x`` float (B, C, S, S) like the U-Net's input; ``t`` (B,) integer timestep indices of
    the original chain (a scalar broadcasts): on a respaced sampling chain, pass
    ``schedule.timesteps[i]``, the same ``t`` the diffusion model is given.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        if not isinstance(config, ClassifierConfig):
            raise TypeError(f"config must be a ClassifierConfig, got {type(config).__name__}")
        super().__init__(config.unet)
        self.config = config
        mid_ch = unet_plan(config.unet).mid_ch
        self.norm_out = _norm(config.unet, mid_ch)
        self.head = nn.Linear(mid_ch, config.num_classes)
        _init(self.head, True)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        t = self._check_inputs(x, t)
        h, _ = self.encode(x, self.embed(t, None))
        return self.head(F.silu(self.norm_out(h)).mean(dim=(2, 3)))


def build_classifier(preset_or_config: ClassifierConfig | Preset | UNetConfig | str,
                     num_classes: int | None = None) -> Classifier:
    """A freshly initialised :class:`Classifier`.

    Parameters
    ----------
    preset_or_config : ClassifierConfig, or a Preset, preset name or UNetConfig
        The classifier's config, or the U-Net whose encoder it uses
        (:func:`ddpm_core.models.classifier_config`).
    num_classes : int
        K; required with a preset or U-Net config, not allowed with a ClassifierConfig.
    """
    return Classifier(classifier_config(preset_or_config, num_classes))


def log_prob_grad(classifier: Classifier, x: torch.Tensor, t: torch.Tensor | int,
                  y: torch.Tensor | int) -> torch.Tensor:
    r"""The batched gradient :math:`\nabla_{x} \log p_\phi(y_i \mid x_i, t_i)` per sample.

    One backward pass of the summed log-probabilities: samples do not interact in the
    network (GroupNorm normalises each sample on its own), so the gradient of the sum with
    respect to sample i is that sample's own gradient. Works inside ``torch.no_grad()``
    and ``torch.inference_mode()`` (the sampler's context); the parameters' ``.grad`` is
    left alone. Put the classifier in ``eval()`` mode first when it has dropout.

    Parameters
    ----------
    classifier : Classifier
    x : (B, C, S, S) float
        The noisy sample x_t.
    t : int or (B,) int
        Original-chain timestep indices (``schedule.timesteps[i]`` on a respaced chain).
    y : int or (B,) int
        Target classes in [0, K).

    Returns
    -------
    (B, C, S, S) tensor in ``x``'s dtype: give it to
    ``ddpm_core.classifier_guidance_mean`` or ``ddpm_core.classifier_guidance_eps``.
    """
    k = classifier.config.num_classes
    y = _per_sample("y", y, x)
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
    _check_label_range(y, k - 1)
    with torch.inference_mode(False), torch.enable_grad():
        x_in = x.detach().clone().requires_grad_(True)
        log_p = torch.log_softmax(classifier(x_in, t).float(), dim=-1)
        (grad,) = torch.autograd.grad(log_p.gather(1, y[:, None].long()).sum(), x_in)
    return grad
