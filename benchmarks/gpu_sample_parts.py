"""The sampling parts of ``benchmarks/gpu_check.py``: 256 CIFAR-sized samples of the
1000-step ancestral chain with PyTorch eager, a CUDA graph, ``torch.compile`` and JAX's scan."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gpu_common import Settings, _emit, _jax_device


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
