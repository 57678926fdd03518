"""Sample quality per CPU minute: training recipes and samplers at the demo's budget.

Every recipe (``CONFIGS``: the preset's overrides, as ``ddpm train`` flags would give them;
``baseline`` is the preset as it is, ``lr1e-3`` the mnist preset's recipe before this sweep
made it 2e-3) trains for the same wall-clock budget as today's demo: ``--budget-steps``
steps of the baseline recipe. A recipe that changes the work per step (width, depth, batch) gets
``budget_steps * cost(baseline) / cost(recipe)`` steps, with the costs measured side by
side in this process at the start (``calibration.json``, kept). Each (recipe, seed,
backend) run is then sampled with every ``--samplers`` entry and graded by FID and KID
against the same reference and floor as docs/results.md (``ddpm eval fid``).

    python benchmarks/quality.py --root runs/quality --configs baseline,min-snr,cosine \\
        [--seeds 0,1] [--backends torch,jax] [--samplers ddim100,ddpm1000] [--fid-n 500]

``--curve RECIPE --curve-minutes 1,2,5,10,20`` trains one recipe on (resuming the same
run from point to point) and grades it after each number of minutes of training at the
calibrated speed: ``curve.md`` and ``curve.png``.

Resumable: runs are ordinary run directories (resumed if interrupted; checkpoints every
``--ckpt-every`` steps) and every measurement is written atomically under ``evals/`` and
reused while its settings are unchanged. Writes ``<root>/quality.md``. Hours on a 2-core
CPU; not in CI (``nox -s quality``). Run two sweeps side by side with
``OMP_NUM_THREADS=1`` each: the step costs are ratios, measured in the same conditions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

CONFIGS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "min-snr": {"weighting": "min_snr"},
    "cosine": {"schedule": "cosine"},
    "v": {"prediction": "v"},
    "v-min-snr": {"prediction": "v", "weighting": "min_snr"},
    "lr2e-3": {"lr": 2e-3},
    "lr1e-3": {"lr": 1e-3},
    "lr5e-4": {"lr": 5e-4},
    "ema0.999": {"ema_decay": 0.999},
    "ema0.99": {"ema_decay": 0.99},
    "batch32": {"batch_size": 32},
    "batch128": {"batch_size": 128},
    "ch24": {"ch": 24},
    "ch32": {"ch": 32},
    "res2": {"num_res_blocks": 2},
}
COST_KEYS = ("ch", "num_res_blocks", "batch_size")  # the overrides that change a step's work
SAMPLERS: dict[str, tuple[str, int | None, float]] = {  # name: (sampler, steps, eta)
    "ddim50": ("ddim", 50, 0.0),
    "ddim100": ("ddim", 100, 0.0),
    "ddim250": ("ddim", 250, 0.0),
    "ddim100-eta1": ("ddim", 100, 1.0),
    "ddpm100": ("ddpm", 100, 0.0),
    "ddpm250": ("ddpm", 250, 0.0),
    "ddpm1000": ("ddpm", None, 0.0),
    "dpmpp-2m10": ("dpmpp-2m", 10, 0.0),
    "dpmpp-2m20": ("dpmpp-2m", 20, 0.0),
    "dpmpp-2m-sde20": ("dpmpp-2m-sde", 20, 0.0),
}


def _names(kind: str, table: dict[str, Any]) -> Any:
    def parse(text: str) -> list[str]:
        names = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in names if s not in table]
        if not names or bad:
            raise argparse.ArgumentTypeError(f"unknown {kind} {bad or text!r}; choose from "
                                             f"{', '.join(table)}")
        return names
    return parse


def _ints(text: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers >= 0; got {text!r}")
    return values


def _minutes(text: str) -> list[float]:
    try:
        values = sorted(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        values = []
    if not values or values[0] <= 0:
        raise argparse.ArgumentTypeError(f"expected a comma list of minutes > 0; got {text!r}")
    return values


def _train(args: argparse.Namespace, config: str, backend: str, seed: int, out: Path,
           steps: int, **extra: Any) -> None:
    """Train (or resume, or leave alone if done) the run ``out`` to ``steps`` steps."""
    from ddpm_core.app.cli.backends import load_backend
    from ddpm_core.app.run.options import TrainOptions
    from ddpm_core.app.run.rundir import RunPaths, read_run_json

    exists = RunPaths.of(out).run_json.is_file()
    if exists and read_run_json(out)["step"] >= steps:
        return
    given = {"sample_n": args.sample_n, **extra}
    if not exists:
        given = {"ckpt_every": args.ckpt_every, **CONFIGS[config], **given}
    load_backend(backend).train(TrainOptions(
        preset=args.preset, out=str(out), backend=backend, steps=steps, seed=seed,
        resume=exists, progress=False, **given))


def step_seconds(run: Path) -> float:
    """Median seconds per step of a run's logged windows after the first (warm-up, compile)."""
    import csv

    with open(run / "log.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    per = [float(r["seconds"]) / (b - a) for r, a, b in zip(rows[1:], steps, steps[1:],
                                                             strict=False)]
    return statistics.median(per) if per else float(rows[-1]["seconds"]) / steps[-1]


