"""Guidance against class accuracy and sample quality: the tables of docs/results.md.

Two sweeps, each row sampled ``--per-class`` images of every class (N = per_class K,
drawn class by class from the same seed) and graded three ways:

* class accuracy and the Inception Score under the built-in evaluation classifier
  (``ddpm eval classify``; independent of any guiding classifier), with the confusion;
* FID and KID against the run's training images, beside the held-out floor at the same N
  (``ddpm eval fid``).

``--cond RUN`` sweeps classifier-free guidance (Ho & Salimans 2022) over ``--cfg-scales``
(diffusers' s: 0 the unconditional model, 1 the conditional one). ``--uncond RUN
--classifier CLF`` sweeps classifier guidance (Dhariwal & Nichol 2021) of an unconditional
run over ``--classifier-scales`` (0: the unguided sampler). Either may be left out.

    python benchmarks/guidance.py --root runs/guidance --cond runs/mnist-cond \\
        --uncond runs/mnist --classifier runs/clf [--per-class 50] [--sampler ddim --steps 100]

Resumable like the ablation: each row's measurement (and its samples, ``rows/*.npz``, with
a grid of one row per class, ``rows/*.png``) is written atomically and reused while the
settings are unchanged. Writes ``<root>/guidance.md``. Hours on a 2-core CPU at the
defaults; not in CI.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

SETTINGS = ("per_class", "sampler", "steps", "eta", "seed", "reference_n", "grid_n")


def _scales(text: str) -> list[float]:
    try:
        values = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"scales must be a comma list of numbers >= 0; got "
                                         f"{text!r}") from None
    if not values or any(not np.isfinite(v) or v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"scales must be a comma list of numbers >= 0; got "
                                         f"{text!r}")
    return values


def sample_row(run: str, kind: str, scale: float, args: argparse.Namespace,
               api: Any) -> tuple[np.ndarray, np.ndarray]:
    """The row's samples (uint8 (N, H, W, C), class by class) and their intended classes."""
    guide: dict[str, Any] = {"guidance": scale} if kind == "cfg" else {
        "classifier": args.classifier, "classifier_scale": scale}
    images = api.sample(run, n=args.per_class, classes="all", sampler=args.sampler,
                        steps=args.steps, eta=args.eta, seed=args.seed,
                        batch_size=args.batch_size, progress=True, **guide)
    k = images.shape[0] // args.per_class
    return images, np.repeat(np.arange(k), args.per_class)


def grade(run: str, images: np.ndarray, intended: np.ndarray,
          args: argparse.Namespace) -> dict[str, Any]:
    """Accuracy, IS and confusion under the evaluation classifier; FID and KID with floors."""
    from ddpm_core.app.evaluation.classify import classify_report
    from ddpm_core.app.evaluation.fid import fid_report
    from ddpm_core.app.run.rundir import read_run_json
    from ddpm_core.backends.torch.eval_classifier import sample_probabilities, scorer_for

    data = str(read_run_json(run)["data"])
    scorer = scorer_for(data, cache_dir=args.cache_dir)
    k = int(intended.max()) + 1
    r = classify_report(sample_probabilities(scorer, images), intended, num_classes=k)
    row = {"accuracy": r["accuracy"], "inception_score": r["inception_score"],
           "inception_score_std": r["inception_score_std"],
           "confusion": None if r["confusion"] is None else r["confusion"].tolist(),
           "eval_accuracy": scorer.heldout_accuracy}
    if args.fid:
        fid = fid_report(run, images, reference_n=args.reference_n, cache_dir=args.cache_dir,
                         progress=True)
        row.update({key: fid[key] for key in ("fid", "kid", "kid_std", "floor_fid",
                                              "floor_kid", "n", "reference_n")})
    return row


