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
``train_torch_eager``, ``train_jax``, ``train_torch_compiled``
    cifar10 training images/s of the real trainers (``ddpm_core.backends.<b>.api.train``,
    EMA, clipping and logging included) on random images, the median of the logged windows
    after the warm-up; MFU = images/s x FLOPs per image / the measured ceiling.
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
import atexit
import csv
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT = "GPUCHECK_RESULT "  # a part's stdout line carrying its (partial or final) result
STAGE_ENV = "GPUCHECK_STAGE"
TARGETS = {"train_mfu_min": 0.25, "jax_over_torch_max": 1.2, "sample_seconds_max": 13.0}
SMOKE_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")


@dataclass(frozen=True)
class Settings:
    """Sizes of every part; :data:`SMOKE` shrinks them for a CPU."""

    smoke: bool = False
    preset: str = "cifar10"
    batch: int = 128
    matmul_n: int = 8192
    matmul_reps: int = 30
    train_warmup: int = 10  # untimed steps (compilation happens here)
    train_steps: int = 30
    train_window: int = 10  # logged windows of this many steps; images/s is their median
    minimal_batch: int = 128  # bench_train's minimal loop (always cifar10 networks)
    minimal_steps: int = 10
    sample_n: int = 256
    sample_steps: int = 1000  # chain length; fewer is a respaced chain of T = 1000
    probe_steps: int = 20


SMOKE = Settings(smoke=True, preset="tiny", batch=8, matmul_n=256, matmul_reps=3, train_warmup=1,
                 train_steps=2, train_window=1, minimal_batch=1, minimal_steps=1, sample_n=4, sample_steps=10,
                 probe_steps=5)


# ----------------------------------------------------------------------------- the checkout


def package_dirs(root: Path) -> dict[str, Path]:
    """``[tool.setuptools] package-dir`` of ``root/pyproject.toml``: package -> absolute folder."""
    try:
        import tomllib
    except ImportError as e:  # Python 3.10
        raise RuntimeError("gpu_check reads pyproject.toml with tomllib: it needs Python >= 3.11") from e

    path = root / "pyproject.toml"
    with open(path, "rb") as f:
        mapping = tomllib.load(f).get("tool", {}).get("setuptools", {}).get("package-dir", {})
    if not mapping:
        raise ValueError(f"{path}: no [tool.setuptools] package-dir mapping to stage")
    out = {}
    for name, folder in mapping.items():
        src = (root / folder).resolve()
        if not name or not (src / "__init__.py").is_file():
            raise ValueError(f"{path}: package-dir maps {name!r} to {folder!r}, which is not a "
                             f"package folder of {root} (a non-empty name and an __init__.py needed)")
        out[name] = src
    return out


def stage_packages(mapping: dict[str, Path], stage: Path) -> None:
    """Lay the mapped packages out under ``stage`` (parents first) as symlinks to their files.

    ``ddpm_core.backends -> backends/`` becomes ``stage/ddpm_core/backends/<each entry>``.
    A folder of a parent that a mapping also names is replaced by the mapped one.
    """
    for name in sorted(mapping, key=lambda n: n.count(".")):
        dest = stage.joinpath(*name.split("."))
        if dest.is_symlink():
            dest.unlink()
        dest.mkdir(parents=True, exist_ok=True)
        for entry in mapping[name].iterdir():
            link = dest / entry.name
            if entry.name != "__pycache__" and not os.path.lexists(link):
                link.symlink_to(entry)


def unpack_wheels(folder: Path, target: Path) -> list[str]:
    """Unpack every pure-Python wheel (``*-none-any.whl``) of ``folder`` into ``target``."""
    names = []
    for wheel in sorted(folder.glob("*.whl")):
        if not wheel.name.endswith("-none-any.whl"):
            print(f"gpu_check: {wheel} is not a pure-Python wheel; left out", file=sys.stderr)
            continue
        with zipfile.ZipFile(wheel) as z:
            z.extractall(target)
        names.append(wheel.name)
    return names


