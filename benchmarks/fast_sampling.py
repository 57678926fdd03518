"""Sample quality against network calls: every sampler of one trained run, side by side.

For each ``--chains`` entry (``CHAINS``: a sampler and its options, as ``ddpm sample`` flags
would give them) and each ``--calls`` count K, ``--fid-n`` samples of the run (the same
seeds for every chain) are graded by FID and KID against the same reference and held-out
floor as docs/results.md (``ddpm eval fid``), and the wall time of ``--time-n`` samples
is measured alone. The ancestral chain at K calls is the respaced one (improved DDPM).

    python benchmarks/fast_sampling.py --run runs/mnist --out runs/fast-sampling \\
        [--chains ddpm,ddim,dpmpp-2m,dpmpp-2m-sde] [--calls 5,10,20,50,100] [--fid-n 500]

Writes ``<out>/fast-sampling.md`` (the table) and ``<out>/fast-sampling.png`` (FID against
network calls, one line per chain). Resumable: each measurement is written atomically under
``<out>/evals/`` and reused while its settings are unchanged. Tens of minutes on a 2-core
CPU for the mnist demo; not in CI.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

CHAINS: dict[str, dict[str, Any]] = {  # name: the driver's chain keywords (``sample(..., **kw)``)
    "ddpm": {"sampler": "ddpm"},
    "ddim": {"sampler": "ddim", "ddim_eps": "clipped"},  # eps re-derived from the clipped x0_hat
    "ddim-network-eps": {"sampler": "ddim", "ddim_eps": "network"},  # diffusers' convention
    "dpmpp-2m": {"sampler": "dpmpp-2m"},
    "dpmpp-2m-sde": {"sampler": "dpmpp-2m-sde"},
}


def _list(parse: Any, allowed: dict[str, Any] | None = None) -> Any:
    def read(text: str) -> list[Any]:
        try:
            values = [parse(s.strip()) for s in text.split(",") if s.strip()]
        except ValueError:
            values = []
        bad = [v for v in values if allowed is not None and v not in allowed]
        if not values or bad or (allowed is None and min(values) < 1):
            what = f"names from {', '.join(allowed)}" if allowed else "integers >= 1"
            raise argparse.ArgumentTypeError(f"expected a comma list of {what}; got {text!r}")
        return values
    return read


def measure(args: argparse.Namespace, chain: str, calls: int) -> dict[str, Any]:
    """FID/KID of ``--fid-n`` samples and the seconds of ``--time-n`` samples of one chain at
    ``calls`` network calls (``evals/<chain>-<calls>.json``, reused while unchanged)."""
    from ddpm_core.app.cli.backends import load_backend
    from ddpm_core.app.evaluation.fid import fid_report
    from ddpm_core.app.run.atomic import atomic_write_json
    from ddpm_core.app.run.rundir import read_run_json

    info = read_run_json(args.run)
    backend = args.backend or info["backend"]
    kw = {**CHAINS[chain], "steps": calls, "spacing": args.spacing}
    wanted = {"step": info["step"], "backend": backend, "chain": kw, "fid_n": args.fid_n,
              "time_n": args.time_n, "seed": args.seed, "reference_n": args.reference_n}
    path = Path(args.out) / "evals" / f"{backend}-{chain}-{calls}.json"
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous.get("eval") == wanted:
            return previous["row"]
    api = load_backend(backend)
    images = api.sample(args.run, n=args.fid_n, seed=args.seed, batch_size=args.batch_size,
                        progress=True, **kw)
    fid = fid_report(args.run, images, reference_n=args.reference_n, cache_dir=args.cache_dir,
                     progress=True)
    api.sample(args.run, n=min(args.time_n, 8), seed=args.seed, **kw)  # warm-up (compilation)
    start = time.perf_counter()
    api.sample(args.run, n=args.time_n, seed=args.seed, batch_size=args.batch_size, **kw)
    seconds = time.perf_counter() - start
    row = {"backend": backend, "chain": chain, "calls": calls, "time_s": round(seconds, 2),
           **{k: fid[k] for k in ("fid", "kid", "kid_std", "floor_fid", "floor_kid", "n")},
           "floor_n": fid.get("floor_n", fid["n"])}
    atomic_write_json(path, {"eval": wanted, "row": row})
    return row


def markdown(rows: list[dict[str, Any]], time_n: int) -> str:
    """One row per (chain, calls): FID, KID, FID / floor and the seconds of ``time_n`` samples."""
    lines = [f"| backend | chain | network calls | FID | KID x 1e3 | FID / floor | s for {time_n} samples |",
             "|" + "---|" * 7]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['chain']} | {r['calls']} | {r['fid']:.2f} | {1e3 * r['kid']:.2f} | "
                     f"{r['fid'] / r['floor_fid']:.2f} | {r['time_s']:.1f} |")
    if rows:
        r = rows[0]
        lines += ["", f"N = {r['n']}; held-out floor (N = {r['floor_n']}): FID {r['floor_fid']:.2f}, "
                      f"KID x 1e3 {1e3 * r['floor_kid']:.2f}."]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]]) -> bytes:
    """FID against network calls (log scale), one line per (backend, chain), as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8))
    ax = fig.add_subplot(1, 1, 1)
    lines: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        lines.setdefault((r["backend"], r["chain"]), []).append(r)
    for (backend, chain), rs in lines.items():
        rs = sorted(rs, key=lambda r: r["calls"])
        ax.plot([r["calls"] for r in rs], [r["fid"] for r in rs], "o-", label=f"{chain} ({backend})")
    ax.axhline(rows[0]["floor_fid"], color="gray", linestyle="--", label="held-out floor")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("network calls")
    ax.set_ylabel(f"FID ({rows[0]['n']} samples)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    return out.getvalue()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from ddpm_core.respacing import SPACINGS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a trained run directory (README's demo: runs/mnist)")
    p.add_argument("--out", default="runs/fast-sampling")
    p.add_argument("--backend", choices=("torch", "jax"), help="default: the run's")
    p.add_argument("--chains", type=_list(str, CHAINS), default=list(CHAINS))
    p.add_argument("--calls", type=_list(int), default=[5, 10, 20, 50, 100])
    p.add_argument("--spacing", choices=SPACINGS, help="default: each sampler's own")
    p.add_argument("--fid-n", type=int, default=500)
    p.add_argument("--time-n", type=int, default=64)
    p.add_argument("--reference-n", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None, help="sampling batch size")
    p.add_argument("--cache-dir", default=None, help="FID reference features (default <out>/fid-cache)")
    args = p.parse_args(argv)
    if args.fid_n < 2 or args.time_n < 1:
        p.error(f"--fid-n must be >= 2 and --time-n >= 1; got {args.fid_n} and {args.time_n}")
    if args.cache_dir is None:
        args.cache_dir = str(Path(args.out) / "fid-cache")
    return args


def main(argv: list[str] | None = None) -> int:
    from ddpm_core.app.run.atomic import atomic_write_bytes

    args = parse_args(argv)
    rows = [measure(args, chain, calls) for chain in args.chains for calls in args.calls]
    table = markdown(rows, args.time_n)
    atomic_write_bytes(Path(args.out) / "fast-sampling.md", (table + "\n").encode())
    atomic_write_bytes(Path(args.out) / "fast-sampling.png", plot(rows))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
