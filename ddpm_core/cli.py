"""The ``ddpm`` command (also ``python -m ddpm_core``).

Subcommands::

    ddpm train --backend torch --preset mnist --out runs/mnist [--steps N] [--resume] ...
    ddpm sample --run runs/mnist --n 64 [--sampler ddpm|ddim --steps K --eta E] --out s.png
    ddpm progressive --run runs/mnist --n 8 --frames 10 --out progressive.png   (Figure 6)
    ddpm interpolate --run runs/mnist --pair 0 1 --t 500 --out interp.png       (Figure 8)
    ddpm presets [--json]
    ddpm eval bpd --run runs/mnist --n 100 [--json]               (the bound, bits/dim)
    ddpm eval rate-distortion --run runs/mnist --n 100 --out rd   (Figure 5: rd.csv, rd.png)
    ddpm eval fid --run runs/mnist --n 500 [--sampler ddim --steps 50] [--json]
    ddpm eval shared-latent --run runs/mnist --t 250 500 750 --k 6 --out fig7.png (Figure 7)

Backends are imported only when a subcommand needs one (``torch`` or ``jax``); a missing
framework is reported with the extra to install. This module imports neither.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_core import runs

__all__ = ["BackendUnavailable", "build_parser", "load_backend", "main"]

BACKENDS = runs.BACKENDS
_FRAMEWORK_MODULES = {"torch": ("torch", "safetensors"),
                      "jax": ("jax", "flax", "optax", "safetensors")}


class BackendUnavailable(RuntimeError):
    """The requested backend's framework is not installed."""


def _installed(backend: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in _FRAMEWORK_MODULES[backend])


def load_backend(name: str) -> Any:
    """``ddpm_core.backends.<name>.api``, with a clear message if its framework is missing."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    missing = [m for m in _FRAMEWORK_MODULES[name] if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailable(f"backend {name!r} needs {', '.join(missing)}, which is not "
                                 f"installed: pip install 'ddpm-core[{name}]'")
    try:
        return importlib.import_module(f"ddpm_core.backends.{name}.api")
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in _FRAMEWORK_MODULES[name]:
            raise BackendUnavailable(f"backend {name!r} needs {e.name}: pip install "
                                     f"'ddpm-core[{name}]'") from e
        if e.name and e.name.startswith(f"ddpm_core.backends.{name}"):
            raise BackendUnavailable(f"backend {name!r} is not part of this installation "
                                     f"({e.name} is missing)") from e
        raise


def _default_train_backend() -> str:
    for name in BACKENDS:
        if _installed(name):
            return name
    raise BackendUnavailable("no backend installed: pip install 'ddpm-core[torch]' or "
                             "'ddpm-core[jax]'")


def _run_backend(run_dir: str, requested: str | None) -> str:
    if requested:
        return requested
    trained = runs.read_run_json(run_dir)["backend"]
    if _installed(trained):
        return trained
    others = [b for b in BACKENDS if b != trained and _installed(b)]
    return others[0] if others else trained


_OPTIONAL_KWARGS = ("device", "compile", "sampler", "steps", "use_ema", "batch_size")


def _call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a backend function, leaving out optional keywords it does not take."""
    import inspect

    params = inspect.signature(fn).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        for key in _OPTIONAL_KWARGS:
            if key in kwargs and key not in params:
                del kwargs[key]
    return fn(*args, **kwargs)


# --------------------------------------------------------------------------- argument types

def _int_at_least(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}; got {text!r}")
        return value

    parse.__name__ = f"int>={low}"
    return parse


def _float_in(low: float, high: float, *, low_open: bool = True) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        ok = (value > low if low_open else value >= low) and value <= high
        if not ok:
            lo = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"must be a number in {lo}{low}, {high}]; "
                                             f"got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def _lambdas(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated numbers in [0, 1]; got {text!r}")
    return values


# --------------------------------------------------------------------------- parser

