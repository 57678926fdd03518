"""Sampler-step cost of the core against a hand-written floor and against diffusers.

One thread, a 16x3x32x32 float32 batch, noise passed in (the RNG is timed in its own row).
Every contender of a backend runs interleaved, round by round, in one process; a time is
the median over rounds of the per-call median. Each row gives the floor, ddpm_core and
(for PyTorch, where installed) diffusers, with ``core/floor`` and ``core/diffusers``.

    python benchmarks/bench_steps.py [--rounds 30] [--calls 20] [--rows "tensor t"] [--json out.json]

The floors do the same arithmetic as the core with precomputed coefficients, written the
fastest obvious way: x0 = a x - b eps; x_prev = c1 x0 + c2 x + sd z (ddpm_step returns x0
too, so the floor computes it); DDIM: sqrt(abar') x0 + sqrt(1 - abar') eps; q_sample:
``torch.add(a x, eps, alpha=b)`` for one t. The "tensor t" rows pass ``t`` as a (B,) int64
tensor (what a training step or a user's own loop holds); their floor gathers every
coefficient of a step from one precomputed float32 (K, T, 1, 1, 1) table with a single
``index_select`` per timestep vector and combines with ``addcmul``, and their diffusers
contender is what a diffusers user runs per step: ``step`` with a 0-d tensor timestep (the
elements of ``scheduler.timesteps``) and ``add_noise`` with the (B,) tensor. diffusers runs
with its randn patched to return the same noise, and with ``clip_sample`` matching the row.
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

SHAPE = (16, 3, 32, 32)
STEP = 500
Fn = Callable[[], object]


def _median_call(fn: Fn, calls: int) -> float:
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(contenders: dict[str, Fn], rounds: int, calls: int) -> dict[str, float]:
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


# Each backend returns {row: {"floor": fn, "core": fn, "diffusers": fn (optional)}}.
Rows = dict[str, dict[str, Fn]]


def torch_rows(s: dc.Schedule) -> Rows:
    import torch

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x, eps, z = (torch.randn(SHAPE, generator=g) for _ in range(3))
    c = _coefs(s, STEP)
    tv = torch.full((SHAPE[0],), STEP, dtype=torch.int64)
    tv_prev = tv - 1

    def floor_ddpm(clip: bool = False):  # noqa: ANN202
        x0 = c["a"] * x - c["b"] * eps
        if clip:
            x0 = x0.clamp(-1, 1)
        return c["c1"] * x0 + c["c2"] * x + c["sd"] * z, x0

    def floor_ddim():  # noqa: ANN202
        x0 = c["a"] * x - c["b"] * eps
        return c["abar_prev"] ** 0.5 * x0 + (1 - c["abar_prev"]) ** 0.5 * eps, x0

    fl_ddpm, fl_ddim, fl_q = gather_floors(s, x, eps, z).values()
    rows: Rows = {
        "ddpm_step": {"floor": floor_ddpm, "core": lambda: dc.ddpm_step(s, eps, x, STEP, z)},
        "ddpm_step clip": {"floor": lambda: floor_ddpm(True),
                           "core": lambda: dc.ddpm_step(s, eps, x, STEP, z, clip=True)},
        "ddpm_step + torch.randn": {
            "floor": lambda: (floor_ddpm(), torch.randn(SHAPE, generator=g)),
            "core": lambda: dc.ddpm_step(s, eps, x, STEP, torch.randn(SHAPE, generator=g))},
        "ddpm_step tensor t": {"floor": lambda: fl_ddpm(tv),
                               "core": lambda: dc.ddpm_step(s, eps, x, tv, z)},
        "ddim_step eta=0": {"floor": floor_ddim, "core": lambda: dc.ddim_step(s, eps, x, STEP, STEP - 1)},
        "q_sample": {"floor": lambda: torch.add(x * c["abar"] ** 0.5, eps, alpha=(1 - c["abar"]) ** 0.5),
                     "core": lambda: dc.q_sample(s, x, STEP, eps)},
        "ddim_step eta=0 tensor t": {"floor": lambda: fl_ddim(tv, tv_prev),
                                     "core": lambda: dc.ddim_step(s, eps, x, tv, tv_prev)},
        "q_sample tensor t": {"floor": lambda: fl_q(tv), "core": lambda: dc.q_sample(s, x, tv, eps)},
    }
    for name, fn in _diffusers(s, x, eps, z, tv).items():
        rows[name]["diffusers"] = fn
    return rows


def _stacked(s: dc.Schedule, device: object, *names: str) -> object:
    """Tables ``names`` as one float32 (K, T, 1, 1, 1) tensor; ``-name`` is the negated table."""
    import torch

    rows = [-getattr(s, n[1:]) if n[0] == "-" else getattr(s, n) for n in names]
    return torch.tensor(np.stack(rows)[:, :, None, None, None], dtype=torch.float32, device=device)


def gather_floors(s: dc.Schedule, x, eps, z) -> dict[str, Callable]:  # noqa: ANN001
    """Hand-written per-sample-t steps: one ``index_select`` per timestep vector, ``addcmul``."""
    import torch

    ddpm = _stacked(s, x.device, "sqrt_recip_alphas_cumprod", "-sqrt_recipm1_alphas_cumprod",
                    "posterior_mean_coef1", "posterior_mean_coef2", "posterior_std")
    x0_tab = _stacked(s, x.device, "sqrt_recip_alphas_cumprod", "-sqrt_recipm1_alphas_cumprod")
    roots = _stacked(s, x.device, "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod")  # DDIM's, q's

    def floor_ddpm(t):  # noqa: ANN001, ANN202
        a, nb, c1, c2, sd = ddpm.index_select(1, t).unbind(0)
        x0 = torch.addcmul(a * x, nb, eps)
        return torch.addcmul(c1 * x0, c2, x).addcmul_(sd, z), x0

    def floor_ddim(t, t_prev):  # noqa: ANN001, ANN202  (t_prev >= 0 here)
        a, nb = x0_tab.index_select(1, t).unbind(0)
        ap, bp = roots.index_select(1, t_prev).unbind(0)
        x0 = torch.addcmul(a * x, nb, eps)
        return torch.addcmul(ap * x0, bp, eps), x0

    def floor_q(t):  # noqa: ANN001, ANN202
        a, b = roots.index_select(1, t).unbind(0)
        return torch.addcmul(a * x, b, eps)

    return {"ddpm": floor_ddpm, "ddim": floor_ddim, "q": floor_q}


def _diffusers(s: dc.Schedule, x, eps, z, tv) -> dict[str, Fn]:  # noqa: ANN001
    try:
        import diffusers
        import diffusers.schedulers.scheduling_ddpm as ddpm_mod
    except ImportError:
        return {}
    kw = {"num_train_timesteps": s.num_timesteps, "beta_schedule": "linear"}
    ddpm = diffusers.DDPMScheduler(clip_sample=False, **kw)
    ddpm_clip = diffusers.DDPMScheduler(clip_sample=True, **kw)
    ddim = diffusers.DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **kw)
    ddim.set_timesteps(s.num_timesteps)
    t0d = ddim.timesteps[s.num_timesteps - 1 - STEP]  # a 0-d tensor, as a diffusers loop has it
    assert int(t0d) == STEP
    rows = {
        "ddpm_step": lambda: ddpm.step(eps, STEP, x),
        "ddpm_step clip": lambda: ddpm_clip.step(eps, STEP, x),
        "ddim_step eta=0": lambda: ddim.step(eps, STEP, x, eta=0.0),
        "ddpm_step tensor t": lambda: ddpm.step(eps, t0d, x),
        "ddim_step eta=0 tensor t": lambda: ddim.step(eps, t0d, x, eta=0.0),
        "q_sample tensor t": lambda: ddpm.add_noise(x, eps, tv),
    }
    return {name: _same_noise(ddpm_mod, fn, z) for name, fn in rows.items()}


def _same_noise(module: Any, fn: Fn, z: Any) -> Fn:
    """``fn`` with diffusers' ``randn_tensor`` returning ``z`` (the same noise, no RNG: like
    for like) during the call only, so nothing else in the process sees the patch."""
    def call() -> Any:
        real, module.randn_tensor = module.randn_tensor, lambda *a, **k: z
        try:
            return fn()
        finally:
            module.randn_tensor = real
    return call


def numpy_rows(s: dc.Schedule) -> Rows:
    rng = np.random.default_rng(0)
    x, eps, z = (rng.standard_normal(SHAPE, dtype=np.float32) for _ in range(3))
    c = {k: np.float32(v) for k, v in _coefs(s, STEP).items()}
    ra, rb = np.float32(c["abar_prev"] ** 0.5), np.float32((1 - c["abar_prev"]) ** 0.5)

    def floor_ddpm():  # noqa: ANN202
        x0 = c["a"] * x - c["b"] * eps
        return c["c1"] * x0 + c["c2"] * x + c["sd"] * z, x0

    def floor_ddim():  # noqa: ANN202
        x0 = c["a"] * x - c["b"] * eps
        return ra * x0 + rb * eps, x0

    qa, qb = np.float32(c["abar"] ** 0.5), np.float32((1 - c["abar"]) ** 0.5)
    return {
        "ddpm_step": {"floor": floor_ddpm, "core": lambda: dc.ddpm_step(s, eps, x, STEP, z)},
        "ddim_step eta=0": {"floor": floor_ddim, "core": lambda: dc.ddim_step(s, eps, x, STEP, STEP - 1)},
        "q_sample": {"floor": lambda: qa * x + qb * eps, "core": lambda: dc.q_sample(s, x, STEP, eps)},
    }


def jax_rows(s: dc.Schedule) -> Rows:
    try:
        import jax
    except ImportError:
        return {}
    key = jax.random.PRNGKey(0)
    x, eps, z = (jax.random.normal(k, SHAPE) for k in jax.random.split(key, 3))
    c = _coefs(s, STEP)

    def floor_ddpm(x, eps, z):  # noqa: ANN001, ANN202
        x0 = c["a"] * x - c["b"] * eps
        return c["c1"] * x0 + c["c2"] * x + c["sd"] * z, x0

    def floor_ddim(x, eps, z):  # noqa: ANN001, ANN202
        x0 = c["a"] * x - c["b"] * eps
        return c["abar_prev"] ** 0.5 * x0 + (1 - c["abar_prev"]) ** 0.5 * eps, x0

    def floor_q(x, eps, z):  # noqa: ANN001, ANN202
        return c["abar"] ** 0.5 * x + (1 - c["abar"]) ** 0.5 * eps

    def jitted(f: Callable) -> Fn:  # noqa: ANN202
        g = jax.jit(f)
        return lambda: jax.block_until_ready(g(x, eps, z))

    return {
        "ddpm_step (jit)": {"floor": jitted(floor_ddpm),
                            "core": jitted(lambda x, e, z: tuple(dc.ddpm_step(s, e, x, STEP, z)))},
        "ddim_step eta=0 (jit)": {"floor": jitted(floor_ddim),
                                  "core": jitted(lambda x, e, z: tuple(dc.ddim_step(s, e, x, STEP, STEP - 1)))},
        "q_sample (jit)": {"floor": jitted(floor_q), "core": jitted(lambda x, e, z: dc.q_sample(s, x, STEP, e))},
    }


def measure(rows: Rows, rounds: int, calls: int) -> dict[str, dict[str, float]]:
    """Time every contender of ``rows`` interleaved; {row: {contender: seconds}}."""
    flat = {(r, k): fn for r, group in rows.items() for k, fn in group.items()}
    times = run({f"{r}|{k}": fn for (r, k), fn in flat.items()}, rounds, calls)
    out: dict[str, dict[str, float]] = {}
    for key, sec in times.items():
        r, k = key.split("|")
        out.setdefault(r, {})[k] = sec
    return out


def table(backend: str, results: dict[str, dict[str, float]]) -> list[str]:
    """Markdown rows: floor, core, diffusers (us) and the two ratios."""
    lines = []
    for row, t in results.items():
        dif = t.get("diffusers")
        cells = [f"{backend} {row}", f"{t['floor'] * 1e6:.1f}", f"{t['core'] * 1e6:.1f}",
                 "-" if dif is None else f"{dif * 1e6:.1f}", f"{t['core'] / t['floor']:.2f}x",
                 "-" if dif is None else f"{t['core'] / dif:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--json", help="also write the raw medians (seconds) here")
    parser.add_argument("--rows", default="", help="only the rows whose name contains this text")
    args = parser.parse_args()
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    s = dc.Schedule.linear(1000)
    print("| step (16x3x32x32 float32, 1 thread) | floor us | core us | diffusers us "
          "| core/floor | core/diffusers |")
    print("|---|---|---|---|---|---|")
    raw = {}
    for backend, make in (("torch", torch_rows), ("numpy", numpy_rows), ("jax", jax_rows)):
        try:
            rows = make(s)
        except ImportError:
            continue
        rows = {name: group for name, group in rows.items() if args.rows in name}
        if rows:
            raw[backend] = measure(rows, args.rounds, args.calls)
            print("\n".join(table(backend, raw[backend])), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(raw, f, indent=1)


if __name__ == "__main__":
    main()
