"""The JAX backend's interface to the ``ddpm`` command.

The same functions, arguments and results as ``ddpm_core.backends.torch.api``; both read
and write the run directory described in ``ddpm_core.app.rundir``. Sampling only needs
``run.json`` and ``ema.safetensors`` (canonical layout), so it works on a run trained by
either backend.

Examples
--------
>>> from ddpm_core.app.options import TrainOptions
>>> opts = TrainOptions(preset="tiny", out="runs/tiny", backend="jax", steps=20)
>>> summary = train(opts)  # doctest: +SKIP
>>> images = sample("runs/tiny", n=16, sampler="ddim", steps=20)  # doctest: +SKIP
>>> images.shape, images.dtype  # doctest: +SKIP
((16, 8, 8, 1), dtype('uint8'))
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from ddpm_core.app.chains import interpolation_sources
from ddpm_core.app.integrity import check_finite, check_finite_samples, verify_file
from ddpm_core.app.labels import Guidance, guided_request, interpolation_guidance
from ddpm_core.app.options import TrainOptions
from ddpm_core.app.rundir import RunPaths, make_schedule, read_run_json
from ddpm_core.backends.jax import checkpoint as ckpt
from ddpm_core.backends.jax.guided import classifier_grad, guided_model, load_classifier
from ddpm_core.backends.jax.sampling import (
    Chain,
    Sampler,
    chain_schedule,
    progressive_steps,
    to_images,
)
from ddpm_core.backends.jax.training import compute_dtype, pick_devices
from ddpm_core.backends.jax.training import train as _train
from ddpm_core.backends.jax.unet import UNet, param_shapes

__all__ = ["interpolate", "load_run", "param_count", "progressive", "sample", "train"]


def train(options: TrainOptions) -> dict[str, Any]:
    """Train or resume the run ``options.out`` with JAX; returns a summary dict.

    Keys: ``run_dir``, ``steps``, ``steps_run``, ``seconds``, ``images_per_s``,
    ``final_loss`` (global), ``device``, ``world_size``, ``main`` (whether this process
    writes files and prints).
    """
    return _train(options)


def load_run(run_dir: str | os.PathLike, *, use_ema: bool = True, device: str = "auto"
             ) -> tuple[UNet, Any, Any, dict[str, Any]]:
    """``(net, params, schedule, run_info)`` of a run directory (either backend's)."""
    from ddpm_core.models import UNetConfig

    info = read_run_json(run_dir)
    paths = RunPaths.of(run_dir)
    config = UNetConfig.from_dict(info["unet"])
    devices = pick_devices(device)
    path = paths.ema if use_ema else paths.model
    params = ckpt.load_weights(path, config)
    verify_file(info, path)
    check_finite(path, ckpt.flatten_tree(params, ""))
    params = jax.device_put(params, devices[0])
    return UNet(config=config, dtype=compute_dtype(devices)), params, \
        make_schedule(info["schedule"]), info


def _sampler(net: UNet, schedule: Any, info: dict[str, Any], sampler: str,
             steps: int | None, eta: float, g: Guidance | None = None,
             classifier: Any = None) -> Sampler:
    """The run's sampler; with guidance ``g`` its model takes labels and params
    ``{"unet": ..., "classifier": ...}`` (``ddpm_core.backends.jax.guided``)."""
    use_clf = g is not None and classifier is not None and g.classifier_scale != 0.0
    chain = Chain(chain_schedule(schedule, sampler, steps), sampler, eta=float(eta),
                  prediction=info["prediction"], variance=info["variance"],
                  clip=info.get("clip", True),
                  classifier=classifier_grad(classifier) if use_clf else None,
                  classifier_scale=g.classifier_scale if use_clf else 0.0)
    c = net.config
    model = (guided_model(net, g.scale, g.rescale, info["variance"]) if g is not None
             else lambda p, x, t: net.apply({"params": p}, x, t))
    return Sampler(model, chain, (c.in_channels, c.image_size, c.image_size))


def _request_sampler(net: UNet, params: Any, schedule: Any, info: dict[str, Any], n: int,
                     sampler: str, steps: int | None, eta: float, device: str, classes: Any,
                     **guidance: Any) -> tuple[Sampler, Any, np.ndarray | None]:
    """``(sampler, params, labels)`` of a checked request; ``guidance``: :func:`sample`'s
    ``guidance``, ``guidance_rescale``, ``classifier`` and ``classifier_scale``.

    Unguided: the plain sampler, the U-Net's params and no labels. Guided: params
    ``{"unet": ..., "classifier": ...}`` and labels int64 (N,).
    """
    g, clf_config, clf_info = guided_request(info, n, classes, **guidance)
    if g.labels is None:
        return _sampler(net, schedule, info, sampler, steps, eta), params, None
    classifier = guidance["classifier"]
    clf, clf_params = (None, None) if classifier is None else load_classifier(
        classifier, clf_config, clf_info, pick_devices(device)[0])
    s = _sampler(net, schedule, info, sampler, steps, eta, g, clf)
    return s, {"unet": params, "classifier": clf_params}, g.labels


def sample(run_dir: str | os.PathLike, *, n: int, sampler: str = "ddpm",
           steps: int | None = None, eta: float = 0.0, seed: int = 0,
           batch_size: int | None = None, use_ema: bool = True, device: str = "auto",
           compile: bool = True, loop: bool = False, classes: Any = None,
           guidance: float | None = None, guidance_rescale: float | None = None,
           classifier: str | os.PathLike | None = None,
           classifier_scale: float | None = None) -> np.ndarray:
    """``n`` samples of the run's (EMA) model, uint8 (N, H, W, C).

    ``sampler="ddpm"`` runs Algorithm 2 on the full chain (or ``steps`` respaced steps);
    ``"ddim"`` runs DDIM on ``steps`` steps (default 50) with ``eta``. The chain is one
    compiled ``lax.scan``; sample j uses the keys of ``fold_in(key(seed), j)``, so the
    images do not depend on ``batch_size``. ``compile`` is accepted for symmetry with the
    PyTorch backend (the JAX chain is always compiled); ``loop=True`` runs a Python loop
    over a jitted step instead (the same numbers; for benchmarks).

    Guidance, as in the PyTorch backend (``ddpm_core.app.labels``): ``classes`` an int, a
    list of ``n`` ints or ``"all"`` (``n`` per class: N = n K), required by a
    class-conditional run; ``guidance`` the classifier-free scale s (default 1: the
    conditional model), ``guidance_rescale`` phi (default 0); ``classifier`` a classifier
    run guiding with ``classifier_scale`` (default 1; 0: unguided). The guided chain is
    the same single compiled ``lax.scan``.
    """
    del compile
    net, params, schedule, info = load_run(run_dir, use_ema=use_ema, device=device)
    s, p, labels = _request_sampler(
        net, params, schedule, info, n, sampler, steps, eta, device, classes,
        guidance=guidance, guidance_rescale=guidance_rescale, classifier=classifier,
        classifier_scale=classifier_scale)
    x, _ = s.generate(p, n=n if labels is None else len(labels), seed=seed,
                      batch_size=batch_size, loop=loop, labels=labels)
    check_finite_samples(np.asarray(x))
    return to_images(x)


def progressive(run_dir: str | os.PathLike, *, n: int, seed: int = 0, frames: int = 10,
                sampler: str = "ddpm", steps: int | None = None, use_ema: bool = True,
                device: str = "auto", classes: Any = None, guidance: float | None = None,
                guidance_rescale: float | None = None,
                classifier: str | os.PathLike | None = None,
                classifier_scale: float | None = None) -> np.ndarray:
    """x0_hat at ``frames`` evenly spaced steps, uint8 (frames, N, H, W, C) (Figure 6).

    The guidance keywords are :func:`sample`'s (N = n, or n K with ``classes="all"``), and
    the chains are the ones :func:`sample` runs with the same arguments and seed: the last
    frame is its output (to float32 rounding before the conversion to uint8).
    """
    net, params, schedule, info = load_run(run_dir, use_ema=use_ema, device=device)
    s, p, labels = _request_sampler(
        net, params, schedule, info, n, sampler, steps, 0.0, device, classes,
        guidance=guidance, guidance_rescale=guidance_rescale, classifier=classifier,
        classifier_scale=classifier_scale)
    keep = progressive_steps(s.num_steps, frames)
    _, f = s.generate(p, n=n if labels is None else len(labels), seed=seed, frame_steps=keep,
                      labels=labels)
    return to_images(f)


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

    net, params, schedule, info = load_run(run_dir, use_ema=use_ema, device=device)
    g = interpolation_guidance(info, classes, guidance=guidance,
                               guidance_rescale=guidance_rescale)
    src = to_model_range(interpolation_sources(info, pair)).transpose(0, 3, 1, 2)
    if g.labels is None:
        s = _sampler(net, schedule, info, "ddpm", None, 0.0)
        x = s.interpolate(params, src[0], src[1], lambdas=lambdas, t=t, seed=seed)
    else:
        s = _sampler(net, schedule, info, "ddpm", None, 0.0, g)
        x = s.interpolate({"unet": params, "classifier": None}, src[0], src[1],
                          lambdas=lambdas, t=t, seed=seed, label=int(g.labels[0]))
    return to_images(x)


def param_count(preset_name: str) -> int:
    """Trainable parameters of the preset's Flax U-Net (shapes only, nothing allocated)."""
    from ddpm_core.models import get_preset

    shapes = param_shapes(UNet(config=get_preset(preset_name).unet))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))