def calibrate(args: argparse.Namespace, configs: list[str], backend: str) -> dict[str, float]:
    """Seconds per step of each recipe on ``backend``, measured here and stored."""
    from ddpm_core.app.run.atomic import atomic_write_json

    path = Path(args.root) / "calibration.json"
    stored = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    key = f"{args.preset}/{backend}/{args.calib_steps}"
    costs = stored.get(key, {})
    for config in ["baseline", *configs]:
        if config in costs:
            continue
        out = Path(args.root) / "calibration" / f"{config}-{backend}"
        n = args.calib_steps
        _train(args, config, backend, 0, out, 5 * n, log_every=n, sample_n=1)
        costs[config] = step_seconds(out)
        stored[key] = costs
        atomic_write_json(path, stored)
    return costs


def _changes_cost(config: str) -> bool:
    return any(k in CONFIGS[config] for k in COST_KEYS)


def budget_steps(args: argparse.Namespace, config: str, costs: dict[str, float]) -> int:
    """The recipe's steps in the baseline's ``--budget-steps`` wall-clock budget."""
    if not _changes_cost(config):
        return args.budget_steps
    return max(1, round(args.budget_steps * costs["baseline"] / costs[config]))


def evaluate(args: argparse.Namespace, run: Path, sampler: str, tag: dict[str, Any],
             name: str | None = None) -> dict[str, Any]:
    """FID and KID of ``--fid-n`` samples of ``run`` with ``sampler``, stored as
    ``evals/<name>-<sampler>.json`` (``name`` defaults to the run's) and reused."""
    from ddpm_core.app.cli.backends import load_backend
    from ddpm_core.app.evaluation.fid import fid_report
    from ddpm_core.app.run.atomic import atomic_write_json
    from ddpm_core.app.run.rundir import read_run_json, train_seconds

    info = read_run_json(run)
    kind, steps, eta = SAMPLERS[sampler]
    wanted = {"step": info["step"], "sampler": sampler, "fid_n": args.fid_n,
              "eval_seed": args.eval_seed, "reference_n": args.reference_n}
    path = Path(args.root) / "evals" / f"{name or run.name}-{sampler}.json"
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous.get("eval") == wanted:  # the same grade; the caller's labels (minutes)
            return {**previous["row"], **tag}
    start = time.perf_counter()
    images = load_backend(info["backend"]).sample(
        run, n=args.fid_n, sampler=kind, steps=steps, eta=eta, seed=args.eval_seed,
        batch_size=args.batch_size, progress=True)
    sample_s = time.perf_counter() - start
    fid = fid_report(run, images, reference_n=args.reference_n, cache_dir=args.cache_dir,
                     progress=True)
    row = {**tag, "steps": info["step"], "sampler": sampler, "sample_s": round(sample_s, 1),
           "train_s": round(train_seconds(run) or 0.0, 1),
           **{k: fid[k] for k in ("fid", "kid", "kid_std", "floor_fid", "floor_kid", "n")},
           "floor_n": fid.get("floor_n", fid["n"])}  # fewer where the held-out split is
    atomic_write_json(path, {"eval": wanted, "row": row})
    return row


def sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for backend in args.backends:
        costs = calibrate(args, [c for c in args.configs if _changes_cost(c)], backend)
        for config in args.configs:
            steps = budget_steps(args, config, costs)
            for seed in args.seeds:
                run = Path(args.root) / "runs" / f"{config}-{backend}-s{seed}"
                _train(args, config, backend, seed, run, steps)
                for sampler in args.samplers:
                    tag = {"config": config, "backend": backend, "seed": seed}
                    rows.append(evaluate(args, run, sampler, tag))
                    print(json.dumps(rows[-1]), flush=True)
    return rows