def _presets() -> list[str]:
    from ddpm_core.models import list_presets

    return list_presets()


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train (or resume) a model",
                       description="Train a DDPM (Algorithm 1) and write a run directory. "
                                   "Unset options take the preset's defaults.")
    p.add_argument("--backend", choices=BACKENDS, help="default: torch if installed, else jax")
    p.add_argument("--preset", required=True, choices=_presets())
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--steps", type=_int_at_least(1), help="total optimizer steps")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--batch-size", type=_int_at_least(1), help="global batch size")
    p.add_argument("--lr", type=_float_in(0.0, 1.0))
    p.add_argument("--warmup", type=_int_at_least(0), help="linear warm-up steps")
    p.add_argument("--grad-clip", type=_float_in(0.0, float("inf")))
    p.add_argument("--ema-decay", type=_float_in(0.0, 0.999999999, low_open=False))
    p.add_argument("--dropout", type=_float_in(0.0, 0.99, low_open=False))
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips")
    p.add_argument("--loss", choices=runs.LOSSES)
    p.add_argument("--prediction", choices=runs.PREDICTIONS)
    p.add_argument("--variance", choices=runs.VARIANCES)
    p.add_argument("--timestep-sampler", choices=runs.TIMESTEP_SAMPLERS, default="uniform")
    p.add_argument("--data", help="mnist, digits, a folder of images, an .npz or "
                                  "cifar-10-python.tar.gz (default: the preset's)")
    p.add_argument("--log-every", type=_int_at_least(0), default=50)
    p.add_argument("--sample-every", type=_int_at_least(0), default=0,
                   help="write an EMA sample grid every N steps (0: only at the end)")
    p.add_argument("--ckpt-every", type=_int_at_least(0), default=1000)
    p.add_argument("--sample-n", type=_int_at_least(1), default=64)
    p.add_argument("--compile", action="store_true", help="torch.compile on CUDA")
    p.add_argument("--device", choices=runs.DEVICES, default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress line")


def _add_sampling_common(p: argparse.ArgumentParser, out_default: str) -> None:
    p.add_argument("--run", required=True, help="run directory written by `ddpm train`")
    p.add_argument("--backend", choices=BACKENDS, help="default: the run's backend")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm")
    p.add_argument("--steps", type=_int_at_least(1),
                   help="sampling steps (ddpm: respaced chain; ddim: default 50)")
    p.add_argument("--out", default=out_default, help="PNG grid (an .npz is written beside it)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights")
    p.add_argument("--device", choices=runs.DEVICES, default="auto")


def _add_sample(sub: Any) -> None:
    p = sub.add_parser("sample", help="sample images from a run",
                       description="Sample with ancestral DDPM (Algorithm 2) or DDIM; writes "
                                   "a PNG grid and an .npz of uint8 samples.")
    _add_sampling_common(p, "samples.png")
    p.add_argument("--n", type=_int_at_least(1), default=64)
    p.add_argument("--eta", type=_float_in(0.0, 1.0, low_open=False), default=0.0)
    p.add_argument("--batch-size", type=_int_at_least(1))
    p.add_argument("--compile", action="store_true", help="compile the model call on CUDA")


def _add_progressive(sub: Any) -> None:
    p = sub.add_parser("progressive", help="x0 predictions along the chain (Figure 6)",
                       description="Rows: samples; columns: x0_hat at evenly spaced steps.")
    _add_sampling_common(p, "progressive.png")
    p.add_argument("--n", type=_int_at_least(1), default=8)
    p.add_argument("--frames", type=_int_at_least(1), default=10)


def _add_interpolate(sub: Any) -> None:
    p = sub.add_parser("interpolate", help="interpolate held-out images through x_t (Figure 8)",
                       description="Each row: source a, decoded mixes (1-l) x_t^a + l x_t^b, "
                                   "source b.")
    p.add_argument("--run", required=True)
    p.add_argument("--backend", choices=BACKENDS)
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--pair", type=_int_at_least(0), nargs=2, action="append",
                   metavar=("I", "J"), help="held-out image indices (repeatable; default 0 1)")
    p.add_argument("--t", type=_int_at_least(0), default=500, help="0-based step to encode to")
    p.add_argument("--lambdas", type=_lambdas, default=[i / 8 for i in range(9)],
                   help="comma-separated mixing weights in [0, 1]")
    p.add_argument("--out", default="interpolate.png")
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--device", choices=runs.DEVICES, default="auto")


def _add_presets(sub: Any) -> None:
    p = sub.add_parser("presets", help="list presets and parameter counts",
                       description="Every preset with its parameter count for each "
                                   "installed backend.")
    p.add_argument("--json", action="store_true", help="print {preset: {backend: count}}")


