"""The compiled JAX sampler: one lax.scan == Python loop == the core's sample_loop."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
import jax.numpy as jnp  # noqa: E402

from ddpm_core import Schedule, sample_loop  # noqa: E402
from ddpm_core.backends.jax.sampling import (  # noqa: E402
    Chain,
    Sampler,
    chain_schedule,
    progressive_steps,
    sample_keys,
)
from ddpm_core.backends.jax.unet import build_unet, param_shapes  # noqa: E402

T = 40
SHAPE = (1, 8, 8)
# Float32 chains of K steps: allow K rounding errors of a few ulps on values of order 1.
TOL = 64 * float(np.finfo(np.float32).eps)


def _net_params(variance="fixed_small"):
    """A tiny U-Net with random weights drawn in NumPy (no XLA init to compile)."""
    net = build_unet("tiny", variance=variance)
    rng = np.random.default_rng(0)

    def leaf(path, s):
        name = str(path[-1].key)
        if name == "kernel":  # fan-in scaled, so activations stay of order 1
            return rng.standard_normal(s.shape).astype(np.float32) / np.sqrt(np.prod(s.shape[:-1]))
        return (name == "scale") + 0.05 * rng.standard_normal(s.shape).astype(np.float32)

    return net, jax.tree_util.tree_map_with_path(leaf, param_shapes(net))


@pytest.fixture(scope="module")
def tiny():
    return _net_params()


@pytest.fixture(scope="module")
def ddpm10(tiny):
    """One compiled 10-step DDPM sampler shared by several tests (compiles once)."""
    return _sampler(tiny[0], "ddpm", 10)


def _sampler(net, sampler="ddpm", steps=None, eta=0.0, variance="fixed_small"):
    chain = Chain(chain_schedule(Schedule.linear(T), sampler, steps), sampler, eta=eta,
                  variance=variance)
    return Sampler(lambda p, x, t: net.apply({"params": p}, x, t), chain, SHAPE)


@pytest.mark.parametrize("sampler,eta", [("ddpm", 0.0), ("ddim", 0.5), ("dpmpp-2m", 0.0), ("dpmpp-2m-sde", 0.0)])
def test_compiled_chain_equals_python_loop(tiny, ddpm10, sampler, eta):
    net, params = tiny
    s = ddpm10 if sampler == "ddpm" else _sampler(net, sampler, 10, eta)
    scan, _ = s.generate(params, n=3, seed=4)
    loop, _ = s.generate(params, n=3, seed=4, loop=True)
    np.testing.assert_allclose(scan, loop, rtol=0, atol=TOL)
    assert np.isfinite(scan).all() and scan.std() > 0.1


@pytest.mark.parametrize("sampler", ["ddpm", "dpmpp-2m", "dpmpp-2m-sde"])
def test_compiled_chain_equals_core_sample_loop(tiny, ddpm10, sampler):
    """Same keys -> same image as the core's own loop driving the (jitted) model; the scan
    carries a multistep sampler's previous x0_hat."""
    net, params = tiny
    s = ddpm10 if sampler == "ddpm" else _sampler(net, sampler, 10)
    keys = sample_keys(7, np.arange(2), s.num_steps)
    draw = jax.vmap(lambda k: jax.random.normal(k, SHAPE, jnp.float32))
    x_T = draw(keys[:, 0])
    model = jax.jit(lambda x, t: net.apply({"params": params}, x, t.astype(jnp.int32)))
    K = s.num_steps
    ref = None
    for st in sample_loop(s.chain.schedule, model, x_T, lambda i: draw(keys[:, K - i]),
                          sampler=sampler, clip=True):
        ref = st.x
    x, _ = s.run(params, x_T, keys[:, 1:])
    np.testing.assert_allclose(np.asarray(x), np.asarray(ref), rtol=0, atol=TOL)


def test_seed_gives_same_images_whatever_the_batch_size(tiny, ddpm10):
    net, params = tiny
    s = ddpm10
    whole, _ = s.generate(params, n=5, seed=2)
    parts, _ = s.generate(params, n=5, seed=2, batch_size=2)
    np.testing.assert_allclose(parts, whole, rtol=0, atol=TOL)
    other, _ = s.generate(params, n=5, seed=3)
    assert np.abs(other - whole).max() > 0.1


def test_progressive_frames_end_at_the_sample(tiny, ddpm10):
    net, params = tiny
    s = ddpm10
    keep = progressive_steps(s.num_steps, 4)
    assert keep == [9, 6, 3, 0]
    x, frames = s.generate(params, n=2, seed=0, frame_steps=keep)
    assert frames.shape == (4, 2, *SHAPE)
    np.testing.assert_allclose(frames[-1], x, rtol=0, atol=TOL)  # step 0 returns x0_hat
    assert np.abs(frames[0] - frames[-1]).max() > 1e-3


def test_learned_variance_model_samples():
    net, params = _net_params("learned_range")
    s = _sampler(net, "ddpm", 3, variance="learned_range")
    x, _ = s.generate(params, n=2, seed=0)
    assert x.shape == (2, *SHAPE) and np.isfinite(x).all()


def test_interpolation_endpoints_and_determinism(tiny):
    net, params = tiny
    s = _sampler(net, "ddpm")
    rng = np.random.default_rng(0)
    a, b = (np.clip(rng.standard_normal(SHAPE), -1, 1).astype(np.float32) for _ in range(2))
    out = s.interpolate(params, a, b, lambdas=[0.0, 0.5, 1.0], t=5, seed=1)
    again = s.interpolate(params, a, b, lambdas=[1.0], t=5, seed=1)
    assert out.shape == (3, *SHAPE)
    np.testing.assert_allclose(again[0], out[2], rtol=0, atol=TOL)
    assert np.abs(out[0] - out[2]).max() > 0.1
    with pytest.raises(ValueError, match="t must be an integer"):
        s.interpolate(params, a, b, lambdas=[0.5], t=T, seed=1)


def test_argument_errors(tiny):
    net, _ = tiny
    with pytest.raises(ValueError, match="steps must be an integer"):
        chain_schedule(Schedule.linear(T), "ddim", T + 1)
    with pytest.raises(ValueError, match="sampler must be one of"):
        chain_schedule(Schedule.linear(T), "euler", None)
    with pytest.raises(ValueError, match="eta must be in"):
        _sampler(net, "ddim", 5, eta=1.5)
    with pytest.raises(ValueError, match="frames must be"):
        progressive_steps(10, 11)
