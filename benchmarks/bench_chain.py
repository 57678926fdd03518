"""Sampling-chain cost: what the chain adds to the network, in both backends.

JAX: per-step time of the compiled chain (``Sampler.run``: one ``lax.scan`` over the core's
``ddpm_step``), of a Python loop calling a jitted step (``Sampler.run_loop``), and of a
hand-written ``lax.scan`` of the same model and update with precomputed tables and the
same noise; and the chain's compile time (first call minus a steady call).

PyTorch: per-step time of ``ddpm_core.sample_loop`` (as the backend calls it), of a
hand-written loop with precomputed Python-float coefficients, and of the network calls
alone; the share of wall time spent outside the network is 1 - network / chain.

Every chain is the ancestral sampler with x0 clipping on a respaced chain of K steps.
Models: ``null`` (output = 0.1 x: the chain's own overhead), the ``tiny`` preset at batch 1
and the ``mnist`` preset at batch 16, randomly initialised. One thread per backend;
contenders interleaved round by round, medians over rounds (20, 15 and 5 rounds).

    python benchmarks/bench_chain.py [--rounds 1] [--models null,tiny,mnist] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import ddpm_core as dc
from ddpm_core.app.sampling.chains import chain_schedule

# model: (preset, batch, chain steps K, rounds at --rounds 1)
CASES = {"null": ("tiny", 1, 200, 20), "tiny": ("tiny", 1, 100, 15), "mnist": ("mnist", 16, 20, 5)}


def _interleaved(contenders: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    per: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            fn()
            per[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in per.items()}


def _tables(s: dc.Schedule) -> dict[str, np.ndarray]:
    return {"a": s.sqrt_recip_alphas_cumprod, "b": s.sqrt_recipm1_alphas_cumprod,
            "c1": s.posterior_mean_coef1, "c2": s.posterior_mean_coef2, "sd": s.posterior_std}


# ----------------------------------------------------------------------------- JAX


def jax_case(model_name: str, rounds: int) -> dict[str, float]:
    import jax
    import jax.numpy as jnp

    from ddpm_core.backends.jax.sampling import Chain, Sampler, _normal, sample_keys
    from ddpm_core.backends.jax.unet import build_unet, init_params
    from ddpm_core.models import get_preset

    preset_name, batch, K, _ = CASES[model_name]
    cfg = get_preset(preset_name).unet
    shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    if model_name == "null":
        params: Any = jnp.float32(0.1)

        def model(p: Any, x: Any, t: Any) -> Any:
            return x * p
    else:
        net = build_unet(preset_name)
        params = init_params(net, jax.random.key(0))

        def model(p: Any, x: Any, t: Any) -> Any:
            return net.apply({"params": p}, x, t)
    sched = chain_schedule(dc.Schedule.linear(1000), "ddpm", K)
    sampler = Sampler(model, Chain(sched, clip=True), shape)
    x_T = jax.random.normal(jax.random.key(1), (batch, *shape))
    keys = sample_keys(0, np.arange(batch), K)
    tab = {k: jnp.asarray(v, jnp.float32) for k, v in _tables(sched).items()}
    idx = np.arange(K - 1, -1, -1, dtype=np.int32)
    t_model = sched.timesteps[idx].astype(np.int32)

    @jax.jit
    def hand(p: Any, x: Any, keys: Any) -> Any:
        def body(x: Any, xs: Any) -> tuple[Any, None]:
            k, i, tm = xs
            eps = model(p, x, jnp.broadcast_to(tm, (x.shape[0],))).astype(jnp.float32)
            x0 = jnp.clip(tab["a"][i] * x - tab["b"][i] * eps, -1.0, 1.0)
            return tab["c1"][i] * x0 + tab["c2"][i] * x + tab["sd"][i] * _normal(k, shape), None

        return jax.lax.scan(body, x, (jnp.swapaxes(keys[:, :K], 0, 1), idx, t_model))[0]

    t0 = time.perf_counter()
    jax.block_until_ready(sampler.run(params, x_T, keys))
    first = time.perf_counter() - t0
    jax.block_until_ready(hand(params, x_T, keys))
    jax.block_until_ready(sampler.run_loop(params, x_T, keys))
    got = _interleaved({
        "scan": lambda: jax.block_until_ready(sampler.run(params, x_T, keys)),
        "loop": lambda: jax.block_until_ready(sampler.run_loop(params, x_T, keys)),
        "hand": lambda: jax.block_until_ready(hand(params, x_T, keys)),
    }, rounds)
    out = {f"{k}_step_s": v / K for k, v in got.items()}
    out["compile_s"] = first - got["scan"]
    return out


# ----------------------------------------------------------------------------- PyTorch


def torch_case(model_name: str, rounds: int) -> dict[str, float]:
    import torch

    from ddpm_core.backends.torch.sampling import model_fn
    from ddpm_core.backends.torch.unet import build_unet

    preset_name, batch, K, _ = CASES[model_name]
    torch.manual_seed(0)
    net = build_unet(preset_name)
    cfg = net.config
    shape = (batch, cfg.in_channels, cfg.image_size, cfg.image_size)
    fn = (lambda x, t: x * 0.1) if model_name == "null" else model_fn(net)
    sched = chain_schedule(dc.Schedule.linear(1000), "ddpm", K)
    tab = {k: [float(v) for v in a] for k, a in _tables(sched).items()}
    t_vecs = [torch.full((batch,), int(sched.timesteps[i])) for i in range(K)]
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(shape, generator=g)

    def noise(i: int) -> torch.Tensor:
        return torch.randn(shape, generator=g)

    def core() -> None:
        for _ in dc.sample_loop(sched, fn, x_T, noise, sampler="ddpm", clip=True):
            pass

    def hand() -> None:
        x = x_T
        for i in range(K - 1, -1, -1):
            eps = fn(x, t_vecs[i])
            x0 = (tab["a"][i] * x - tab["b"][i] * eps).clamp(-1.0, 1.0)
            x = tab["c1"][i] * x0 + tab["c2"][i] * x
            if i > 0:
                x = x + tab["sd"][i] * noise(i)

    def network() -> None:
        for i in range(K - 1, -1, -1):
            fn(x_T, t_vecs[i])

    for f in (core, hand, network):
        f()
    got = _interleaved({"core": core, "hand": hand, "network": network}, rounds)
    out = {f"{k}_step_s": v / K for k, v in got.items()}
    out["outside_network"] = 1.0 - got["network"] / got["core"]
    return out


def _jax_cells(r: dict[str, float]) -> list[str]:
    return [f"{r['scan_step_s'] * 1e6:.1f}", f"{r['loop_step_s'] * 1e6:.1f}", f"{r['hand_step_s'] * 1e6:.1f}",
            f"{r['scan_step_s'] / r['hand_step_s']:.2f}x", f"{r['loop_step_s'] / r['scan_step_s']:.2f}x",
            f"{r['compile_s']:.2f}"]


def _torch_cells(r: dict[str, float]) -> list[str]:
    return [f"{r['core_step_s'] * 1e6:.1f}", f"{r['hand_step_s'] * 1e6:.1f}", f"{r['network_step_s'] * 1e6:.1f}",
            f"{r['core_step_s'] / r['hand_step_s']:.2f}x", f"{100 * r['outside_network']:.1f}%"]


TABLES = {
    "jax": (jax_case, "JAX chain (1 thread) | K | scan us/step | loop us/step | hand scan us/step | "
                      "scan/hand | loop/scan | compile s", _jax_cells),
    "torch": (torch_case, "PyTorch chain (1 thread) | K | sample_loop us/step | hand loop us/step | "
                          "network us/step | core/hand | outside network", _torch_cells),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=1, help="multiplies each model's rounds")
    p.add_argument("--models", default="null,tiny,mnist")
    p.add_argument("--backends", default="torch,jax")
    p.add_argument("--json", help="also write the raw numbers here")
    args = p.parse_args()
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    import torch

    torch.set_num_threads(1)
    raw: dict[str, dict[str, dict[str, float]]] = {}
    for backend, (case, header, cells) in TABLES.items():
        if backend not in args.backends:
            continue
        print(f"\n| {header} |\n|" + "---|" * (header.count("|") + 1))
        for m in args.models.split(","):
            r = raw.setdefault(backend, {})[m] = case(m, args.rounds * CASES[m][3])
            print(f"| {m} b{CASES[m][1]} | {CASES[m][2]} | " + " | ".join(cells(r)) + " |", flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
