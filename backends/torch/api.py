"""The PyTorch backend's interface to the ``ddpm`` command.

The JAX backend (``ddpm_core.backends.jax.api``) has the same functions; both read and
write the run directory described in ``ddpm_core.app.rundir``.

Examples
--------
>>> from ddpm_core.app.options import TrainOptions
>>> summary = train(TrainOptions(preset="tiny", out="runs/tiny", steps=20))  # doctest: +SKIP
>>> images = sample("runs/tiny", n=16, sampler="ddim", steps=20)  # doctest: +SKIP
>>> images.shape, images.dtype  # doctest: +SKIP
((16, 8, 8, 1), dtype('uint8'))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ddpm_core.app.chains import interpolation_sources
from ddpm_core.app.images import to_uint8
from ddpm_core.app.integrity import check_finite, check_finite_samples, verify_file
from ddpm_core.app.labels import guided_request, interpolation_guidance
from ddpm_core.app.options import TrainOptions
from ddpm_core.app.rundir import RunPaths, make_schedule, read_run_json
from ddpm_core.backends.torch import checkpoint as ckpt
from ddpm_core.backends.torch import sampling
from ddpm_core.backends.torch.guided import load_classifier, make_guide
from ddpm_core.backends.torch.training import pick_device
from ddpm_core.backends.torch.training import train as _train
from ddpm_core.backends.torch.unet import UNet

__all__ = ["interpolate", "load_run", "param_count", "progressive", "sample", "train"]


def train(options: TrainOptions) -> dict[str, Any]:
    """Train or resume the run ``options.out``; returns a summary dict.

    Keys: ``run_dir``, ``steps``, ``steps_run``, ``seconds``, ``images_per_s``,
    ``final_loss`` (global), ``device``, ``world_size``, ``main`` (whether this process
    writes files and prints).
    """
    return _train(options)


def load_run(run_dir: str | os.PathLike, *, use_ema: bool = True, device: str = "auto"
             ) -> tuple[UNet, Any, dict[str, Any]]:
    """``(net, schedule, run_info)`` of a run directory; ``net`` is in eval mode."""
    from ddpm_core.models import UNetConfig

    info = read_run_json(run_dir)
    paths = RunPaths.of(run_dir)
    path = paths.ema if use_ema else paths.model
    weights = ckpt.load_weights(path)
    verify_file(info, path)
    check_finite(path, {k: v.float().numpy() for k, v in weights.items()})
    net = UNet(UNetConfig.from_dict(info["unet"]))
    try:
        net.load_state_dict(weights)
    except RuntimeError as e:
        raise ValueError(f"{paths.ema if use_ema else paths.model}: weights do not match the "
                         f"U-Net in {paths.run_json} ({e})") from e
    net.to(pick_device(device)).eval()
    return net, make_schedule(info["schedule"]), info


def _request_guide(net: UNet, info: dict[str, Any], n: int, classes: Any, *,
                   guidance: float | None, guidance_rescale: float | None,
                   classifier: str | os.PathLike | None, classifier_scale: float | None
                   ) -> tuple[Any, np.ndarray | None]:
    """``(guide, labels)`` of a checked request: ``sampling.generate``'s ``guide`` (None
    when unguided) and the labels, int64 (N,) or None."""
    g, clf_config, clf_info = guided_request(
        info, n, classes, guidance=guidance, guidance_rescale=guidance_rescale,
        classifier=classifier, classifier_scale=classifier_scale)
    clf = None if classifier is None else load_classifier(
        classifier, clf_config, clf_info, next(net.parameters()).device)
    guide = make_guide(net, g.labels, scale=g.scale, rescale=g.rescale,
                       variance=info["variance"], classifier=clf,
                       classifier_scale=g.classifier_scale)
    return guide, g.labels


def sample(run_dir: str | os.PathLike, *, n: int, sampler: str = "ddpm",
           steps: int | None = None, eta: float = 0.0, seed: int = 0,
           batch_size: int | None = None, use_ema: bool = True, device: str = "auto",
           compile: bool = False, classes: Any = None, guidance: float | None = None,
           guidance_rescale: float | None = None, classifier: str | os.PathLike | None = None,
           classifier_scale: float | None = None) -> np.ndarray:
    """``n`` samples of the run's (EMA) model, uint8 (N, H, W, C).

    ``sampler="ddpm"`` runs Algorithm 2 on the full chain (or ``steps`` respaced steps);
    ``"ddim"`` runs DDIM on ``steps`` steps (default 50) with ``eta``.

    Guidance (``ddpm_core.app.labels``): ``classes`` is an int, a list of ``n`` ints or
    ``"all"`` (``n`` per class, class by class: N = n K), required by a class-conditional
    run; ``guidance`` is the classifier-free scale s (default 1: the conditional model,
    0: the unconditional one) and ``guidance_rescale`` Lin et al.'s phi (default 0);
    ``classifier`` a classifier run directory guiding with ``classifier_scale``
    (default 1; 0 is the unguided sampler). Otherwise N = n.
    """
    net, schedule, info = load_run(run_dir, use_ema=use_ema, device=device)
    guide, labels = _request_guide(
        net, info, n, classes, guidance=guidance, guidance_rescale=guidance_rescale,
        classifier=classifier, classifier_scale=classifier_scale)
    x = sampling.generate(net, schedule, n=n if labels is None else len(labels),
                          sampler=sampler, steps=steps, eta=eta,
                          seed=seed, prediction=info["prediction"],
                          variance=info["variance"], batch_size=batch_size, compile=compile,
                          clip=info.get("clip", True), guide=guide)
    check_finite_samples(x.float().cpu().numpy() if hasattr(x, "cpu") else x)
    return to_uint8(x)


def progressive(run_dir: str | os.PathLike, *, n: int, seed: int = 0, frames: int = 10,
                sampler: str = "ddpm", steps: int | None = None, use_ema: bool = True,
                device: str = "auto", classes: Any = None, guidance: float | None = None,
                guidance_rescale: float | None = None,
                classifier: str | os.PathLike | None = None,
                classifier_scale: float | None = None) -> np.ndarray:
    """x0_hat at ``frames`` evenly spaced steps, uint8 (frames, N, H, W, C) (Figure 6).

    The guidance keywords are :func:`sample`'s (N = n, or n K with ``classes="all"``), and
    the chains are the ones :func:`sample` runs with the same arguments and seed: the last
    frame is its output, bit for bit.
    """
    net, schedule, info = load_run(run_dir, use_ema=use_ema, device=device)
    guide, labels = _request_guide(
        net, info, n, classes, guidance=guidance, guidance_rescale=guidance_rescale,
        classifier=classifier, classifier_scale=classifier_scale)
    return sampling.progressive_frames(net, schedule, n=n if labels is None else len(labels),
                                       frames=frames, seed=seed, sampler=sampler, steps=steps,
                                       prediction=info["prediction"],
                                       variance=info["variance"], clip=info.get("clip", True),
                                       guide=guide)


def interpolate(run_dir: str | os.PathLike, *, seed: int = 0, t: int = 500,
                lambdas: Sequence[float] = tuple(np.linspace(0, 1, 9)),
                pair: Sequence[int] = (0, 1), use_ema: bool = True,
                device: str = "auto", classes: int | None = None,
                guidance: float | None = None, guidance_rescale: float | None = None
                ) -> np.ndarray:
    """Interpolate two held-out images through x_t (Figure 8), uint8 (len(lambdas), H, W, C).

    A class-conditional run decodes every mixture with one label: ``classes`` (an int in
    [0, K)), or without it the null label K if the run was trained with label dropout
    (``ddpm_core.app.labels.interpolation_guidance``); ``guidance`` and
    ``guidance_rescale`` are :func:`sample`'s. There is no classifier guidance here.
    """
    from ddpm_core.data import to_model_range

    net, schedule, info = load_run(run_dir, use_ema=use_ema, device=device)
    g = interpolation_guidance(info, classes, guidance=guidance,
                               guidance_rescale=guidance_rescale)
    src = to_model_range(interpolation_sources(info, pair))
    guide = None if g.labels is None else make_guide(
        net, np.repeat(g.labels, len(lambdas)), scale=g.scale, rescale=g.rescale,
        variance=info["variance"])
    return sampling.interpolate_images(net, schedule, src[0], src[1], lambdas=lambdas, t=t,
                                       seed=seed, prediction=info["prediction"],
                                       variance=info["variance"], clip=info.get("clip", True),
                                       guide=guide)


def param_count(preset_name: str) -> int:
    """Trainable parameters of the preset's PyTorch U-Net (built on the meta device)."""
    from ddpm_core.models import get_preset

    config = get_preset(preset_name).unet
    with torch.device("meta"):
        net = UNet(config)
    return sum(p.numel() for p in net.parameters() if p.requires_grad)
