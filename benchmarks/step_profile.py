"""Where one CPU training step's time goes, op by op, from each framework's own profiler.

``train_breakdown.py`` times parts rebuilt on their own; this profiles the real thing: the
forward + backward of the U-Net and the loss (the trainer's network part, batch ``--batch``),
run ``--steps`` times under

- JAX: ``jax.profiler`` (a Perfetto trace of the compiled step). Every executed XLA op
  (a loop fusion, or a call into a kernel library such as YNNPACK) is attributed to what
  it computes, read from the optimised HLO of the same compiled object: a convolution's
  forward pass, its input gradient or its weight gradient (which XLA's CPU code runs as a
  convolution over the transposed activations, with the window as large as the image), the
  layout transposes that feed them, reductions, dots, and the elementwise fusions between;
- PyTorch: ``torch.profiler``, self CPU time of each ATen op, grouped the same way as far
  as its ops allow (``convolution_backward`` computes both gradients in one op).

Prints one Markdown table per backend: category, ms per step, share, ops per step.

    OMP_NUM_THREADS=1 python benchmarks/step_profile.py [--preset mnist] [--batch 64] [--steps 3]
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile
from typing import Any

import numpy as np

ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%(\S+) = (.*)$", re.M)
_COMPUTATION = re.compile(r"^%(\S+) \(.*?\) -> .*? \{\n(.*?)\n\}", re.M | re.S)


def _inputs(preset: str, batch: int) -> tuple[Any, ...]:
    from ddpm_core.models import get_preset

    p = get_preset(preset)
    rng = np.random.default_rng(0)
    shape = (batch, p.channels, p.image_size, p.image_size)
    return (rng.uniform(-1, 1, shape).astype(np.float32),
            rng.integers(0, 1000, batch), rng.standard_normal(shape, dtype=np.float32))


def _conv_kind(body: str, op_name: str) -> str:
    """forward, input gradient or weight gradient, from a convolution's window and output.

    A weight gradient is a convolution whose window spans the activations (as large as
    the image) and whose output is the kernel's few pixels.
    """
    line = next(ln for ln in body.splitlines() if "convolution(" in ln)
    window = re.search(r"window=\{size=(\d+)", line)
    out = re.search(r"= \w+\[\d+,(\d+),", line)
    if window and out and int(window.group(1)) > int(out.group(1)):
        return "convolution, weight gradient"
    return "convolution, input gradient" if "transpose(" in op_name else "convolution, forward"


def hlo_categories(hlo: str) -> dict[str, str]:
    """Category of every instruction of an optimised HLO module, by name."""
    bodies = {m.group(1): m.group(2) for m in _COMPUTATION.finditer(hlo)}
    out = {}
    for m in _INSTRUCTION.finditer(hlo):
        name, rest = m.group(1), m.group(2)
        called = re.search(r"calls=%(\S+?)[,\s}]", rest)
        body = bodies.get(called.group(1), "") if called else m.group(0)
        op = re.search(r'op_name="([^"]*)"', rest) or re.search(r'op_name="([^"]*)"', body)
        op_name = op.group(1) if op else ""
        if "convolution(" in body:
            out[name] = _conv_kind(body, op_name)
        elif "dot(" in body:
            out[name] = "dots (attention, dense layers)"
        elif "reduce(" in body:
            out[name] = "reductions (norm statistics, bias gradients)"
        elif re.search(r"\btranspose\(", body):
            out[name] = "layout transposes"
        else:
            out[name] = "elementwise fusions (norm, SiLU, adds, copies)"
    return out


def _trace_durations(trace_dir: str) -> list[tuple[str, float]]:
    """(name, microseconds) of every complete event of the newest Perfetto trace."""
    path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
    with gzip.open(path) as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [(e["name"], float(e.get("dur", 0))) for e in events if e.get("ph") == "X"]


def profile_jax(preset: str, batch: int, steps: int) -> dict[str, tuple[float, int]]:
    """{category: (seconds per step, ops per step)} of the JAX step under jax.profiler."""
    import jax
    import jax.numpy as jnp

    import ddpm_core as dc
    from ddpm_core.backends.jax.unet import build_unet, init_params

    net = build_unet(preset)
    params = init_params(net, jax.random.key(0))
    x0, t, eps = (jnp.asarray(a) for a in _inputs(preset, batch))
    x_t = dc.q_sample(dc.Schedule.linear(1000), x0, t, eps)

    def loss(p: Any) -> jax.Array:
        return jnp.mean(jnp.square(net.apply({"params": p}, x_t, t) - eps))

    step = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
    categories = hlo_categories(step.as_text())
    jax.block_until_ready(step(params))
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        for _ in range(steps):
            jax.block_until_ready(step(params))
        jax.profiler.stop_trace()
        events = _trace_durations(tmp)
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for name, dur in events:
        if name in categories:
            totals[categories[name]][0] += dur * 1e-6 / steps
            totals[categories[name]][1] += 1 / steps
    return {k: (v[0], round(v[1])) for k, v in totals.items()}


_TORCH_GROUPS = (("convolution_backward", "convolution, input + weight gradients"),
                 ("convolution", "convolution, forward"),
                 ("group_norm", "GroupNorm (forward, backward)"),
                 ("mm", "dots (attention, dense layers)"), ("bmm", "dots (attention, dense layers)"),
                 ("addmm", "dots (attention, dense layers)"),
                 ("sum", "reductions (norm statistics, bias gradients)"))


def _torch_category(op: str) -> str:
    name = op.removeprefix("aten::")
    for key, category in _TORCH_GROUPS:
        if key in name:
            return category
    return "elementwise and other ops (SiLU, adds, copies)"


def profile_torch(preset: str, batch: int, steps: int) -> dict[str, tuple[float, int]]:
    """{category: (seconds per step, ops per step)}: self CPU time of each ATen op."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    import ddpm_core as dc
    from ddpm_core.backends.torch.unet import build_unet

    torch.set_num_threads(1)
    net = build_unet(preset)
    x0, t, eps = (torch.from_numpy(np.asarray(a)) for a in _inputs(preset, batch))
    x_t = dc.q_sample(dc.Schedule.linear(1000), x0, t, eps)

    def step() -> None:
        net.zero_grad(set_to_none=True)
        torch.mean(torch.square(net(x_t, t) - eps)).backward()

    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0])
    for event in prof.key_averages():
        if not event.key.startswith("aten::") or event.self_cpu_time_total <= 0:
            continue
        totals[_torch_category(event.key)][0] += event.self_cpu_time_total * 1e-6 / steps
        totals[_torch_category(event.key)][1] += event.count / steps
    return {k: (v[0], round(v[1])) for k, v in totals.items()}


def table(backend: str, rows: dict[str, tuple[float, int]]) -> str:
    total = sum(s for s, _ in rows.values())
    lines = [f"| {backend}: category | ms/step | share | ops/step |", "|---|---|---|---|"]
    for name, (s, n) in sorted(rows.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {name} | {1e3 * s:.1f} | {100 * s / total:.1f}% | {n} |")
    lines.append(f"| total | {1e3 * total:.1f} | 100% | {sum(n for _, n in rows.values())} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="mnist")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--backends", default="torch,jax", help="comma list: torch, jax")
    args = p.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.batch < 1 or args.steps < 1:
        p.error(f"--batch and --steps must be >= 1; got {args.batch}, {args.steps}")
    if not backends or set(backends) - {"torch", "jax"}:
        p.error(f"--backends must be a comma list of torch, jax; got {args.backends!r}")
    if "jax" not in sys.modules:  # XLA reads its flags when it starts
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {ONE_THREAD}".strip()
    profilers = {"torch": profile_torch, "jax": profile_jax}
    for backend in backends:
        print(table(backend, profilers[backend](args.preset, args.batch, args.steps)), "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
