"""The one sampling driver: ``sample``, ``progressive`` and ``interpolate`` for every backend.

The sampling counterpart of the training loop (``ddpm_core.app.training.trainer``). A backend
(:class:`~ddpm_core.app.sampling.protocol.SampleBackend`) loads the network, builds and
runs the chain and draws its noise; this module owns everything else: the argument checks,
the chain's schedule (``chain_schedule``), batching, the labels and guidance of a request
(``ddpm_core.app.sampling.requests``), seeds and the outputs. The backends' ``api`` modules are these
functions with the backend bound (:func:`bind`), so both have one signature.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ddpm_core.app.run.images import to_uint8
from ddpm_core.app.run.integrity import check_finite_samples
from ddpm_core.app.run.progress import Progress
from ddpm_core.app.run.rundir import make_schedule, read_run_json
from ddpm_core.app.run.splits import interpolation_sources
from ddpm_core.app.sampling.chains import (
    batch_bounds,
    chain_schedule,
    check_eta,
    check_lambdas,
    check_step_index,
    progressive_steps,
)
from ddpm_core.app.sampling.protocol import ChainSpec, GuideSpec, SampleBackend
from ddpm_core.app.sampling.requests import guided_request, interpolation_guidance
from ddpm_core.checks import check_choice
from ddpm_core.reverse import mix_latents
from ddpm_core.samplers import DDIM_EPS, DEFAULT_DDIM_EPS
from ddpm_core.schedules import Schedule

__all__ = ["GuideRequest", "chain_spec", "draw_chain", "interpolate",
           "interpolate_images", "load_run", "progressive", "run_guide", "sample", "to_images"]


class GuideRequest(NamedTuple):
    """The labels of a guided request (int64 (N,)) and what the model call does with them."""

    labels: np.ndarray
    spec: GuideSpec


def to_images(x: np.ndarray) -> np.ndarray:
    """float NCHW (..., C, H, W) in [-1, 1] -> uint8 (..., H, W, C)."""
    return to_uint8(np.moveaxis(np.asarray(x), -3, -1))


def load_run(backend: SampleBackend, run_dir: str | os.PathLike, *, use_ema: bool = True,
             device: str = "auto") -> tuple[Any, Schedule, dict[str, Any]]:
    """``(network, schedule, run_info)`` of a run directory (either backend's).

    ``network`` is the backend's: a PyTorch ``UNet`` in eval mode, or a JAX
    ``JaxNetwork(module, params)``; the weights (``ema.safetensors``, or
    ``model.safetensors`` with ``use_ema=False``) are checked against run.json's hashes.
    """
    info = read_run_json(run_dir)
    network = backend.load(run_dir, info, use_ema=use_ema, device=device)
    return network, make_schedule(info["schedule"]), info


def chain_spec(schedule: Schedule, info: dict[str, Any], sampler: str = "ddpm", steps: int | None = None,
               eta: float = 0.0, spacing: str | None = None, ddim_eps: str | None = None) -> ChainSpec:
    """The chain of a run (its prediction, variance and clipping) for a sampler request;
    ``ddim_eps`` None is the core's default (``ddpm_core.samplers.DEFAULT_DDIM_EPS``)."""
    ddim_eps = DEFAULT_DDIM_EPS if ddim_eps is None else ddim_eps
    check_choice("ddim_eps", ddim_eps, DDIM_EPS)
    return ChainSpec(chain_schedule(schedule, sampler, steps, spacing), sampler, check_eta(eta), info["prediction"],
                     info["variance"], info.get("clip", True), ddim_eps)


def run_guide(backend: SampleBackend, network: Any, info: dict[str, Any], n: int, classes: Any = None, *,
              guidance: float | None = None, guidance_rescale: float | None = None,
              classifier: str | os.PathLike | None = None,
              classifier_scale: float | None = None) -> GuideRequest | None:
    """The guidance of a request checked against its run (``ddpm_core.app.sampling.requests``), with
    its classifier loaded; None for an unguided, unconditional request."""
    g, clf_config, clf_info = guided_request(info, n, classes, guidance=guidance, guidance_rescale=guidance_rescale,
                                             classifier=classifier, classifier_scale=classifier_scale)
    if g.labels is None:
        return None
    clf = None if classifier is None else backend.load_classifier(classifier, clf_config, clf_info, network)
    k = int(info["unet"].get("num_classes", 0) or 0)
    return GuideRequest(g.labels, GuideSpec(k, g.scale, g.rescale, clf, g.classifier_scale))


def draw_chain(backend: SampleBackend, chain: Any, *, n: int, seed: int = 0, batch_size: int | None = None,
               labels: np.ndarray | None = None, frame_steps: Sequence[int] = (), progress: bool = False,
               desc: str = "sampling") -> tuple[np.ndarray, np.ndarray]:
    """``n`` samples of a built chain, float32 (n, C, H, W) in [-1, 1], and the x0_hat of
    the steps ``frame_steps`` (respaced indices), float32 (F, n, C, H, W) (empty if none).

    Sample j uses the noise of global index j; ``labels`` int (n,): sample j's class.
    ``progress`` shows the chain steps of every batch, and the samples done, on stderr
    (:class:`~ddpm_core.app.run.progress.Progress`).
    """
    if labels is not None and np.shape(labels) != (n,):
        raise ValueError(f"labels must have shape ({n},), one per sample; got {np.shape(labels)}")
    xs: list[np.ndarray] = []
    fs: list[np.ndarray] = []
    bounds = batch_bounds(n, batch_size, padded=backend.pads_batches)
    steps = chain.spec.schedule.num_timesteps
    bar = Progress(steps * len(bounds), desc, unit="step", enabled=progress)
    done = 0
    for lo, hi, keep in bounds:
        x_T, noise = backend.draw(chain, seed, lo, hi)
        y = None if labels is None else np.resize(np.asarray(labels)[lo:hi], hi - lo)
        x, frames = backend.run(chain, x_T, noise, y, start=None, frame_steps=frame_steps,
                                on_step=(lambda d=done: bar.update(1, samples=f"{d}/{n}")) if progress else None)
        xs.append(backend.numpy(x)[:keep])
        done += keep
        bar.update(0, samples=f"{done}/{n}")
        if frame_steps:
            fs.append(backend.numpy(frames)[:, :keep])
    bar.close()
    kept = np.concatenate(fs, axis=1) if fs else np.zeros((0,), np.float32)
    return np.concatenate(xs), kept


def _request(backend: SampleBackend, run_dir: str | os.PathLike, n: int, chain_kw: dict[str, Any],
             use_ema: bool, device: str, compile: bool, guide_kw: dict[str, Any]
             ) -> tuple[Any, int, GuideRequest | None]:
    """The chain, the sample count N and the guidance of a ``sample``/``progressive`` request."""
    network, schedule, info = load_run(backend, run_dir, use_ema=use_ema, device=device)
    guide = run_guide(backend, network, info, n, **guide_kw)
    spec = chain_spec(schedule, info, **chain_kw)
    chain = backend.chain(network, spec, None if guide is None else guide.spec, compile=compile)
    return chain, n if guide is None else len(guide.labels), guide


def sample(backend: SampleBackend, run_dir: str | os.PathLike, *, n: int, sampler: str = "ddpm",
           steps: int | None = None, eta: float = 0.0, spacing: str | None = None, ddim_eps: str | None = None,
           seed: int = 0, batch_size: int | None = None,
           use_ema: bool = True, device: str = "auto", compile: bool = False, classes: Any = None,
           guidance: float | None = None, guidance_rescale: float | None = None,
           classifier: str | os.PathLike | None = None, classifier_scale: float | None = None,
           progress: bool = False) -> np.ndarray:
    """``n`` samples of the run's (EMA) model, uint8 (N, H, W, C).

    ``sampler="ddpm"`` runs Algorithm 2 on the full chain (or ``steps`` respaced steps);
    ``"ddim"`` runs DDIM on ``steps`` steps (default 50) with ``eta``; ``spacing`` (one of
    ``ddpm_core.respacing.SPACINGS``) picks which steps a shorter chain keeps
    (:func:`~ddpm_core.app.sampling.chains.chain_schedule`); ``ddim_eps`` DDIM's eps once
    x0_hat is clipped (``"clipped"`` or ``"network"``, ``ddpm_core.ddim_step``). Sample j's noise
    depends only on ``(seed, j)``, so the images do not depend on ``batch_size``.
    ``compile`` compiles the PyTorch model call on CUDA (the JAX chain is always one
    compiled ``lax.scan``).

    Guidance (``ddpm_core.app.sampling.requests``): ``classes`` is an int, a list of ``n`` ints or
    ``"all"`` (``n`` per class, class by class: N = n K), required by a class-conditional
    run; ``guidance`` is the classifier-free scale s (default 1: the conditional model,
    0: the unconditional one) and ``guidance_rescale`` Lin et al.'s phi (default 0);
    ``classifier`` a classifier run directory guiding with ``classifier_scale``
    (default 1; 0 is the unguided sampler). Otherwise N = n. ``progress`` shows the chain's
    steps on stderr (:func:`draw_chain`).
    """
    guide_kw = {"classes": classes, "guidance": guidance, "guidance_rescale": guidance_rescale,
                "classifier": classifier, "classifier_scale": classifier_scale}
    chain_kw = {"sampler": sampler, "steps": steps, "eta": eta, "spacing": spacing, "ddim_eps": ddim_eps}
    chain, count, guide = _request(backend, run_dir, n, chain_kw, use_ema, device, compile, guide_kw)
    x, _ = draw_chain(backend, chain, n=count, seed=seed, batch_size=batch_size,
                      labels=None if guide is None else guide.labels, progress=progress)
    check_finite_samples(x)
    return to_images(x)


def progressive(backend: SampleBackend, run_dir: str | os.PathLike, *, n: int, seed: int = 0, frames: int = 10,
                sampler: str = "ddpm", steps: int | None = None, eta: float = 0.0, spacing: str | None = None,
                ddim_eps: str | None = None, batch_size: int | None = None,
                use_ema: bool = True, device: str = "auto", classes: Any = None, guidance: float | None = None,
                guidance_rescale: float | None = None, classifier: str | os.PathLike | None = None,
                classifier_scale: float | None = None, progress: bool = False) -> np.ndarray:
    """x0_hat at ``frames`` evenly spaced steps, uint8 (frames, N, H, W, C) (Figure 6).

    The other keywords are :func:`sample`'s (N = n, or n K with ``classes="all"``), and the
    chains are the ones :func:`sample` runs with the same arguments and seed: the last
    frame is its output (to float32 rounding before the conversion to uint8).
    """
    guide_kw = {"classes": classes, "guidance": guidance, "guidance_rescale": guidance_rescale,
                "classifier": classifier, "classifier_scale": classifier_scale}
    chain_kw = {"sampler": sampler, "steps": steps, "eta": eta, "spacing": spacing, "ddim_eps": ddim_eps}
    chain, count, guide = _request(backend, run_dir, n, chain_kw, use_ema, device, False, guide_kw)
    keep = progressive_steps(chain.spec.schedule.num_timesteps, frames)
    _, f = draw_chain(backend, chain, n=count, seed=seed, batch_size=batch_size,
                      labels=None if guide is None else guide.labels, frame_steps=keep, progress=progress)
    return to_images(f)


def interpolate_images(backend: SampleBackend, chain: Any, x0_a: np.ndarray, x0_b: np.ndarray, *,
                       lambdas: Sequence[float], t: int, seed: int = 0, labels: np.ndarray | None = None,
                       progress: bool = False) -> np.ndarray:
    """Encode two images to step ``t``, mix ``(1 - lam) x_t^a + lam x_t^b``, decode (Figure 8).

    Parameters
    ----------
    chain : a built chain on the full schedule (ancestral sampler)
    x0_a, x0_b : float32 (C, H, W) in [-1, 1]
    lambdas : sequence of float in [0, 1]
    t : int in [0, T), 0-based
    labels : int (L,), the labels of the L = len(lambdas) mixtures, for a chain built with
        classifier-free guidance (no classifier guidance here), or None

    Returns
    -------
    float32 (len(lambdas), C, H, W); the encoding noise and the chain's noise are the same
    for every lambda.
    """
    lam = check_lambdas(lambdas)
    schedule = chain.spec.schedule
    t = check_step_index(t, schedule.num_timesteps)
    L = lam.size
    a, b = (backend.asarray(chain, np.ascontiguousarray(np.broadcast_to(v, (L, *v.shape)))) for v in (x0_a, x0_b))
    noise_a, noise_b, noise = backend.interpolation_noise(chain, seed, L)
    mixed = mix_latents(schedule, a, b, backend.asarray(chain, lam), t, noise_a, noise_b)
    with Progress(t + 1, "decoding", unit="step", enabled=progress) as bar:
        x, _ = backend.run(chain, mixed, noise, labels, start=t, frame_steps=(),
                           on_step=bar.update if progress else None)
        return backend.numpy(x)


def interpolate(backend: SampleBackend, run_dir: str | os.PathLike, *, seed: int = 0, t: int = 500,
                lambdas: Sequence[float] = tuple(np.linspace(0, 1, 9)), pair: Sequence[int] = (0, 1),
                use_ema: bool = True, device: str = "auto", classes: int | None = None,
                guidance: float | None = None, guidance_rescale: float | None = None,
                progress: bool = False) -> np.ndarray:
    """Interpolate two held-out images through x_t (Figure 8), uint8 (len(lambdas), H, W, C).

    A class-conditional run decodes every mixture with one label: ``classes`` (an int in
    [0, K)), or without it the null label K if the run was trained with label dropout
    (``ddpm_core.app.sampling.requests.interpolation_guidance``); ``guidance`` and
    ``guidance_rescale`` are :func:`sample`'s. There is no classifier guidance here.
    """
    from ddpm_core.data import to_model_range

    network, schedule, info = load_run(backend, run_dir, use_ema=use_ema, device=device)
    g = interpolation_guidance(info, classes, guidance=guidance, guidance_rescale=guidance_rescale)
    src = to_model_range(interpolation_sources(info, pair)).transpose(0, 3, 1, 2)
    guide = None if g.labels is None else GuideSpec(int(info["unet"].get("num_classes", 0) or 0), g.scale, g.rescale)
    chain = backend.chain(network, chain_spec(schedule, info), guide, compile=False)
    labels = None if g.labels is None else np.repeat(g.labels, len(lambdas))
    x = interpolate_images(backend, chain, src[0], src[1], lambdas=lambdas, t=t, seed=seed, labels=labels,
                           progress=progress)
    return to_images(x)
