"""The structure of the paper's Table 2 at small scale: objective and parameterisation
ablation on the embedded MNIST data, equal training budget per row.

Rows (Ho et al. 2020, Table 2):

1. eps-prediction, L_simple (eq. 14), fixed variance      (the paper's choice)
2. eps-prediction, the true bound L (eq. 5), fixed variance
3. mean-prediction (mu~), the true bound, fixed variance
4. learned variance (Nichol & Dhariwal's ``learned_range``), hybrid loss

Every row trains the same preset for the same number of steps and seed with the PyTorch
backend, then reports FID and KID of ``--fid-n`` DDIM/DDPM samples against the training
split (with the held-out floor), and the bound in bits/dim on ``--bpd-n`` held-out images
(all T terms). Prints a Markdown table and writes it to ``<root>/ablation.md``.

    python benchmarks/ablation.py --root runs/ablation --steps 2000 [--fid-n 500] [--bpd-n 100]

Too long for CI (hours on a 2-core CPU at the defaults); ``--preset tiny --steps 2
--fid-n 0 --bpd-n 1`` is a smoke run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

ROWS = (
    ("eps, L_simple, fixed", {"prediction": "eps", "loss": "simple", "variance": "fixed_small"}),
    ("eps, true bound, fixed", {"prediction": "eps", "loss": "vlb", "variance": "fixed_small"}),
    ("mean, true bound, fixed", {"prediction": "mean", "loss": "vlb",
                                 "variance": "fixed_small"}),
    ("eps, hybrid, learned", {"prediction": "eps", "loss": "hybrid",
                              "variance": "learned_range"}),
)


def run_row(name: str, settings: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """Train one row (or reuse a finished run) and evaluate it."""
    from ddpm_core.app.evaluation.fid import fid_report
    from ddpm_core.app.run.atomic import atomic_write_json
    from ddpm_core.app.run.options import TrainOptions
    from ddpm_core.app.run.rundir import RunPaths, read_run_json, train_seconds
    from ddpm_core.backends.torch import api
    from ddpm_core.backends.torch import evaluation as te

    out = Path(args.root) / name.replace(", ", "-").replace(" ", "_")
    done = RunPaths.of(out).run_json.is_file() and read_run_json(out)["step"] >= args.steps
    evaluated = out / "ablation-row.json"
    wanted = {k: getattr(args, k) for k in ("steps", "seed", "fid_n", "bpd_n", "sampler",
                                             "sample_steps", "reference_n")}
    if done and evaluated.is_file():
        previous = json.loads(evaluated.read_text(encoding="utf-8"))
        if previous.get("eval") == wanted:  # already measured with these settings
            return previous["row"]
    row: dict[str, Any] = {"row": name, **settings}
    if not done:
        summary = api.train(TrainOptions(
            preset=args.preset, out=str(out), steps=args.steps, seed=args.seed,
            resume=RunPaths.of(out).run_json.is_file(), sample_n=args.sample_n,
            progress=False, **settings))
        row["train_s"] = summary["seconds"]
    if args.bpd_n:
        r = te.bpd(out, n=args.bpd_n, batch_size=args.batch_size, seed=args.seed)
        row["bpd"] = r["bpd"]
    if args.fid_n:
        images = api.sample(out, n=args.fid_n, sampler=args.sampler, steps=args.sample_steps,
                            seed=args.seed, batch_size=args.batch_size)
        fid = fid_report(out, images, reference_n=args.reference_n,
                                    cache_dir=Path(args.root) / "fid-cache")
        row.update({k: fid[k] for k in ("fid", "kid", "kid_std", "floor_fid", "floor_kid")})
    if "train_s" not in row:  # trained earlier (or resumed): the run's own record
        row["train_s"] = train_seconds(out)
    atomic_write_json(evaluated, {"eval": wanted, "row": row})
    return row


def _fmt(value: Any, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the rows (missing metrics as '-')."""
    lines = ["| objective | FID | floor FID | KID x 1e3 | floor KID x 1e3 | bits/dim | train s |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        kid, floor_kid = (None if r.get(k) is None else 1e3 * r[k] for k in ("kid", "floor_kid"))
        lines.append(f"| {r['row']} | {_fmt(r.get('fid'), 2)} | {_fmt(r.get('floor_fid'), 2)} | "
                     f"{_fmt(kid, 2)} | {_fmt(floor_kid, 2)} | {_fmt(r.get('bpd'), 3)} | "
                     f"{_fmt(r.get('train_s'), 0)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from ddpm_core.app.run.atomic import atomic_write_bytes

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="runs/ablation")
    p.add_argument("--preset", default="mnist")
    p.add_argument("--steps", type=int, default=2000, help="equal budget per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fid-n", type=int, default=500, help="0: no FID/KID")
    p.add_argument("--reference-n", type=int, default=None)
    p.add_argument("--bpd-n", type=int, default=100, help="0: no bits/dim")
    p.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddim")
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--sample-n", type=int, default=16, help="images in the final grid")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--rows", default="1,2,3,4", help="comma list of row numbers")
    args = p.parse_args(argv)
    picked = [ROWS[int(i) - 1] for i in args.rows.split(",")]
    rows = []
    for name, settings in picked:
        start = time.perf_counter()
        rows.append(run_row(name, settings, args))
        rows[-1]["total_s"] = time.perf_counter() - start
        print(json.dumps(rows[-1]), flush=True)
    table = markdown(rows)
    Path(args.root).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(args.root) / "ablation.md", (table + "\n").encode())
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