def bootstrap() -> dict[str, str]:
    """Make the checkout (and ``.whl/``) importable here and in the parts; their environment.

    The first call stages into a new temporary folder (removed at exit) and records it in
    ``$GPUCHECK_STAGE``; a part finds it there and only fixes the order of ``sys.path``.
    """
    stage = os.environ.get(STAGE_ENV)
    if stage is None:
        stage = tempfile.mkdtemp(prefix="gpu_check-")
        atexit.register(shutil.rmtree, stage, ignore_errors=True)
        stage_packages(package_dirs(ROOT), Path(stage, "src"))
        if (ROOT / ".whl").is_dir():
            unpack_wheels(ROOT / ".whl", Path(stage, "wheels"))
        src, wheels = str(Path(stage, "src")), str(Path(stage, "wheels"))
        os.environ[STAGE_ENV] = stage
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (src, os.environ.get("PYTHONPATH"), wheels) if p)
    src, wheels = str(Path(stage, "src")), str(Path(stage, "wheels"))
    sys.path[:] = [src] + [p for p in sys.path if p not in (src, wheels)] + [wheels]
    importlib.invalidate_caches()
    return dict(os.environ)


# ----------------------------------------------------------------------------- parts (subprocess side)


def _median_seconds(fn: Callable[[], Any], reps: int, cuda: bool) -> float:
    """Median time of ``fn()`` over ``reps`` runs after 3 warm-ups (CUDA events on a GPU)."""
    import torch
    from bench_steps import _median_call

    for _ in range(3):
        fn()
    if not cuda:
        return _median_call(fn, reps)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(reps)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in events) / 1e3


def part_ceiling(st: Settings, limit_s: float) -> dict[str, Any]:
    """The matmul ceiling (bf16 on CUDA, float32 on a CPU), FLOPs per training image, versions."""
    import torch
    from bench_train import train_flops_per_image

    import ddpm_core

    cuda = torch.cuda.is_available()
    dev, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    g = torch.Generator(device=dev).manual_seed(0)
    a, b = (torch.randn(st.matmul_n, st.matmul_n, device=dev, dtype=dtype, generator=g)
            for _ in range(2))
    seconds = _median_seconds(lambda: a @ b, st.matmul_reps, cuda)
    return {"flops": 2 * st.matmul_n**3 / seconds, "median_s": seconds, "n": st.matmul_n,
            "reps": st.matmul_reps, "dtype": str(dtype).removeprefix("torch."),
            "flops_per_image": train_flops_per_image(st.preset), "preset": st.preset,
            "ddpm_core": str(Path(ddpm_core.__file__).parent), "device": _torch_device(cuda)}


def _torch_device(cuda: bool) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
                           "cpu_threads": torch.get_num_threads()}
    if cuda:
        p = torch.cuda.get_device_properties(0)
        out |= {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                "capability": f"{p.major}.{p.minor}"}
    else:
        out["name"] = f"CPU, {torch.get_num_threads()} threads"
    return out


