"""``ddpm eval``: bits/dim, rate-distortion (Figure 5), FID/KID, shared latents (Figure 7)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

from ddpm_core.app.cli.backends import BackendUnavailable, call, load_backend, load_evaluation, run_backend
from ddpm_core.app.cli.commands import write_grid
from ddpm_core.app.outputs import check_output

__all__ = ["cmd_eval"]


def _eval_bpd(args: argparse.Namespace) -> dict[str, Any]:
    backend = run_backend(args.run, args.backend)
    start = time.perf_counter()
    result = load_evaluation(backend).bpd(args.run, n=args.n, batch_size=args.batch_size,
                                           seed=args.seed, use_ema=not args.no_ema,
                                           device=args.device, clip=args.clip)
    result.update(backend=backend, T=int(len(result["terms_per_t"])),
                  seconds=round(time.perf_counter() - start, 3))
    return result


def _cmd_eval_bpd(args: argparse.Namespace) -> int:
    from ddpm_core.app.evaluation import public

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
    from ddpm_core.app.evaluation import rate_distortion, write_rate_distortion

    check_output(args.out, "prefix")
    r = _eval_bpd(args)
    csv_path, png_path = write_rate_distortion(args.out, rate_distortion(r))
    print(f"bits/dim {r['bpd']:.4f} on {r['n']} held-out images; wrote {csv_path} and "
          f"{png_path}")
    return 0


def _cmd_eval_fid(args: argparse.Namespace) -> int:
    from ddpm_core.app.evaluation import FID_KEYS, fid_report, public, require_fid_network

    try:
        require_fid_network()
    except ImportError as e:
        raise BackendUnavailable(str(e)) from e
    api = load_backend(run_backend(args.run, args.backend))
    images = call(api.sample, args.run, n=args.n, sampler=args.sampler, steps=args.steps,
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
    check_output(args.out, "grid")
    grid = load_evaluation("torch").shared_latent(
        args.run, index=args.index, ts=tuple(args.t), k=args.k, seed=args.seed,
        use_ema=not args.no_ema, device=args.device)
    write_grid(args.out, grid.reshape(-1, *grid.shape[2:]),
                {"grid": grid, "t": np.asarray(args.t)}, ncols=grid.shape[1])
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    commands = {"bpd": _cmd_eval_bpd, "rate-distortion": _cmd_eval_rate_distortion,
                "fid": _cmd_eval_fid, "shared-latent": _cmd_eval_shared_latent}
    return commands[args.eval_command](args)