def _add_eval_common(p: argparse.ArgumentParser, n_default: int) -> None:
    p.add_argument("--run", required=True, help="run directory written by `ddpm train`")
    p.add_argument("--backend", choices=BACKENDS, help="default: the run's backend")
    p.add_argument("--n", type=_int_at_least(1), default=n_default,
                   help=f"number of images (default {n_default})")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--batch-size", type=_int_at_least(1))
    p.add_argument("--no-ema", action="store_true", help="use the raw weights")
    p.add_argument("--device", choices=runs.DEVICES, default="auto")


def _add_eval(sub: Any) -> None:
    p = sub.add_parser("eval", help="evaluate a run: bits/dim, rate-distortion, FID/KID",
                       description="Evaluation as in the paper (Ho et al. 2020): the true "
                                   "variational bound, its rate-distortion curve (Figure 5) "
                                   "and FID/KID against the training split.")
    esub = p.add_subparsers(dest="eval_command", required=True, metavar="EVAL_COMMAND")
    b = esub.add_parser("bpd", help="the variational bound in bits/dim (every term)",
                        description="The bound of eq. (5) on the first N held-out images, "
                                    "all T terms evaluated exactly, printed as L_T, the sum "
                                    "of L_{t-1} for t >= 2, L_0 and the total.")
    _add_eval_common(b, 100)
    b.add_argument("--clip", action=argparse.BooleanOptionalAction, default=False,
                   help="clip x0_hat to [-1, 1] in the model's mean (default: no)")
    b.add_argument("--json", action="store_true",
                   help="print one JSON object (bpd, prior, terms, decoder, n)")
    r = esub.add_parser("rate-distortion", help="rate and distortion against t (Figure 5)",
                        description="Writes PREFIX.csv (t, rate in bits/dim, RMSE of x0_hat "
                                    "on [0, 255]) and PREFIX.png.")
    _add_eval_common(r, 100)
    r.add_argument("--clip", action=argparse.BooleanOptionalAction, default=True,
                   help="clip x0_hat to [-1, 1] (default: yes; unclipped estimates at "
                        "large t are far outside the pixel range)")
    r.add_argument("--out", default="rate-distortion", help="output prefix")
    f = esub.add_parser("fid", help="FID and KID of samples against the training split",
                        description="Samples N images with the (EMA) model; FID and KID "
                                    "against the training split, and the held-out floor "
                                    "(N held-out images against the training split). Needs "
                                    'pip install "ddpm-core[eval]".')
    _add_eval_common(f, 500)
    f.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddpm")
    f.add_argument("--steps", type=_int_at_least(1),
                   help="sampling steps (ddpm: respaced chain; ddim: default 50)")
    f.add_argument("--eta", type=_float_in(0.0, 1.0, low_open=False), default=0.0)
    f.add_argument("--reference-n", type=_int_at_least(2),
                   help="use the first N training images as the reference (default: all)")
    f.add_argument("--kid-subsets", type=_int_at_least(1), default=100)
    f.add_argument("--kid-subset-size", type=_int_at_least(2), default=1000)
    f.add_argument("--cache-dir", help="reference feature cache (default: <run>/fid-cache)")
    f.add_argument("--json", action="store_true",
                   help="print one JSON object (fid, kid, kid_std, floor_fid, floor_kid, n)")

    s = esub.add_parser("shared-latent", help="samples sharing one latent x_t (Figure 7)",
                        description="Encodes held-out image --index to each --t, then decodes "
                                    "it --k times with different noise. Rows: t; columns: "
                                    "source, x_t, the k samples. PyTorch backend.")
    s.add_argument("--run", required=True, help="run directory written by `ddpm train`")
    s.add_argument("--index", type=_int_at_least(0), default=0, help="held-out image")
    s.add_argument("--t", type=_int_at_least(0), nargs="+", default=[250, 500, 750],
                   help="0-based steps to encode to")
    s.add_argument("--k", type=_int_at_least(1), default=6, help="samples per latent")
    s.add_argument("--seed", type=_int_at_least(0), default=0)
    s.add_argument("--out", default="shared-latent.png")
    s.add_argument("--no-ema", action="store_true", help="use the raw weights")
    s.add_argument("--device", choices=runs.DEVICES, default="auto")


def build_parser() -> argparse.ArgumentParser:
    """The ``ddpm`` argument parser."""
    parser = argparse.ArgumentParser(prog="ddpm", description="Denoising Diffusion "
                                     "Probabilistic Models (Ho et al. 2020).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_sample, _add_progressive, _add_interpolate, _add_presets,
                _add_eval):
        add(sub)
    return parser


