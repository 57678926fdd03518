"""``ddpm eval``: bits/dim, rate-distortion (Figure 5), FID/KID, shared latents (Figure 7),
class accuracy and the Inception Score (``classify``)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_core.app.cli.backends import BackendUnavailable, load_backend, load_evaluation, run_backend
from ddpm_core.app.cli.commands import chain_args, write_grid
from ddpm_core.app.run.outputs import check_output

__all__ = ["cmd_eval"]


def _eval_bpd(args: argparse.Namespace) -> dict[str, Any]:
    backend = run_backend(args.run, args.backend)
    start = time.perf_counter()
    result = load_backend(backend).bpd(args.run, n=args.n, batch_size=args.batch_size,
                                           seed=args.seed, use_ema=not args.no_ema,
                                           device=args.device, clip=args.clip,
                                           progress=not args.no_progress)
    result.update(backend=backend, T=int(len(result["terms_per_t"])),
                  seconds=round(time.perf_counter() - start, 3))
    return result


def _cmd_eval_bpd(args: argparse.Namespace) -> int:
    from ddpm_core.app.evaluation.bound import public

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
    from ddpm_core.app.evaluation.bound import rate_distortion, write_rate_distortion

    check_output(args.out, "prefix")
    r = _eval_bpd(args)
    csv_path, png_path = write_rate_distortion(args.out, rate_distortion(r))
    print(f"bits/dim {r['bpd']:.4f} on {r['n']} held-out images; wrote {csv_path} and "
          f"{png_path}")
    return 0


def _cmd_eval_fid(args: argparse.Namespace) -> int:
    from ddpm_core.app.evaluation.bound import public
    from ddpm_core.app.evaluation.fid import FID_KEYS, fid_report, require_fid_network

    try:
        require_fid_network()
    except ImportError as e:
        raise BackendUnavailable(str(e)) from e
    api = load_backend(run_backend(args.run, args.backend))
    images = api.sample(args.run, progress=not args.no_progress, n=args.n, **chain_args(args), seed=args.seed,
                        batch_size=args.batch_size,
                        use_ema=not args.no_ema, device=args.device)
    try:
        r = fid_report(args.run, images, progress=not args.no_progress, reference_n=args.reference_n,
                       cache_dir=args.cache_dir, kid_subsets=args.kid_subsets,
                       kid_subset_size=args.kid_subset_size)
    except ImportError as e:
        raise BackendUnavailable(str(e)) from e
    log = _record_fid(args, r)
    if args.json:
        print(json.dumps(public(r, FID_KEYS)))
        return 0
    print(f"{r['n']} samples ({args.sampler}) against {r['reference_n']} training images "
          f"(recorded in {log}):")
    print(f"  model   FID {r['fid']:.4f}   KID {r['kid']:.6f} +- {r['kid_std']:.6f}")
    print(f"  floor   FID {r['floor_fid']:.4f}   KID {r['floor_kid']:.6f} +- "
          f"{r['floor_kid_std']:.6f}   ({r['floor_n']} held-out images)")
    return 0


def _record_fid(args: argparse.Namespace, report: dict[str, Any]) -> Path:
    """Append the evaluation to ``RUN/fid.csv`` (``ddpm plot`` draws it)."""
    from ddpm_core.app.run.fid_log import append_fid_row
    from ddpm_core.app.run.rundir import read_run_json

    step = int(read_run_json(args.run)["step"])
    return append_fid_row(args.run, {**report, "step": step, "sampler": args.sampler,
                                     "steps": args.steps})


def _cmd_eval_shared_latent(args: argparse.Namespace) -> int:
    check_output(args.out, "grid")
    grid = load_evaluation("torch").shared_latent(
        args.run, index=args.index, ts=tuple(args.t), k=args.k, seed=args.seed,
        use_ema=not args.no_ema, device=args.device)
    write_grid(args.out, grid.reshape(-1, *grid.shape[2:]),
                {"grid": grid, "t": np.asarray(args.t)}, ncols=grid.shape[1])
    return 0


def _classify_samples(args: argparse.Namespace) -> tuple[np.ndarray, Any, int | None]:
    """Sample the run as ``eval classify`` asks: (images, intended labels or None, K)."""
    from ddpm_core.app.run.rundir import read_run_json
    from ddpm_core.app.sampling.requests import guided_request

    info = read_run_json(args.run)
    run_k = int(info["unet"].get("num_classes", 0) or 0)
    classes = args.classes if args.classes is not None or not run_k else "all"
    if isinstance(classes, list) and len(classes) != args.n:
        args.n = len(classes)
    guide = {"classes": classes, "guidance": args.guidance, "guidance_rescale": args.guidance_rescale,
             "classifier": args.classifier, "classifier_scale": args.classifier_scale}
    g, clf_config, _ = guided_request(info, args.n, **guide)  # checked before sampling
    api = load_backend(run_backend(args.run, args.backend))
    extra = {k: v for k, v in guide.items() if v is not None}
    images = api.sample(args.run, progress=not args.no_progress, n=args.n, **chain_args(args), seed=args.seed,
                        batch_size=args.batch_size,
                        use_ema=not args.no_ema, device=args.device, **extra)
    k = run_k or (clf_config.num_classes if clf_config is not None else None)
    return images, g.labels, k


def _cmd_eval_classify(args: argparse.Namespace) -> int:
    from ddpm_core.app.evaluation.classify import CLASSIFY_KEYS, IS_NOTE, classify_report, format_report
    from ddpm_core.app.run.rundir import read_run_json

    load_backend("torch")  # the classifiers are PyTorch networks, whatever the run's backend
    from ddpm_core.backends.torch.eval_classifier import sample_probabilities, scorer_for

    data = str(read_run_json(args.run)["data"])
    cache = args.cache_dir if args.cache_dir is not None else Path(args.run) / "fid-cache"
    scorer = scorer_for(data, cache_dir=cache, is_network=args.is_network)  # before sampling
    images, intended, k = _classify_samples(args)
    probs = sample_probabilities(scorer, images, batch_size=args.batch_size)
    r = classify_report(probs, intended, num_classes=k)
    r.update(eval_accuracy=scorer.heldout_accuracy, classifier=scorer.name,
             builtin=args.is_network is None)
    if intended is not None and r["accuracy"] is None:
        r["accuracy_note"] = (f"the classifier has {probs.shape[1]} classes, the request {k}")
    if args.json:
        out = {key: r[key] for key in CLASSIFY_KEYS}
        out["confusion"] = None if r["confusion"] is None else r["confusion"].tolist()
        out["note"] = IS_NOTE if r["builtin"] else "Inception Score computed with " + r["classifier"]
        print(json.dumps(out))
        return 0
    print("\n".join(format_report(r)))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    commands = {"bpd": _cmd_eval_bpd, "rate-distortion": _cmd_eval_rate_distortion,
                "fid": _cmd_eval_fid, "shared-latent": _cmd_eval_shared_latent,
                "classify": _cmd_eval_classify}
    return commands[args.eval_command](args)