def curve(args: argparse.Namespace) -> list[dict[str, Any]]:
    """FID after each of ``--curve-minutes`` of training at the calibrated speed."""
    backend, config = args.backends[0], args.curve
    per_step = calibrate(args, [config], backend)[config]
    run = Path(args.root) / "curve" / f"{config}-{backend}-s{args.seeds[0]}"
    rows = []
    for minutes in args.curve_minutes:
        steps = max(1, round(60 * minutes / per_step))
        _train(args, config, backend, args.seeds[0], run, steps)
        tag = {"config": config, "backend": backend, "seed": args.seeds[0], "minutes": minutes}
        # the sweep's run of the same recipe and seed has the same name: keep apart
        rows.append(evaluate(args, run, args.samplers[0], tag, name=f"curve-{run.name}-{steps}"))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(rows: list[dict[str, Any]]) -> str:
    """Rows ranked by FID, then the mean over seeds of each (recipe, backend, sampler)."""
    head = ("| recipe | backend | seed | steps | sampler | FID | KID x 1e3 | FID / floor | "
            "train s | sample s |")
    lines = [head, "|" + "---|" * 10]
    for r in sorted(rows, key=lambda r: r["fid"]):
        lines.append(f"| {r['config']} | {r['backend']} | {r['seed']} | {r['steps']} | "
                     f"{r['sampler']} | {r['fid']:.2f} | {1e3 * r['kid']:.2f} | "
                     f"{r['fid'] / r['floor_fid']:.2f} | {r['train_s']:.0f} | "
                     f"{r['sample_s']:.0f} |")
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["config"], r["backend"], r["sampler"]), []).append(r)
    lines += ["", "| recipe | backend | sampler | seeds | mean FID | FID std | mean KID x 1e3 |",
              "|" + "---|" * 7]
    for (config, backend, sampler), rs in sorted(
            groups.items(), key=lambda kv: statistics.mean(r["fid"] for r in kv[1])):
        fids = [r["fid"] for r in rs]
        std = statistics.stdev(fids) if len(fids) > 1 else None
        lines.append(f"| {config} | {backend} | {sampler} | {len(rs)} | "
                     f"{statistics.mean(fids):.2f} | {_fmt(std, '.2f')} | "
                     f"{1e3 * statistics.mean(r['kid'] for r in rs):.2f} |")
    if rows:
        r = rows[0]
        lines += ["", f"Held-out floor (N = {r.get('floor_n', r['n'])}): FID {r['floor_fid']:.2f}, "
                      f"KID x 1e3 {1e3 * r['floor_kid']:.2f}."]
    return "\n".join(lines)


def curve_markdown(rows: list[dict[str, Any]]) -> str:
    """The FID-vs-time table: minutes, steps, FID, KID, and the floor."""
    lines = ["| minutes of training | steps | FID | KID x 1e3 | FID / floor |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['minutes']:g} | {r['steps']} | {r['fid']:.2f} | "
                     f"{1e3 * r['kid']:.2f} | {r['fid'] / r['floor_fid']:.2f} |")
    r = rows[0]
    lines += ["", f"{r['config']} on {r['backend']}, seed {r['seed']}, {r['sampler']}; held-out "
                  f"floor (N = {r.get('floor_n', r['n'])}): FID {r['floor_fid']:.2f}, KID x 1e3 "
                  f"{1e3 * r['floor_kid']:.2f}."]
    return "\n".join(lines)


def curve_png(rows: list[dict[str, Any]]) -> bytes:
    """FID (and the floor) against minutes of training, as PNG bytes."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.4))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([r["minutes"] for r in rows], [r["fid"] for r in rows], "o-", label="model")
    ax.axhline(rows[0]["floor_fid"], color="gray", linestyle="--", label="held-out floor")
    ax.set_xscale("log")
    ax.set_xlabel("minutes of training (calibrated speed)")
    ax.set_ylabel(f"FID ({rows[0]['n']} samples)")
    ax.legend()
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    return out.getvalue()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="runs/quality")
    p.add_argument("--preset", default="mnist")
    p.add_argument("--configs", type=_names("recipe", CONFIGS), default=["baseline"])
    p.add_argument("--seeds", type=_ints, default=[0])
    p.add_argument("--backends", type=_names("backend", {"torch": 0, "jax": 0}),
                   default=["torch"])
    p.add_argument("--samplers", type=_names("sampler", SAMPLERS), default=["ddim100"])
    p.add_argument("--budget-steps", type=int, default=2000,
                   help="the budget, in steps of the baseline recipe (the demo's 2,000)")
    p.add_argument("--calib-steps", type=int, default=10,
                   help="steps per timed window (5 windows, the first not counted)")
    p.add_argument("--fid-n", type=int, default=500)
    p.add_argument("--reference-n", type=int, default=None)
    p.add_argument("--eval-seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None, help="sampling batch size")
    p.add_argument("--sample-n", type=int, default=16, help="images in each run's final grid")
    p.add_argument("--ckpt-every", type=int, default=500)
    p.add_argument("--curve", choices=list(CONFIGS), help="recipe of the FID-vs-time curve")
    p.add_argument("--curve-minutes", type=_minutes, default=_minutes("1,2,5,10,20"))
    p.add_argument("--cache-dir", default=None,
                   help="FID reference features (default <root>/fid-cache)")
    args = p.parse_args(argv)
    for name in ("budget_steps", "calib_steps", "fid_n", "ckpt_every"):
        if getattr(args, name) < (2 if name == "fid_n" else 1):
            p.error(f"--{name.replace('_', '-')} must be >= {2 if name == 'fid_n' else 1}; "
                    f"got {getattr(args, name)}")
    if args.cache_dir is None:
        args.cache_dir = str(Path(args.root) / "fid-cache")
    return args


def main(argv: list[str] | None = None) -> int:
    from ddpm_core.app.run.atomic import atomic_write_bytes

    args = parse_args(argv)
    root = Path(args.root)
    if args.curve:
        rows = curve(args)
        table = curve_markdown(rows)
        atomic_write_bytes(root / "curve.md", (table + "\n").encode())
        atomic_write_bytes(root / "curve.png", curve_png(rows))
    else:
        table = markdown(sweep(args))
        atomic_write_bytes(root / "quality.md", (table + "\n").encode())
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