# --------------------------------------------------------------------------- commands

_OPTION_FLAGS = {"random_flip": "--flip", "timestep_sampler": "--timestep-sampler"}


def _cmd_train(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    backend = args.backend or _default_train_backend()
    try:
        options = runs.TrainOptions(
            preset=args.preset, out=args.out, backend=backend, steps=args.steps,
            resume=args.resume, seed=args.seed, batch_size=args.batch_size, lr=args.lr,
            warmup=args.warmup, grad_clip=args.grad_clip, ema_decay=args.ema_decay,
            dropout=args.dropout, random_flip=args.flip, loss=args.loss,
            prediction=args.prediction, variance=args.variance,
            timestep_sampler=args.timestep_sampler, data=args.data, log_every=args.log_every,
            sample_every=args.sample_every, ckpt_every=args.ckpt_every,
            sample_n=args.sample_n, compile=args.compile, device=args.device,
            progress=not args.quiet)
        runs.resolve_options(options)
    except ValueError as e:
        parser.error(str(e))
    summary = load_backend(backend).train(options)
    print(f"trained {summary['steps_run']} steps (now at step {summary['steps']}) in "
          f"{summary['seconds']:.1f} s, {summary['images_per_s']:.1f} images/s, final loss "
          f"{summary['final_loss']:.4f}; run directory {summary['run_dir']}")
    return 0


def _write_grid(out: str, grid_images: np.ndarray, arrays: dict[str, np.ndarray],
                ncols: int | None = None) -> None:
    path = Path(out)
    runs.save_png(path, runs.image_grid(grid_images, ncols=ncols))
    runs.save_npz(path.with_suffix(".npz"), **arrays)
    print(f"wrote {path} and {path.with_suffix('.npz')}")


def _cmd_sample(args: argparse.Namespace) -> int:
    api = load_backend(_run_backend(args.run, args.backend))
    images = _call(api.sample, args.run, n=args.n, sampler=args.sampler, steps=args.steps,
                        eta=args.eta, seed=args.seed, batch_size=args.batch_size,
                        use_ema=not args.no_ema, device=args.device, compile=args.compile)
    _write_grid(args.out, images, {"images": images})
    return 0


def _cmd_progressive(args: argparse.Namespace) -> int:
    api = load_backend(_run_backend(args.run, args.backend))
    frames = _call(api.progressive, args.run, n=args.n, seed=args.seed, frames=args.frames,
                             sampler=args.sampler, steps=args.steps,
                             use_ema=not args.no_ema, device=args.device)
    rows = frames.transpose(1, 0, 2, 3, 4).reshape(-1, *frames.shape[2:])
    _write_grid(args.out, rows, {"frames": frames}, ncols=frames.shape[0])
    return 0


def _cmd_interpolate(args: argparse.Namespace) -> int:
    api = load_backend(_run_backend(args.run, args.backend))
    from ddpm_core.data import load_dataset

    info = runs.read_run_json(args.run)
    pairs = args.pair or [[0, 1]]
    try:
        held = load_dataset(info["data"], "heldout")
    except ValueError:
        held = load_dataset(info["data"], "train")
    rows, mixes = [], []
    for i, j in pairs:
        mixed = _call(api.interpolate, args.run, seed=args.seed, t=args.t, lambdas=args.lambdas,
                                pair=(i, j), use_ema=not args.no_ema, device=args.device)
        rows += [held[i], *mixed, held[j]]
        mixes.append(mixed)
    _write_grid(args.out, np.stack(rows), {"interpolations": np.stack(mixes),
                                           "pairs": np.asarray(pairs),
                                           "lambdas": np.asarray(args.lambdas)},
                ncols=len(args.lambdas) + 2)
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from ddpm_core.models import get_preset

    backends = {}
    for name in BACKENDS:
        if _installed(name):
            try:
                backends[name] = load_backend(name)
            except BackendUnavailable as e:
                print(f"note: {e}", file=sys.stderr)
    table = {p: {b: int(api.param_count(p)) for b, api in backends.items()} for p in _presets()}
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"{'preset':<12} {'size':>9}  " + "  ".join(f"{b:>12}" for b in backends))
    for p, counts in table.items():
        pre = get_preset(p)
        size = f"{pre.image_size}x{pre.image_size}x{pre.channels}"
        print(f"{p:<12} {size:>9}  " + "  ".join(f"{counts[b]:>12,}" for b in backends))
    return 0