class _Outcomes:
    """pytest plugin: counts outcomes and keeps each failure's last line."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.failures: list[dict[str, str]] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call":
            kind = report.outcome
        elif report.outcome != "passed":
            kind = "error" if report.outcome == "failed" else report.outcome
        else:
            return
        self.counts[kind] += 1
        if kind in ("failed", "error") and len(self.failures) < 20:
            lines = [ln for ln in str(report.longreprtext).splitlines() if ln.strip()]
            self.failures.append({"test": report.nodeid, "message": (lines or [""])[-1][:300]})


def part_cuda_tests(st: Settings, limit_s: float) -> dict[str, Any]:
    """``pytest -m cuda tests/cuda`` in this process; every test skips without CUDA."""
    import pytest

    os.environ.setdefault("DDPM_TEST_BACKENDS", "torch")
    counter = _Outcomes()
    code = pytest.main(["-m", "cuda", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "cuda")],
                       plugins=[counter])
    return {"exit_code": int(code), **{k: counter.counts[k] for k in ("passed", "failed", "error", "skipped")},
            "failures": counter.failures}


def _trainer_images_per_s(st: Settings, backend: str, compile: bool) -> dict[str, Any]:
    """Median images/s of the real trainer's logged windows after the warm-up steps."""
    from bench_train import _random_data

    from ddpm_core.runs import TrainOptions

    api = importlib.import_module(f"ddpm_core.backends.{backend}.api")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "run")
        api.train(TrainOptions(preset=st.preset, out=str(out), backend=backend, batch_size=st.batch,
                               steps=st.train_warmup + st.train_steps, data=_random_data(st.preset, Path(tmp)),
                               log_every=st.train_window, ckpt_every=0, sample_every=0, sample_n=1,
                               progress=False, compile=compile))
        with open(out / "log.csv", encoding="utf-8") as f:
            rates = [float(r["images_per_s"]) for r in csv.DictReader(f) if int(r["step"]) > st.train_warmup]
    return {"images_per_s": statistics.median(rates), "windows": len(rates), "batch": st.batch}


def part_train_torch_eager(st: Settings, limit_s: float) -> dict[str, Any]:
    return _trainer_images_per_s(st, "torch", compile=False)


def part_train_torch_compiled(st: Settings, limit_s: float) -> dict[str, Any]:
    return _trainer_images_per_s(st, "torch", compile=True)


def part_train_jax(st: Settings, limit_s: float) -> dict[str, Any]:
    import jax

    return _trainer_images_per_s(st, "jax", compile=False) | {"jax": _jax_device(jax)}


def _jax_device(jax: Any) -> dict[str, Any]:
    return {"jax": jax.__version__, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()]}


def part_train_diffusers(st: Settings, limit_s: float) -> dict[str, Any]:
    """Ours and diffusers' UNet2DModel in ``bench_train``'s minimal loop (cifar10 shapes)."""
    import torch
    from bench_train import unet2d_comparison

    got = unet2d_comparison(st.minimal_batch, st.minimal_steps, "cuda" if torch.cuda.is_available() else "cpu")
    if got is None:
        raise ImportError("diffusers' UNet2DModel does not import")
    return {"images_per_s": got["diffusers"], "ours_images_per_s": got["ours"],
            "params": int(got["diffusers_params"]), "ours_params": int(got["ours_params"]),
            "batch": st.minimal_batch}


VARIANTS = ("bf16_gn-nchw", "bf16_gn-channels_last", "float32_gn-nchw", "float32_gn-channels_last",
            "bf16_gn-nchw-cudnn_benchmark", "bf16_gn-channels_last-cudnn_benchmark")


def part_variants(st: Settings, limit_s: float) -> dict[str, Any]:
    """Our U-Net's layout and GroupNorm precision, side by side (bf16 autocast on CUDA).

    For each of ``VARIANTS`` (the U-Net's bf16-keeping ``GroupNorm`` or plain
    ``nn.GroupNorm``, which autocast runs in float32; NCHW or channels_last weights and
    inputs; the last two with ``torch.backends.cudnn.benchmark``): training images/s in
    ``bench_train``'s minimal loop (batch ``minimal_batch``) and forward images/s without
    gradients (batch ``sample_n``, a sampling step's call).
    """
    import torch
    from bench_train import _minimal_loop_images_per_s
    from torch import nn

    from ddpm_core.backends.torch.unet import GroupNorm, build_unet

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out: dict[str, Any] = {"train_batch": st.minimal_batch, "forward_batch": st.sample_n}
    # an untimed loop first, so that no variant pays for the process's first use of cuDNN
    # (without it, the first variant measured 1,407 images/s on an H100 against 1,952-2,191
    # for the others; whether that was warm-up or the variant is for the next run to say)
    warm = build_unet(st.preset)
    _minimal_loop_images_per_s(warm.to(device), lambda n, x, t: n(x, t), st.minimal_batch, 3, device,
                               _image_shape(warm))
    for name in VARIANTS:
        norm, layout, *rest = name.split("-")
        torch.backends.cudnn.benchmark = rest == ["cudnn_benchmark"]
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        torch.manual_seed(0)
        net = build_unet(st.preset)
        if norm == "float32_gn":
            for m in net.modules():
                if isinstance(m, GroupNorm):
                    m.__class__ = nn.GroupNorm
        net = net.to(device, memory_format=fmt)
        out[f"train_{name}"] = _minimal_loop_images_per_s(
            net, lambda n, x, t, fmt=fmt: n(x.contiguous(memory_format=fmt), t),
            st.minimal_batch, st.minimal_steps, device, _image_shape(net))
        out[f"forward_{name}"] = _forward_images_per_s(net, fmt, st.sample_n, device)
        _emit({"status": "partial"} | out)
    return out


