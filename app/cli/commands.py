"""The subcommands that train, sample and list: one short function each, which calls one
library function and prints."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_core.app.cli.backends import (
    BackendUnavailable,
    default_train_backend,
    installed,
    load_backend,
    run_backend,
)
from ddpm_core.app.run.images import image_grid, save_npz, save_png
from ddpm_core.app.run.options import BACKENDS, TrainOptions, resolve_options
from ddpm_core.app.run.outputs import check_output
from ddpm_core.app.run.rundir import read_run_json
from ddpm_core.app.training.tensorboard import TensorBoardUnavailable, require_tensorboard

__all__ = ["cmd_export", "cmd_import", "cmd_interpolate", "cmd_plot", "cmd_presets", "cmd_progressive", "cmd_sample",
           "cmd_train", "cmd_train_classifier", "write_grid"]


def cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    backend = args.backend or (_run_backend_of(args.out) if args.resume else None) \
        or default_train_backend()
    try:
        options = TrainOptions(
            preset=args.preset, out=args.out, backend=backend, steps=args.steps,
            resume=args.resume, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
            warmup=args.warmup, grad_clip=args.grad_clip, ema_decay=args.ema_decay,
            dropout=args.dropout, random_flip=args.flip, loss=args.loss,
            prediction=args.prediction, variance=args.variance,
            timestep_sampler=args.timestep_sampler, data=args.data, log_every=args.log_every,
            sample_every=args.sample_every, ckpt_every=args.ckpt_every,
            sample_n=args.sample_n, compile=args.compile, device=args.device, init=args.init,
            progress=False if args.quiet else None, class_conditional=args.class_conditional,
            label_dropout=args.label_dropout, schedule=args.schedule,
            weighting=None if args.weighting is None else args.weighting.replace("-", "_"),
            min_snr_gamma=args.min_snr_gamma, ch=args.ch, num_res_blocks=args.num_res_blocks,
            tensorboard=args.tensorboard)
        resolve_options(options)
    except ValueError as e:
        parser.error(str(e))
    _check_tensorboard(args)
    with _tensorboard_error():
        summary = load_backend(backend).train(options)
    if not summary["main"]:
        return 0
    print(f"trained {summary['steps_run']} steps (now at step {summary['steps']}) in "
          f"{summary['seconds']:.1f} s, {summary['images_per_s']:.1f} images/s, final loss "
          f"{summary['final_loss']:.4f}; run directory {summary['run_dir']}")
    return 0


def cmd_train_classifier(args: argparse.Namespace) -> int:
    from ddpm_core.models import list_presets

    preset = args.preset or (args.data if args.data in list_presets() else None)
    if preset is None:
        raise ValueError(f"--preset is required for --data {args.data!r} (no preset of that "
                         f"name); choose one of {', '.join(list_presets())}")
    backend = args.backend or default_train_backend()
    options = TrainOptions(
        preset=preset, out=args.out, backend=backend, steps=args.steps, resume=args.resume,
        seed=args.seed, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
        grad_clip=args.grad_clip, data=args.data, log_every=args.log_every,
        ckpt_every=args.ckpt_every, device=args.device, progress=False if args.quiet else None,
        tensorboard=args.tensorboard)
    _check_tensorboard(args)
    load_backend(backend)
    module = importlib.import_module(f"ddpm_core.backends.{backend}.classifier_training")
    with _tensorboard_error():
        s = module.train_classifier(options)
    acc = (f"; held-out accuracy {s['heldout_accuracy']:.4f} at uniform t, "
           f"{s['heldout_accuracy_t0']:.4f} at t = 0 ({s['heldout_n']} images)"
           if "heldout_accuracy" in s else "")
    print(f"trained the classifier {s['steps_run']} steps (now at step {s['steps']}) in "
          f"{s['seconds']:.1f} s, final loss {s['final_loss']:.4f}{acc}; run directory "
          f"{s['run_dir']}")
    return 0


def _check_tensorboard(args: argparse.Namespace) -> None:
    """Before any work: --tensorboard needs tensorboardX (a resumed run that writes events
    without the flag is checked by the loop, before it writes anything; the commands turn
    its error into the same one line with :func:`_tensorboard_error`)."""
    if args.tensorboard:
        with _tensorboard_error():
            require_tensorboard()


@contextlib.contextmanager
def _tensorboard_error() -> Iterator[None]:
    """A missing tensorboardX as the one-line error of a missing extra."""
    try:
        yield
    except TensorBoardUnavailable as e:
        raise BackendUnavailable(str(e)) from e


def _run_backend_of(run_dir: str) -> str | None:
    """The backend a run to resume was trained with (None if run.json is unreadable)."""
    try:
        return read_run_json(run_dir)["backend"]
    except (OSError, ValueError):
        return None


def write_grid(out: str, grid_images: np.ndarray, arrays: dict[str, np.ndarray],
               ncols: int | None = None) -> None:
    """A PNG grid at ``out`` and the arrays in an .npz beside it."""
    path = Path(out)
    save_png(path, image_grid(grid_images, ncols=ncols))
    save_npz(path.with_suffix(".npz"), **arrays)
    print(f"wrote {path} and {path.with_suffix('.npz')}")


def _guided_args(args: argparse.Namespace, default_n: int
                 ) -> tuple[int, dict[str, Any], np.ndarray | None]:
    """``(n, guidance keywords, labels)`` of ``sample`` / ``progressive``, checked up front.

    ``n`` defaults to the length of a --class list, 8 per class with --class all, else
    ``default_n``; ``labels`` int64 (N,) or None (unguided). Only the given flags are kept.
    """
    from ddpm_core.app.sampling.requests import guided_request

    classes = args.classes
    n = args.n or (len(classes) if isinstance(classes, list) else 8 if classes == "all"
                   else default_n)
    guide = {"classes": classes, "guidance": args.guidance,
             "guidance_rescale": args.guidance_rescale, "classifier": args.classifier,
             "classifier_scale": args.classifier_scale}
    labels = guided_request(read_run_json(args.run), n, **guide)[0].labels
    return n, {k: v for k, v in guide.items() if v is not None}, labels


def _with_labels(arrays: dict[str, np.ndarray], labels: np.ndarray | None
                 ) -> dict[str, np.ndarray]:
    return arrays if labels is None else {**arrays, "labels": labels}


def chain_args(args: argparse.Namespace) -> dict[str, Any]:
    """The chain options of a sampling subcommand (--sampler, --steps, --spacing, --ddim-eps,
    --eta where it has one) as the driver's keywords."""
    kw = {"sampler": args.sampler, "steps": args.steps, "spacing": args.spacing, "ddim_eps": args.ddim_eps}
    return {**kw, "eta": args.eta} if hasattr(args, "eta") else kw


