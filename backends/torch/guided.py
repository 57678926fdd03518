"""Guided sampling with PyTorch: the ``guide`` of :func:`~ddpm_core.backends.torch.sampling.generate`.

The chain itself is the sampling driver's (``ddpm_core.app.sampling``) with this
backend's :class:`~ddpm_core.backends.torch.chain.TorchChain`: the plain conditional model
(s = 1), the classifier-free guided model (one batched call on ``[x, x]`` with
``[y, null]``, ``ddpm_core.guidance.cfg_output``) and classifier guidance, whose gradient
comes from autograd (``classifier.log_prob_grad``) at the original-chain step. The noise is
the unguided sampler's: guidance never changes which numbers are drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ddpm_core.app.sampling.driver import GuideRequest
from ddpm_core.app.sampling.protocol import GuideSpec
from ddpm_core.backends.torch.chain import conditional_model, load_classifier

__all__ = ["conditional_model", "load_classifier", "make_guide"]


def make_guide(net: torch.nn.Module, labels: np.ndarray | None, *, scale: float = 1.0, rescale: float = 0.0,
               classifier: Any = None, classifier_scale: float = 0.0) -> GuideRequest | None:
    """The ``guide`` argument of ``sampling.generate`` for one request.

    Parameters
    ----------
    net : the U-Net (``net.config.num_classes`` = K, 0 for an unconditional one)
    labels : int (N,) labels of the whole request, or None (unconditional, unguided)
    scale, rescale : classifier-free guidance s and phi (conditional models)
    classifier, classifier_scale : the guiding classifier and its scale; scale 0 (or no
        classifier) is the unguided loop itself, the classifier is not called
    """
    if labels is None:
        return None
    spec = GuideSpec(net.config.num_classes, scale, rescale, classifier, classifier_scale)
    return GuideRequest(np.asarray(labels, dtype=np.int64), spec)
