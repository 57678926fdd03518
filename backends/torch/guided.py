"""Guided sampling with PyTorch: class labels, classifier-free and classifier guidance.

:func:`make_guide` gives ``sampling.generate`` the model callable and the loop of each
batch: the plain conditional model (s = 1), the classifier-free guided model (one batched
call on ``[x, x]`` with ``[y, null]``, ``ddpm_core.backends.guided.cfg_output``), and
:func:`classifier_loop` for classifier guidance, whose gradient comes from autograd
(``classifier.log_prob_grad``) at the original-chain step ``schedule.timesteps[i]``.
The noise is the unguided sampler's: guidance never changes which numbers are drawn.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from ddpm_core import sample_loop
from ddpm_core.app.integrity import check_finite, verify_file
from ddpm_core.app.rundir import RunPaths
from ddpm_core.backends.guided import cfg_output, classifier_guided_step
from ddpm_core.backends.torch import checkpoint as ckpt
from ddpm_core.backends.torch.classifier import Classifier, log_prob_grad
from ddpm_core.backends.torch.sampling import Guide
from ddpm_core.samplers import SampleStep
from ddpm_core.schedules import Schedule

__all__ = ["classifier_loop", "conditional_model", "load_classifier", "make_guide"]


def conditional_model(fn: Callable[..., Any], y: torch.Tensor, num_classes: int, scale: float,
                      rescale: float = 0.0, variance: str = "fixed_small"
                      ) -> Callable[[Any, Any], Any]:
    """``(x, t) -> output`` of a class-conditional model for labels ``y`` (B,).

    s = 1 is the conditional model itself (one pass, exactly the unguided sampler's call);
    otherwise the guided output of one batched call (G1, G2). ``fn(x, t, y)`` is
    ``sampling.model_fn(net)``; an unconditional model (``num_classes = 0``) returns ``fn``.
    """
    if not num_classes:
        return fn
    if scale == 1.0:  # (G1) at s = 1 is the conditional output whatever the rescale
        return lambda x, t: fn(x, t, y)
    return lambda x, t: cfg_output(fn, x, t, y, num_classes, scale, rescale=rescale,
                                   variance=variance)


def classifier_loop(schedule: Schedule, model: Callable[[Any, Any], Any], x_T: torch.Tensor,
                    noise_fn: Callable[[int], Any] | None, *,
                    grad_fn: Callable[[Any, Any], Any], scale: float, sampler: str = "ddpm",
                    eta: float = 0.0, prediction: str = "eps", variance: str = "fixed_small",
                    clip: Any = None) -> Iterator[SampleStep]:
    """``ddpm_core.sample_loop`` with classifier guidance on every step.

    ``grad_fn(x, t)`` is the classifier's gradient at the ORIGINAL-chain step ``t`` =
    ``schedule.timesteps[i]`` (a (B,) tensor, the model's ``t``); each step is
    ``ddpm_core.backends.guided.classifier_guided_step`` and ``noise_fn(i)`` is asked for
    the same steps as in the unguided loop.
    """
    x = x_T
    needs_noise = sampler == "ddpm" or eta > 0
    zeros = torch.zeros_like(x_T)
    for i in range(schedule.num_timesteps - 1, -1, -1):
        t = torch.full((x.shape[0],), int(schedule.timesteps[i]), dtype=torch.int64,
                       device=x.device)
        out = model(x, t)
        noise = noise_fn(i) if needs_noise and i > 0 and noise_fn is not None else zeros
        step = classifier_guided_step(schedule, out, x, i, noise, grad_fn(x, t), scale=scale,
                                      sampler=sampler, eta=eta, prediction=prediction,
                                      variance=variance, clip=clip)
        x = step.x_prev
        yield SampleStep(i, x, step.x0_hat)


def make_guide(net: torch.nn.Module, labels: np.ndarray | None, *, scale: float = 1.0,
               rescale: float = 0.0, variance: str = "fixed_small",
               classifier: Classifier | None = None, classifier_scale: float = 0.0
               ) -> Guide | None:
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
    y_all = torch.as_tensor(np.asarray(labels, dtype=np.int64), device=next(net.parameters()).device)
    k = net.config.num_classes
    use_classifier = classifier is not None and classifier_scale != 0.0
    if use_classifier:
        classifier.eval()

    def guide(fn: Callable[..., Any], lo: int, hi: int) -> tuple[Callable[..., Any], Any]:
        y = y_all[lo:hi]
        call = conditional_model(fn, y, k, scale, rescale, variance)
        if not use_classifier:
            return call, sample_loop
        grad = functools.partial(_classifier_grad, classifier, y)
        return call, functools.partial(classifier_loop, grad_fn=grad, scale=classifier_scale)

    return guide


def _classifier_grad(classifier: Classifier, y: torch.Tensor, x: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
    return log_prob_grad(classifier, x.float(), t, y)


def load_classifier(run_dir: str | os.PathLike, config: Any, info: dict[str, Any],
                    device: torch.device) -> Classifier:
    """The classifier of a classifier run (its ``model.safetensors``), in eval mode."""
    path = RunPaths.of(run_dir).model
    weights = ckpt.load_weights(path)
    verify_file(info, path)
    check_finite(path, {k: v.float().numpy() for k, v in weights.items()})
    net = Classifier(config)
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the classifier in "
                         f"{RunPaths.of(run_dir).run_json} ({' '.join(str(e).split())})") from e
    return net.to(device).eval()
