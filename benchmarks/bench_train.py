"""Training throughput and model FLOP utilisation of each preset, both backends, on this device.

For every preset and backend the real trainer (``ddpm_core.backends.<b>.api.train``) runs
``--warmup + --steps`` steps on random images of the preset's shape, logging every
``--window`` steps; images/s is the median of the logged windows after the warm-up (so
compilation and the first allocations are excluded; EMA, clipping and logging included).

MFU = images/s x FLOPs per training image / the measured matrix-multiply ceiling of the
device (float32 on a CPU, bf16 on CUDA: the precision the trainer computes in). FLOPs per
training image (forward + backward, convolutions and matrix products) are counted by
``torch.utils.flop_counter`` on the PyTorch U-Net; the JAX U-Net is the same network.

Where diffusers is installed, its ``UNet2DModel`` built with the paper's CIFAR10
configuration is timed against our cifar10 U-Net in the same minimal loop (q_sample, MSE on
eps, backward, Adam), same batch, precision and device.

Last, the host work of one cifar10 step at batch 128 outside the device step (the shared
loop's batch, flips, timesteps and learning rate; :func:`host_work_ms`): with the training
set on the device (CUDA) and with its rows gathered on the host, against a NumPy floor.

    python benchmarks/bench_train.py [--presets tiny,mnist,cifar10] [--backends torch,jax]
                                     [--batch N] [--steps 6] [--warmup 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def matmul_ceiling(device: str, n: int = 2048, reps: int = 10) -> float:
    """Best FLOP/s of an n x n matrix product (bf16 on CUDA, float32 on CPU)."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def train_flops_per_image(preset: str) -> float:
    """Forward + backward FLOPs of one training image (PyTorch U-Net, counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ddpm_core.backends.torch.unet import build_unet

    net = build_unet(preset)
    c = net.config
    x = torch.randn(1, c.in_channels, c.image_size, c.image_size)
    with FlopCounterMode(display=False) as counter:
        net(x, torch.tensor([10])).square().mean().backward()
    return float(counter.get_total_flops())


def _random_data(preset: str, root: Path, n: int = 256) -> str:
    from ddpm_core.models import get_preset

    c = get_preset(preset).unet
    rng = np.random.default_rng(0)
    shape = (n, c.image_size, c.image_size) + ((c.in_channels,) if c.in_channels > 1 else ())
    path = root / f"{preset}.npz"
    np.savez(path, images=rng.integers(0, 256, shape, dtype=np.uint8))
    return str(path)


def trainer_images_per_s(backend: str, preset: str, batch: int | None, steps: int, warmup: int,
                         window: int) -> float:
    """Median images/s of the trainer's logged windows after ``warmup`` steps."""
    from ddpm_core.runs import TrainOptions

    if backend == "torch":
        from ddpm_core.backends.torch import api
    else:
        from ddpm_core.backends.jax import api  # type: ignore[no-redef]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        api.train(TrainOptions(preset=preset, out=str(out), backend=backend, steps=warmup + steps,
                               batch_size=batch, data=_random_data(preset, Path(tmp)),
                               log_every=window, ckpt_every=0, sample_every=0, sample_n=1,
                               progress=False))
        with open(out / "log.csv", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if int(r["step"]) > warmup]
    return statistics.median(float(r["images_per_s"]) for r in rows)


def unet2d_comparison(batch: int, steps: int, device: str) -> dict[str, float] | None:
    """images/s of our cifar10 U-Net and diffusers' UNet2DModel in the same minimal loop."""
    try:
        from diffusers import UNet2DModel
    except ImportError:
        return None
    from ddpm_core.backends.torch.unet import build_unet

    theirs = UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
        block_out_channels=(128, 256, 256, 256), dropout=0.1, norm_num_groups=32,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=256)
    ours = build_unet("cifar10")
    results: dict[str, float] = {}
    for name, net, call in (("ours", ours, lambda n, x, t: n(x, t)),
                            ("diffusers", theirs, lambda n, x, t: n(x, t).sample)):
        results[name] = _minimal_loop_images_per_s(net.to(device), call, batch, steps, device)
        results[f"{name}_params"] = sum(p.numel() for p in net.parameters())
    return results