def measure_row(run: str, kind: str, scale: float, args: argparse.Namespace) -> dict[str, Any]:
    """One row, measured or reused from ``<root>/rows/<kind>-<scale>.json``."""
    from ddpm_core.app.cli.backends import load_backend, run_backend
    from ddpm_core.app.run.atomic import atomic_write_json
    from ddpm_core.app.run.images import image_grid, save_npz, save_png

    stem = Path(args.root) / "rows" / f"{kind}-{scale:g}"
    wanted = {"run": str(Path(run).resolve()), "fid": args.fid,
              **({"classifier": str(Path(args.classifier).resolve())} if kind == "clf" else {}),
              **{key: getattr(args, key) for key in SETTINGS}}
    stored = stem.with_suffix(".json")
    if stored.is_file():
        previous = json.loads(stored.read_text(encoding="utf-8"))
        if previous.get("eval") == wanted:
            return previous["row"]
    api = load_backend(run_backend(run, args.backend))
    start = time.perf_counter()
    images, intended = sample_row(run, kind, scale, args, api)
    row: dict[str, Any] = {"kind": kind, "scale": scale,
                           "sample_s": round(time.perf_counter() - start, 1)}
    row.update(grade(run, images, intended, args))
    per_class = images.reshape(-1, args.per_class, *images.shape[1:])[:, :args.grid_n]
    save_npz(stem.with_suffix(".npz"), images=images, labels=intended)
    save_png(stem.with_suffix(".png"),
             image_grid(per_class.reshape(-1, *images.shape[1:]), ncols=per_class.shape[1]))
    atomic_write_json(stored, {"eval": wanted, "row": row})
    return row


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    """One Markdown table: scale, class accuracy, IS, FID, KID, with the floor last."""
    lines = [f"| {title} | class accuracy | Inception Score (MNIST classifier) | FID | "
             "KID x 1e3 | sampling s |", "|---|---|---|---|---|---|"]
    for r in rows:
        kid = None if r.get("kid") is None else 1e3 * r["kid"]
        lines.append(f"| {r['scale']:g} | {_fmt(r['accuracy'], '.1%')} | "
                     f"{r['inception_score']:.2f} | {_fmt(r.get('fid'), '.2f')} | "
                     f"{_fmt(kid, '.2f')} | {r['sample_s']:.0f} |")
    if rows and rows[0].get("floor_fid") is not None:
        r = rows[0]
        lines.append(f"| held-out floor (N = {r['n']}) | | | {r['floor_fid']:.2f} | "
                     f"{1e3 * r['floor_kid']:.2f} | |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from ddpm_core.samplers import SAMPLERS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="runs/guidance")
    p.add_argument("--cond", help="a class-conditional run (classifier-free guidance sweep)")
    p.add_argument("--uncond", help="an unconditional run (classifier guidance sweep)")
    p.add_argument("--classifier", help="the classifier run that guides --uncond")
    p.add_argument("--cfg-scales", type=_scales, default=_scales("0,1,2,4,8"))
    p.add_argument("--classifier-scales", type=_scales, default=_scales("0,1,2,4,8"))
    p.add_argument("--per-class", type=int, default=50, help="samples per class (N = K x this)")
    p.add_argument("--sampler", choices=SAMPLERS, default="ddim")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--eta", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--backend", choices=("torch", "jax"), default=None,
                   help="default: the backend that trained each run")
    p.add_argument("--reference-n", type=int, default=None)
    p.add_argument("--no-fid", dest="fid", action="store_false", help="accuracy and IS only")
    p.add_argument("--grid-n", type=int, default=10, help="columns of each row's grid")
    p.add_argument("--cache-dir", default=None,
                   help="FID features and the evaluation classifier (default <root>/cache)")
    args = p.parse_args(argv)
    if args.cond is None and args.uncond is None:
        p.error("give --cond RUN, --uncond RUN --classifier CLF, or both")
    if args.uncond is not None and args.classifier is None:
        p.error("--uncond needs --classifier CLF (the classifier run that guides it)")
    if args.per_class < 2:
        p.error(f"--per-class must be >= 2; got {args.per_class}")
    if args.cache_dir is None:
        args.cache_dir = str(Path(args.root) / "cache")
    return args


def main(argv: list[str] | None = None) -> int:
    from ddpm_core.app.run.atomic import atomic_write_bytes

    args = parse_args(argv)
    sweeps = [(run, kind, scales, title) for run, kind, scales, title in (
        (args.cond, "cfg", args.cfg_scales, "classifier-free scale s"),
        (args.uncond, "clf", args.classifier_scales, "classifier scale")) if run is not None]
    tables = []
    for run, kind, scales, title in sweeps:
        rows = []
        for scale in scales:
            rows.append(measure_row(run, kind, scale, args))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "confusion"}),
                  flush=True)
        tables.append(markdown(rows, title))
    text = "\n\n".join(tables) + "\n"
    atomic_write_bytes(Path(args.root) / "guidance.md", text.encode())
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