def _image_shape(net: Any) -> tuple[int, int, int]:
    c = net.config
    return c.in_channels, c.image_size, c.image_size


def _forward_images_per_s(net: Any, fmt: Any, n: int, device: str, reps: int = 5) -> float:
    """Median images/s of one no-grad forward call of a batch of ``n`` (bf16 autocast on CUDA)."""
    import torch

    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(n, *_image_shape(net), generator=g, device=device)
    x = x.contiguous(memory_format=fmt)
    t = torch.randint(0, 1000, (n,), generator=g, device=device)
    net.eval()
    times = []
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda"):
        for i in range(reps + 2):
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            net(x, t)
            if device == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def _chain_steps(st: Settings, steps: int) -> int | None:
    """``steps`` for ``chain_schedule``: None is the full T = 1000 chain."""
    return None if steps == 1000 else steps


def _check_finite(images: Any) -> None:
    import numpy as np

    if not np.isfinite(np.asarray(images)).all():
        raise FloatingPointError("the sampled images are not all finite")


def _timed_chain(st: Settings, limit_s: float, run: Callable[[int | None], Any]) -> dict[str, Any]:
    """Seconds of ``run`` (one chain of ``sample_n`` images) at full length, probed first.

    Two probe chains of ``probe_steps`` steps warm up (allocation, autotuning, capture) and
    time a step; the full chain runs if the time left allows it, else it is extrapolated.
    """
    start = time.perf_counter()
    for _ in range(2):
        t0 = time.perf_counter()
        run(_chain_steps(st, st.probe_steps))
        probe = time.perf_counter() - t0
    estimate = probe * st.sample_steps / st.probe_steps
    out = {"n": st.sample_n, "steps": st.sample_steps, "step_s": probe / st.probe_steps}
    _emit({"status": "partial", "seconds": estimate, "extrapolated": True} | out)
    if estimate > 0.9 * (limit_s - (time.perf_counter() - start)):
        return out | {"seconds": estimate, "extrapolated": True}
    t0 = time.perf_counter()
    _check_finite(run(_chain_steps(st, st.sample_steps)))
    seconds = time.perf_counter() - t0
    return out | {"seconds": seconds, "extrapolated": False, "step_s": seconds / st.sample_steps}


def _sample_torch(st: Settings, limit_s: float, cuda_graph: bool, compile: bool = False) -> dict[str, Any]:
    import torch

    import ddpm_core as dc
    from ddpm_core.backends.torch.sampling import generate
    from ddpm_core.backends.torch.unet import build_unet

    torch.manual_seed(0)
    net = build_unet(st.preset).to("cuda" if torch.cuda.is_available() else "cpu")
    schedule = dc.Schedule.linear(1000)
    return _timed_chain(st, limit_s, lambda steps: generate(
        net, schedule, n=st.sample_n, steps=steps, seed=0, cuda_graph=cuda_graph, compile=compile))


def part_sample_torch_eager(st: Settings, limit_s: float) -> dict[str, Any]:
    return _sample_torch(st, limit_s, cuda_graph=False)


def part_sample_torch_graph(st: Settings, limit_s: float) -> dict[str, Any]:
    return _sample_torch(st, limit_s, cuda_graph=True)


