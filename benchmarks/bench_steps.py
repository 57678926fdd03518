"""Sampler-step cost of the core against a hand-written floor and against diffusers.

One thread, a 16x3x32x32 float32 batch, noise passed in (the RNG is timed separately).
Contenders run interleaved, round by round, in one process; the table gives the median
over rounds of each contender's per-call median, and its ratio to the floor.

    python benchmarks/bench_steps.py [--rounds 30] [--calls 20]

The floors do the same arithmetic as the core with precomputed scalar coefficients:
x0 = a x - b eps; mean = c1 x0 + c2 x; x_prev = mean + sigma z (ddpm_step returns x0_hat
too, so the floor computes it); DDIM: sqrt(abar') x0 + sqrt(1 - abar') eps; q_sample:
torch.add(a x, eps, alpha=b).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

import ddpm_core as dc

SHAPE = (16, 3, 32, 32)
STEP = 500


def _median_call(fn: Callable[[], object], calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(contenders: dict[str, Callable[[], object]], rounds: int, calls: int) -> dict[str, float]:
    """Interleave the contenders round by round; return the median per-call time of each."""
    for fn in contenders.values():
        for _ in range(10):
            fn()
    per_round: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            per_round[name].append(_median_call(fn, calls))
    return {k: statistics.median(v) for k, v in per_round.items()}


def _coefs(s: dc.Schedule, i: int) -> dict[str, float]:
    return {
        "a": float(s.sqrt_recip_alphas_cumprod[i]),
        "b": float(s.sqrt_recipm1_alphas_cumprod[i]),
        "c1": float(s.posterior_mean_coef1[i]),
        "c2": float(s.posterior_mean_coef2[i]),
        "sd": float(s.posterior_std[i]),
        "abar": float(s.alphas_cumprod[i]),
        "abar_prev": float(s.alphas_cumprod[i - 1]),
    }


def torch_contenders(s: dc.Schedule) -> dict[str, Callable[[], object]]:
    import torch

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, eps, z = (torch.randn(SHAPE, generator=g) for _ in range(3))
    c = _coefs(s, STEP)
    tv = torch.full((SHAPE[0],), STEP)

    def floor_ddpm(clip: bool = False):  # noqa: ANN202
        x0 = c["a"] * x - c["b"] * eps
        if clip:
            x0 = x0.clamp(-1, 1)
        return c["c1"] * x0 + c["c2"] * x + c["sd"] * z, x0

    def floor_ddim():  # noqa: ANN202
        x0 = c["a"] * x - c["b"] * eps
        return c["abar_prev"] ** 0.5 * x0 + (1 - c["abar_prev"]) ** 0.5 * eps, x0

    out = {
        "torch floor ddpm": floor_ddpm,
        "torch ddpm_step": lambda: dc.ddpm_step(s, eps, x, STEP, z),
        "torch ddpm_step t-vector": lambda: dc.ddpm_step(s, eps, x, tv, z),
        "torch floor ddpm clip": lambda: floor_ddpm(True),
        "torch ddpm_step clip": lambda: dc.ddpm_step(s, eps, x, STEP, z, clip=True),
        "torch floor ddpm+randn": lambda: (floor_ddpm(), torch.randn(SHAPE, generator=g)),
        "torch ddpm_step+randn": lambda: dc.ddpm_step(s, eps, x, STEP, torch.randn(SHAPE, generator=g)),
        "torch floor ddim": floor_ddim,
        "torch ddim_step": lambda: dc.ddim_step(s, eps, x, STEP, STEP - 1),
        "torch floor q_sample": lambda: torch.add(x * c["abar"] ** 0.5, eps, alpha=(1 - c["abar"]) ** 0.5),
        "torch q_sample": lambda: dc.q_sample(s, x, STEP, eps),
    }
    out.update(_diffusers_contenders(s, x, eps, z))
    return out


def _diffusers_contenders(s: dc.Schedule, x, eps, z) -> dict[str, Callable[[], object]]:  # noqa: ANN001
    try:
        import diffusers
        import diffusers.schedulers.scheduling_ddpm as ddpm_mod
        import torch
    except ImportError:
        return {}
    ddpm_mod.randn_tensor = lambda *a, **k: z  # the same noise, no RNG: like-for-like
    ddpm = diffusers.DDPMScheduler(num_train_timesteps=s.num_timesteps, beta_schedule="linear")
    ddim = diffusers.DDIMScheduler(num_train_timesteps=s.num_timesteps, beta_schedule="linear")
    ddim.set_timesteps(s.num_timesteps)
    tv = torch.full((SHAPE[0],), STEP)
    return {
        "diffusers DDPMScheduler.step": lambda: ddpm.step(eps, STEP, x),
        "diffusers DDIMScheduler.step": lambda: ddim.step(eps, STEP, x, eta=0.0),
        "diffusers add_noise": lambda: ddpm.add_noise(x, eps, tv),
    }


def numpy_contenders(s: dc.Schedule) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(0)
    x, eps, z = (rng.standard_normal(SHAPE, dtype=np.float32) for _ in range(3))
    c = _coefs(s, STEP)

    def floor_ddpm():  # noqa: ANN202
        x0 = np.float32(c["a"]) * x - np.float32(c["b"]) * eps
        return np.float32(c["c1"]) * x0 + np.float32(c["c2"]) * x + np.float32(c["sd"]) * z, x0

    return {
        "numpy floor ddpm": floor_ddpm,
        "numpy ddpm_step": lambda: dc.ddpm_step(s, eps, x, STEP, z),
    }


def jax_contenders(s: dc.Schedule) -> dict[str, Callable[[], object]]:
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return {}
    key = jax.random.PRNGKey(0)
    x, eps, z = (jax.random.normal(k, SHAPE) for k in jax.random.split(key, 3))
    c = _coefs(s, STEP)

    @jax.jit
    def floor_ddpm(x, eps, z):  # noqa: ANN001, ANN202
        x0 = c["a"] * x - c["b"] * eps
        return c["c1"] * x0 + c["c2"] * x + c["sd"] * z, x0

    ours = jax.jit(lambda x, eps, z: tuple(dc.ddpm_step(s, eps, x, STEP, z)))
    del jnp
    return {
        "jax floor ddpm (jit)": lambda: jax.block_until_ready(floor_ddpm(x, eps, z)),
        "jax ddpm_step (jit)": lambda: jax.block_until_ready(ours(x, eps, z)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    s = dc.Schedule.linear(1000)
    groups = [torch_contenders, numpy_contenders, jax_contenders]
    print(f"{'contender':34s} {'median us':>10s} {'vs floor':>9s}")
    for make in groups:
        try:
            contenders = make(s)
        except ImportError:
            continue
        if not contenders:
            continue
        times = run(contenders, args.rounds, args.calls)
        floor = None
        for name, sec in times.items():
            if "floor" in name:
                floor = sec
            ratio = f"{sec / floor:8.2f}x" if floor else ""
            print(f"{name:34s} {sec * 1e6:10.1f} {ratio:>9s}")


if __name__ == "__main__":
    main()