def _minimal_loop_images_per_s(net: Any, call: Any, batch: int, steps: int, device: str,
                               shape: tuple[int, int, int] = (3, 32, 32)) -> float:
    """Median images/s of q_sample -> net -> MSE on eps -> backward -> Adam (bf16 on CUDA).

    ``shape`` is one image's (C, H, W).
    """
    import torch

    import ddpm_core as dc

    s = dc.Schedule.linear(1000)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-4)
    g = torch.Generator(device=device).manual_seed(0)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")

    def step() -> None:
        x0 = torch.rand(batch, *shape, generator=g, device=device) * 2 - 1
        t = torch.randint(0, 1000, (batch,), generator=g, device=device)
        eps = torch.randn(x0.shape, generator=g, device=device)
        with amp:
            out = call(net, dc.q_sample(s, x0, t, eps), t)
        loss = (out.float() - eps).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    times = []
    for _ in range(steps):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def host_work_ms(preset: str = "cifar10", batch: int = 128, n: int = 50_000, reps: int = 200
                 ) -> dict[str, float]:
    """Median milliseconds of one step's host work outside the device step, for ``preset``'s
    image shape with ``n`` training images (CIFAR-10: 50,000) at ``batch``.

    ``gathered``: the shared loop's ``host_batch`` (rows, flips, timesteps and weights from
    the ``(seed, step)`` streams, the rows gathered and flipped on the host) plus the
    learning rate of the step; ``held``: the same with the rows left to the device
    (``TorchTrainer.hold_data``, the CUDA default: only indices and flips are made); and
    ``floor``: a hand-written floor, NumPy's draw of ``batch`` random rows and timesteps.
    """
    from ddpm_core.app.training.batches import host_batch
    from ddpm_core.app.training.protocol import lr_at
    from ddpm_core.models import get_preset

    p = get_preset(preset)
    c, tc = p.unet, p.train
    data = np.random.default_rng(0).integers(0, 256, (n, c.image_size, c.image_size, c.in_channels),
                                              dtype=np.uint8)
    tc = dataclasses.replace(tc, batch_size=batch)
    rng = np.random.default_rng(1)

    def timed(fn: Any) -> float:
        fn(0)
        times = []
        for step in range(1, reps + 1):
            t0 = time.perf_counter()
            fn(step)
            times.append(time.perf_counter() - t0)
        return 1e3 * statistics.median(times)

    def loop(gather: bool) -> Any:
        return lambda step: (host_batch(data, 0, step, tc, None, gather=gather), lr_at(tc, step))

    return {"gathered": timed(loop(True)), "held": timed(loop(False)),
            "floor": timed(lambda step: (data[rng.integers(0, n, batch)], rng.integers(0, 1000, batch)))}


def _batch(args: argparse.Namespace, preset: str, device: str, flops: float, ceiling: float) -> int:
    """--batch, else the preset's batch size, on a CPU capped to --step-budget s per step."""
    from ddpm_core.models import get_preset

    if args.batch is not None:
        return int(args.batch)
    batch = int(get_preset(preset).train.batch_size)
    if device == "cuda":
        return batch
    return max(1, min(batch, int(args.step_budget * ceiling / flops)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="tiny,mnist,cifar10")
    p.add_argument("--backends", default="torch,jax")
    p.add_argument("--batch", type=int, default=None,
                   help="batch size (default: the preset's, capped on a CPU so that one "
                        "step costs at most --step-budget seconds at the matmul ceiling)")
    p.add_argument("--step-budget", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=6, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed first steps")
    p.add_argument("--json", help="also write the raw numbers here")
    args = p.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    ceiling = matmul_ceiling(device)
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; matmul ceiling {ceiling / 1e9:.1f} GFLOP/s "
          f"({'bf16' if device == 'cuda' else 'float32'})")
    print("\n| preset | backend | batch | GFLOPs / train image | images/s | MFU |")
    print("|---|---|---|---|---|---|")
    raw: dict[str, Any] = {"device": name, "ceiling_flops": ceiling, "rows": []}
    batches = {}
    for preset in args.presets.split(","):
        flops = train_flops_per_image(preset)
        batches[preset] = batch = _batch(args, preset, device, flops, ceiling)
        for backend in args.backends.split(","):
            ips = trainer_images_per_s(backend, preset, batch, args.steps, args.warmup, window=1)
            mfu = ips * flops / ceiling
            raw["rows"].append({"preset": preset, "backend": backend, "batch": batch,
                                "flops": flops, "images_per_s": ips, "mfu": mfu})
            print(f"| {preset} | {backend} | {batch} | {flops / 1e9:.2f} | {ips:.1f} | "
                  f"{100 * mfu:.1f}% |", flush=True)
    if "cifar10" in batches:
        batch = batches["cifar10"]
        cmp = unet2d_comparison(batch, args.steps, device)
        if cmp is not None:
            raw["unet2d"] = cmp
            print(f"\ncifar10 minimal loop, batch {batch}: ours {cmp['ours']:.1f} images/s "
                  f"({cmp['ours_params']:,} parameters), diffusers UNet2DModel "
                  f"{cmp['diffusers']:.1f} images/s ({cmp['diffusers_params']:,} parameters): "
                  f"ours/diffusers {cmp['ours'] / cmp['diffusers']:.2f}x")
    host = raw["host_work_ms"] = host_work_ms()
    print(f"\nhost work per cifar10 step at batch 128 (50,000 images): {host['gathered']:.3f} ms with the "
          f"rows gathered on the host, {host['held']:.3f} ms with the training set on the device "
          f"(the CUDA default), floor {host['floor']:.3f} ms (NumPy's draw of the rows and t)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
