"""The parts of ``benchmarks/gpu_check.py`` that measure the device and training: the matmul
ceiling, the CUDA tests, the real trainers' images/s, diffusers' U-Net, and the U-Net's
layout and GroupNorm variants (each runs in a subprocess of its own)."""

from __future__ import annotations

import csv
import importlib
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpu_common import ROOT, Settings, _emit, _jax_device, _torch_device


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


def _trainer_images_per_s(st: Settings, backend: str, compile: bool, mode: str | None = None) -> dict[str, Any]:
    """Median images/s of the real trainer's logged windows after the warm-up steps
    (``mode``: ``torch.compile``'s mode for the PyTorch trainer, ``TorchTrainer.compile_mode``)."""
    from bench_train import _random_data

    from ddpm_core.runs import TrainOptions

    api = importlib.import_module(f"ddpm_core.backends.{backend}.api")
    if mode is not None:  # this part's own process: the class default is the trainer's setting
        from ddpm_core.backends.torch.training import TorchTrainer

        TorchTrainer.compile_mode = mode
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


def part_train_torch_graph(st: Settings, limit_s: float) -> dict[str, Any]:
    """Compiled with mode "reduce-overhead": each compiled graph replayed as a CUDA graph."""
    return _trainer_images_per_s(st, "torch", compile=True, mode="reduce-overhead") | {"mode": "reduce-overhead"}


def part_train_jax(st: Settings, limit_s: float) -> dict[str, Any]:
    import jax

    return _trainer_images_per_s(st, "jax", compile=False) | {"jax": _jax_device(jax)}


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