def part_sample_torch_compiled(st: Settings, limit_s: float) -> dict[str, Any]:
    return _sample_torch(st, limit_s, cuda_graph=False, compile=True)


def part_sample_jax_scan(st: Settings, limit_s: float) -> dict[str, Any]:
    """The JAX ``Sampler``: one ``lax.scan`` per chain length, compiled on its first call."""
    import jax
    import jax.numpy as jnp

    import ddpm_core as dc
    from ddpm_core.backends.jax.sampling import Chain, Sampler
    from ddpm_core.backends.jax.unet import build_unet, init_params
    from ddpm_core.runs import chain_schedule

    dtype = jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
    net = build_unet(st.preset, dtype=dtype)
    params = init_params(net, jax.random.key(0))
    c = net.config
    samplers: dict[int | None, Sampler] = {}

    def run(steps: int | None) -> Any:
        if steps not in samplers:
            chain = Chain(chain_schedule(dc.Schedule.linear(1000), "ddpm", steps), clip=True)
            samplers[steps] = Sampler(lambda p, x, t: net.apply({"params": p}, x, t), chain,
                                      (c.in_channels, c.image_size, c.image_size))
        return samplers[steps].generate(params, n=st.sample_n, seed=0)[0]

    start = time.perf_counter()
    steps = _chain_steps(st, st.sample_steps)
    out = {"n": st.sample_n, "steps": st.sample_steps, "jax": _jax_device(jax)}
    run(steps)  # compiles the chain's scan and runs it once
    first = time.perf_counter() - start
    _emit({"status": "partial", "seconds": first, "includes_compile": True} | out)
    if first > 0.9 * (limit_s - first):
        return out | {"seconds": first, "includes_compile": True}
    t0 = time.perf_counter()
    _check_finite(run(steps))
    seconds = time.perf_counter() - t0
    return out | {"seconds": seconds, "includes_compile": False, "compile_s": max(first - seconds, 0.0),
                  "step_s": seconds / st.sample_steps}


@dataclass(frozen=True)
class Part:
    """A part: its function ``(settings, seconds allowed) -> measured fields`` and limits."""

    run: Callable[[Settings, float], dict[str, Any]]
    title: str
    cap_s: float  # at most this many seconds, whatever the budget left
    needs: tuple[str, ...] = ()  # modules that must be importable, else the part is skipped
    cuda_only: str = ""  # why the part cannot run without CUDA ("" if it can)
    not_smoke: str = ""  # why --smoke leaves the part out ("" if it runs)


# In the order they run, within the budget: the ceiling (MFU needs it) and the tests first,
# diffusers' reference last. Typical H100 seconds, compilation included: 10, 60-90, 25, 20,
# 100-150, 60-80, 20, 20, 60, 30, 90.
PARTS: dict[str, Part] = {
    "ceiling": Part(part_ceiling, "matmul ceiling", 60, ("torch",)),
    "cuda_tests": Part(part_cuda_tests, "CUDA tests (pytest -m cuda)", 150, ("torch", "pytest", "hypothesis")),
    "train_torch_eager": Part(part_train_torch_eager, "train, PyTorch eager", 90, ("torch",)),
    "variants": Part(part_variants, "layout and GroupNorm precision: images/s (train / forward)", 60,
                     ("torch",)),
    "train_torch_compiled": Part(part_train_torch_compiled, "train, PyTorch compiled", 180, ("torch",),
                                 "the trainer compiles only on CUDA (on a CPU this would time eager again)"),
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
TRAIN_PARTS = ("train_torch_eager", "train_torch_compiled", "train_jax")
SAMPLE_PARTS = ("sample_torch_eager", "sample_torch_graph", "sample_jax_scan", "sample_torch_compiled")


def _emit(result: dict[str, Any]) -> None:
    print(RESULT + json.dumps(result), flush=True)


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
    torch_best = max((_ok(parts, n).get("images_per_s", 0.0) for n in TRAIN_PARTS[:2]), default=0.0)
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
