"""Where a CPU training step's time goes, PyTorch against JAX, part by part.

docs/performance.md's training table has JAX at about half PyTorch's images/s on the mnist preset. This
splits one step of each backend into what it is made of and times every part of both
side by side, in one process, round by round (medians), each backend on one thread:

``network``
    forward + backward of the U-Net and the loss (no optimiser): ``loss.backward()`` against
    ``jax.jit(jax.value_and_grad(loss))``;
``update``
    Adam (foreach) + the EMA update against the jitted optax update + EMA + the trainer's
    finite-step select;
``convs``
    every convolution of the U-Net alone, at the shapes a step gives them, forward +
    backward (input and weight gradients), summed: ``F.conv2d`` against
    ``lax.conv_general_dilated`` in NHWC (what the Flax model runs) and in NCHW;
``norm``
    one GroupNorm + SiLU, forward + backward, at the first level's shape (B, ch, S, S), the
    U-Net's :class:`~ddpm_core.backends.jax.unet.GroupNorm` against ``nn.GroupNorm``;
``norm flax`` and ``network flax``
    the same with ``flax.linen.GroupNorm(use_fast_variance=False)``, the U-Net's norm
    before it had its own: JAX only;
``copy``
    the host-to-device transfer of one batch (``jax.device_put``; PyTorch's CPU tensors
    need none).

Rebuilt on their own, the convolutions are faster under XLA (mnist, batch 64, measured: JAX
0.83x of PyTorch on the convolutions, 1.49x on the network, 4.1x on the first level's
GroupNorm + SiLU with Flax's GroupNorm). Inside the network they are not the same work:
``step_profile.py`` profiles the real step and finds the layout transposes XLA adds around
the weight gradients (15% of JAX's step) and the elementwise work (1.7x PyTorch's). The
U-Net's own GroupNorm runs a GroupNorm + SiLU 1.4x to 1.9x faster than Flax's, which is
0% to 6% of the network.

    OMP_NUM_THREADS=1 python benchmarks/train_breakdown.py [--preset mnist] [--batch 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any
from unittest import mock

import numpy as np

_SAME_TORCH = {"convs NCHW": "convs", "network flax": "network", "norm flax": "norm"}
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _conv_shapes(net: Any, x: Any, t: Any) -> list[dict[str, Any]]:
    """(input NCHW shape, weight OIHW shape, stride) of every Conv2d call in one forward."""
    import torch

    shapes: list[dict[str, Any]] = []
    hooks = [m.register_forward_hook(lambda m, args, out: shapes.append(
        {"x": tuple(args[0].shape), "w": tuple(m.weight.shape), "stride": m.stride[0]}))
        for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net(x, t)
    for h in hooks:
        h.remove()
    return shapes


def torch_parts(preset: str, batch: int) -> dict[str, Callable[[], Any]]:
    """The PyTorch contenders: zero-argument callables that run one part once."""
    import torch
    import torch.nn.functional as F

    import ddpm_core as dc
    from ddpm_core.backends.torch.unet import build_unet

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = build_unet(preset).train()
    ema = build_unet(preset).requires_grad_(False)
    c = net.config
    s = dc.Schedule.linear(1000)
    x0 = torch.rand(batch, c.in_channels, c.image_size, c.image_size) * 2 - 1
    t = torch.randint(0, 1000, (batch,))
    eps = torch.randn_like(x0)
    x_t = dc.q_sample(s, x0, t, eps)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4, foreach=True)
    params, ema_params = list(net.parameters()), list(ema.parameters())

    def network() -> None:
        net.zero_grad(set_to_none=False)
        (net(x_t, t) - eps).square().mean().backward()

    network()  # gradients exist for the update

    def update() -> None:
        opt.step()
        torch._foreach_lerp_(ema_params, params, 1 - 0.995)

    convs = []
    for sh in _conv_shapes(net, x_t, t):
        xi = torch.randn(sh["x"], requires_grad=True)
        wi = torch.randn(sh["w"], requires_grad=True)
        convs.append((xi, wi, sh["stride"], sh["w"][-1] // 2))

    def conv_all() -> None:
        for xi, wi, stride, pad in convs:
            y = F.conv2d(xi, wi, stride=stride, padding=pad)
            torch.autograd.grad(y, (xi, wi), torch.ones_like(y))

    gn = torch.nn.GroupNorm(c.num_groups, c.ch, eps=c.norm_eps)
    xg = torch.randn(batch, c.ch, c.image_size, c.image_size, requires_grad=True)

    def norm() -> None:
        torch.autograd.grad(F.silu(gn(xg)).square().sum(), (xg, gn.weight, gn.bias))

    return {"network": network, "update": update, "convs": conv_all, "norm": norm}


def jax_parts(preset: str, batch: int) -> dict[str, Callable[[], Any]]:
    """The JAX contenders, each jitted and blocked on (``block_until_ready``)."""
    import flax.linen as fnn
    import jax
    import jax.numpy as jnp
    import optax
    from jax import lax

    import ddpm_core as dc
    from ddpm_core.backends.jax import unet as jax_unet
    from ddpm_core.backends.jax.unet import GroupNorm, build_unet, init_params

    net = build_unet(preset)
    params = init_params(net, jax.random.key(0))
    c = net.config
    s = dc.Schedule.linear(1000)
    rng = np.random.default_rng(0)
    x0_np = rng.uniform(-1, 1, (batch, c.in_channels, c.image_size, c.image_size)).astype(np.float32)
    x0 = jnp.asarray(x0_np)
    t = jnp.asarray(rng.integers(0, 1000, batch), dtype=jnp.int32)
    eps = jnp.asarray(rng.standard_normal(x0.shape, dtype=np.float32))
    x_t = dc.q_sample(s, x0, t, eps)
    key = jax.random.key(1)

    def loss_of(model: Any) -> Callable[[Any], jax.Array]:
        def loss(p: Any) -> jax.Array:
            out = model.apply({"params": p}, x_t, t, train=True, rngs={"dropout": key})
            return jnp.mean(jnp.square(out - eps))
        return loss

    grad_fn = jax.jit(jax.value_and_grad(loss_of(net)))
    _, grads = grad_fn(params)

    def flax_norm(self: Any, name: str) -> Any:
        return fnn.GroupNorm(num_groups=self.config.num_groups, epsilon=self.config.norm_eps,
                             use_fast_variance=False, dtype=self.dtype, name=name)

    with mock.patch.object(jax_unet._Layers, "norm", flax_norm):  # traced here, inside
        flax_grad_fn = jax.jit(jax.value_and_grad(loss_of(build_unet(preset))))
        flax_grad_fn(params)
    tx = optax.adam(1e-4)
    opt_state = tx.init(params)

    @jax.jit
    def update_fn(p: Any, e: Any, o: Any, g: Any) -> Any:
        updates, o2 = tx.update(g, o, p)
        p2 = optax.apply_updates(p, updates)
        e2 = jax.tree.map(lambda a, b: a + 0.005 * (b - a), e, p2)
        finite = jnp.isfinite(optax.tree.norm(g))
        return jax.tree.map(lambda n, old: jnp.where(finite, n, old), (p2, e2, o2), (p, e, o))

    def conv_grad(layout: str) -> Callable[..., Any]:
        dn = ("NHWC", "HWIO", "NHWC") if layout == "NHWC" else ("NCHW", "OIHW", "NCHW")

        def f(xs: list[jax.Array], ws: list[jax.Array], strides: tuple[int, ...]) -> jax.Array:
            total = jnp.zeros((), jnp.float32)
            for xi, wi, st in zip(xs, ws, strides, strict=True):
                total = total + lax.conv_general_dilated(xi, wi, (st, st), "SAME", dimension_numbers=dn).sum()
            return total

        return jax.jit(jax.grad(f, argnums=(0, 1)), static_argnums=2)

    import torch  # only for the shapes: the same layers as the PyTorch model

    from ddpm_core.backends.torch.unet import build_unet as build_torch

    tnet = build_torch(preset)
    shapes = _conv_shapes(tnet, torch.tensor(np.asarray(x_t)), torch.tensor(np.asarray(t)).long())
    strides = tuple(sh["stride"] for sh in shapes)
    nchw = ([jnp.ones(sh["x"], jnp.float32) for sh in shapes], [jnp.ones(sh["w"], jnp.float32) for sh in shapes])
    nhwc = ([jnp.ones(tuple(sh["x"][i] for i in (0, 2, 3, 1)), jnp.float32) for sh in shapes],
            [jnp.ones(tuple(sh["w"][i] for i in (2, 3, 1, 0)), jnp.float32) for sh in shapes])
    g_nhwc, g_nchw = conv_grad("NHWC"), conv_grad("NCHW")
    host = np.asarray(x0_np)
    xg = jnp.asarray(rng.standard_normal((batch, c.image_size, c.image_size, c.ch), dtype=np.float32))

    def norm_grad(gn: Any) -> Callable[[], Any]:
        gn_params = gn.init(jax.random.key(0), xg)
        f = jax.jit(jax.grad(lambda p, v: jnp.sum(jnp.square(fnn.silu(gn.apply(p, v)))), argnums=(0, 1)))
        return lambda: jax.block_until_ready(f(gn_params, xg))

    return {
        "network": lambda: jax.block_until_ready(grad_fn(params)),
        "network flax": lambda: jax.block_until_ready(flax_grad_fn(params)),
        "update": lambda: jax.block_until_ready(update_fn(params, params, opt_state, grads)),
        "convs": lambda: jax.block_until_ready(g_nhwc(*nhwc, strides)),
        "convs NCHW": lambda: jax.block_until_ready(g_nchw(*nchw, strides)),
        "copy": lambda: jax.block_until_ready(jax.device_put(host)),
        "norm": norm_grad(GroupNorm(c.num_groups, c.norm_eps)),
        "norm flax": norm_grad(fnn.GroupNorm(num_groups=c.num_groups, epsilon=c.norm_eps,
                                             use_fast_variance=False)),
    }


def measure(contenders: dict[str, Callable[[], Any]], rounds: int, reps: int) -> dict[str, float]:
    """Median seconds of one call of each contender, interleaved round by round."""
    for fn in contenders.values():
        fn()  # compile / warm up
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            times[name].append((time.perf_counter() - t0) / reps)
    return {k: statistics.median(v) for k, v in times.items()}


def table(torch_s: dict[str, float], jax_s: dict[str, float], batch: int) -> str:
    lines = ["| part | PyTorch ms/step | JAX ms/step | JAX/PyTorch |", "|---|---|---|---|"]
    for name in ("network", "network flax", "update", "convs", "convs NCHW", "norm", "norm flax", "copy"):
        ts = torch_s.get(name, torch_s.get(_SAME_TORCH.get(name, "")))
        js = jax_s[name]
        ratio = f"{js / ts:.2f}x" if ts else "-"
        lines.append(f"| {name} | {1e3 * ts:.2f} | {1e3 * js:.2f} | {ratio} |" if ts else
                     f"| {name} | - | {1e3 * js:.2f} | - |")
    net = torch_s["network"] + torch_s["update"], jax_s["network"] + jax_s["update"] + jax_s["copy"]
    lines.append(f"| network + update (+ copy) | {1e3 * net[0]:.2f} | {1e3 * net[1]:.2f} | "
                 f"{net[1] / net[0]:.2f}x |")
    lines.append(f"\nbatch {batch}; one thread each; the PyTorch column of a JAX-only variant "
                 "(flax, NCHW) repeats its PyTorch counterpart.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="mnist")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args(argv)
    if args.batch < 1 or args.rounds < 1 or args.reps < 1:
        p.error(f"--batch, --rounds and --reps must be >= 1; got {args.batch}, {args.rounds}, {args.reps}")
    if "jax" not in sys.modules:  # XLA reads its flags when it starts
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {ONE_THREAD}".strip()
    tp, jp = torch_parts(args.preset, args.batch), jax_parts(args.preset, args.batch)
    both = {f"torch {k}": v for k, v in tp.items()} | {f"jax {k}": v for k, v in jp.items()}
    got = measure(both, args.rounds, args.reps)
    torch_s = {k[6:]: v for k, v in got.items() if k.startswith("torch ")}
    jax_s = {k[4:]: v for k, v in got.items() if k.startswith("jax ")}
    print(table(torch_s, jax_s, args.batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