def cmd_sample(args: argparse.Namespace) -> int:
    check_output(args.out, "grid")
    n, guide, labels = _guided_args(args, 64)
    api = load_backend(run_backend(args.run, args.backend))
    images = api.sample(args.run, progress=not args.no_progress, n=n, **chain_args(args), seed=args.seed,
                        batch_size=args.batch_size,
                        use_ema=not args.no_ema, device=args.device, compile=args.compile, **guide)
    write_grid(args.out, images, _with_labels({"images": images}, labels),
               ncols=n if args.classes == "all" else None)
    return 0


def cmd_progressive(args: argparse.Namespace) -> int:
    check_output(args.out, "grid")
    n, guide, labels = _guided_args(args, 8)
    api = load_backend(run_backend(args.run, args.backend))
    frames = api.progressive(args.run, progress=not args.no_progress, n=n, seed=args.seed, frames=args.frames,
                             **chain_args(args),
                             use_ema=not args.no_ema,
                             device=args.device, **guide)
    rows = frames.transpose(1, 0, 2, 3, 4).reshape(-1, *frames.shape[2:])
    write_grid(args.out, rows, _with_labels({"frames": frames}, labels), ncols=frames.shape[0])
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from ddpm_core.app.sampling.requests import interpolation_guidance
    from ddpm_core.data import load_dataset

    check_output(args.out, "grid")
    if args.classifier is not None:
        raise ValueError(f"--classifier is not available for interpolate (got --classifier "
                         f"{args.classifier}); guide the decode with --class on a "
                         "class-conditional run, or use ddpm sample / ddpm progressive")
    info = read_run_json(args.run)
    guide = {k: v for k, v in (("classes", args.classes), ("guidance", args.guidance),
                               ("guidance_rescale", args.guidance_rescale)) if v is not None}
    labels = interpolation_guidance(info, **guide).labels  # checked up front
    api = load_backend(run_backend(args.run, args.backend))
    pairs = args.pair or [[0, 1]]
    try:
        held = load_dataset(info["data"], "heldout")
    except ValueError:
        held = load_dataset(info["data"], "train")
    rows, mixes = [], []
    for i, j in pairs:
        mixed = api.interpolate(args.run, progress=not args.no_progress, seed=args.seed, t=args.t, lambdas=args.lambdas,
                                pair=(i, j), use_ema=not args.no_ema, device=args.device, **guide)
        rows += [held[i], *mixed, held[j]]
        mixes.append(mixed)
    arrays = {"interpolations": np.stack(mixes), "pairs": np.asarray(pairs),
              "lambdas": np.asarray(args.lambdas)}
    if labels is not None:  # the one label of every decode (K: the null label)
        arrays["label"] = labels[0]
    write_grid(args.out, np.stack(rows), arrays, ncols=len(args.lambdas) + 2)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from ddpm_core.app.run.plot import plot_loss

    try:
        r = plot_loss(args.run, args.out)
    except ImportError as e:
        raise BackendUnavailable(str(e)) from e
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"wrote {r['out']} ({r['points']} points, last at step {r['last_step']}: loss "
          f"{r['last_loss']:.4f})")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from ddpm_core.models import get_preset, list_presets

    backends = {}
    for name in BACKENDS:
        if installed(name):
            try:
                backends[name] = load_backend(name)
            except BackendUnavailable as e:
                print(f"note: {e}", file=sys.stderr)
    table = {p: {b: int(api.param_count(p)) for b, api in backends.items()} for p in list_presets()}
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"{'preset':<12} {'size':>9}  " + "  ".join(f"{b:>12}" for b in backends))
    for p, counts in table.items():
        pre = get_preset(p)
        size = f"{pre.image_size}x{pre.image_size}x{pre.channels}"
        print(f"{p:<12} {size:>9}  " + "  ".join(f"{counts[b]:>12,}" for b in backends))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from ddpm_core.interop.diffusers import import_diffusers

    info = import_diffusers(args.path, args.out, preset=args.preset, data=args.data,
                            progress=not args.no_progress)
    print(f"imported {args.path} as run {args.out} (preset {info['preset']!r}, "
          f"{info['schedule']['num_timesteps']} steps, prediction {info['prediction']!r}, "
          f"variance {info['variance']!r})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ddpm_core.interop.diffusers import export_diffusers

    out = export_diffusers(args.run, args.out, use_ema=not args.no_ema, progress=not args.no_progress)
    print(f"exported run {args.run} to {out} (DDPMPipeline.from_pretrained reads it)")
    return 0