def _load_evaluation(backend: str) -> Any:
    load_backend(backend)  # a clear message if the framework is missing
    return importlib.import_module(f"ddpm_core.backends.{backend}.evaluation")


def _eval_bpd(args: argparse.Namespace) -> dict[str, Any]:
    import time

    backend = _run_backend(args.run, args.backend)
    start = time.perf_counter()
    result = _load_evaluation(backend).bpd(args.run, n=args.n, batch_size=args.batch_size,
                                           seed=args.seed, use_ema=not args.no_ema,
                                           device=args.device, clip=args.clip)
    result.update(backend=backend, T=int(len(result["terms_per_t"])),
                  seconds=round(time.perf_counter() - start, 3))
    return result


def _cmd_eval_bpd(args: argparse.Namespace) -> int:
    from ddpm_core.evaluation import public

    r = _eval_bpd(args)
    if args.json:
        print(json.dumps(public(r)))
        return 0
    print(f"bits/dim on {r['n']} held-out images ({r['backend']}, T={r['T']}, "
          f"{r['seconds']:.1f} s):")
    print(f"  L_T (prior)            {r['prior']:.6f}")
    print(f"  sum L_{{t-1}}, t >= 2    {r['terms']:.6f}")
    print(f"  L_0 (decoder)          {r['decoder']:.6f}")
    print(f"  total (bound)          {r['bpd']:.6f}")
    return 0


def _cmd_eval_rate_distortion(args: argparse.Namespace) -> int:
    from ddpm_core.evaluation import rate_distortion, write_rate_distortion

    r = _eval_bpd(args)
    csv_path, png_path = write_rate_distortion(args.out, rate_distortion(r))
    print(f"bits/dim {r['bpd']:.4f} on {r['n']} held-out images; wrote {csv_path} and "
          f"{png_path}")
    return 0


def _cmd_eval_fid(args: argparse.Namespace) -> int:
    from ddpm_core.evaluation import FID_KEYS, fid_report, public, require_fid_network

    try:
        require_fid_network()
    except ImportError as e:
        raise BackendUnavailable(str(e)) from e
    api = load_backend(_run_backend(args.run, args.backend))
    images = _call(api.sample, args.run, n=args.n, sampler=args.sampler, steps=args.steps,
                   eta=args.eta, seed=args.seed, batch_size=args.batch_size,
                   use_ema=not args.no_ema, device=args.device)
    try:
        r = fid_report(args.run, images, reference_n=args.reference_n,
                       cache_dir=args.cache_dir, kid_subsets=args.kid_subsets,
                       kid_subset_size=args.kid_subset_size)
    except ImportError as e:
        raise BackendUnavailable(str(e)) from e
    if args.json:
        print(json.dumps(public(r, FID_KEYS)))
        return 0
    print(f"{r['n']} samples ({args.sampler}) against {r['reference_n']} training images:")
    print(f"  model   FID {r['fid']:.4f}   KID {r['kid']:.6f} +- {r['kid_std']:.6f}")
    print(f"  floor   FID {r['floor_fid']:.4f}   KID {r['floor_kid']:.6f} +- "
          f"{r['floor_kid_std']:.6f}   ({r['floor_n']} held-out images)")
    return 0


def _cmd_eval_shared_latent(args: argparse.Namespace) -> int:
    grid = _load_evaluation("torch").shared_latent(
        args.run, index=args.index, ts=tuple(args.t), k=args.k, seed=args.seed,
        use_ema=not args.no_ema, device=args.device)
    _write_grid(args.out, grid.reshape(-1, *grid.shape[2:]),
                {"grid": grid, "t": np.asarray(args.t)}, ncols=grid.shape[1])
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    commands = {"bpd": _cmd_eval_bpd, "rate-distortion": _cmd_eval_rate_distortion,
                "fid": _cmd_eval_fid, "shared-latent": _cmd_eval_shared_latent}
    return commands[args.eval_command](args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ddpm``; returns the exit status (2 for usage errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            return _cmd_train(args, parser)
        commands = {"sample": _cmd_sample, "progressive": _cmd_progressive,
                    "interpolate": _cmd_interpolate, "presets": _cmd_presets,
                    "eval": _cmd_eval}
        return commands[args.command](args)
    except (BackendUnavailable, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"ddpm {args.command}: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # NaN/inf loss (NonFiniteLossError)
        print(f"ddpm {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"ddpm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
