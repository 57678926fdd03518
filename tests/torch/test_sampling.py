"""Sampling from a PyTorch U-Net: DDPM/DDIM, progressive frames, interpolation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import ddpm_core  # noqa: E402
from ddpm_core.backends.torch import api, sampling  # noqa: E402
from ddpm_core.backends.torch.unet import UNet  # noqa: E402
from ddpm_core.models import get_preset, with_head  # noqa: E402


def _net(variance="fixed_small", seed=0):
    torch.manual_seed(seed)
    net = UNet(with_head(get_preset("tiny").unet, variance=variance))
    with torch.no_grad():  # the output convolution starts at zero; make it do something
        net.conv_out.weight.normal_(0, 0.05)
    return net


SCHED = ddpm_core.Schedule.linear(40, 1e-3, 0.2)


@pytest.mark.parametrize(("sampler", "variance", "steps"), [
    ("ddpm", "fixed_small", None), ("ddpm", "fixed_large", 10),
    ("ddpm", "learned_range", None), ("ddim", "fixed_small", 5), ("ddim", "learned", 8),
])
def test_generate_is_seeded_and_reproducible(sampler, variance, steps):
    net = _net(variance)
    kw = dict(n=3, sampler=sampler, steps=steps, variance=variance, eta=0.5)
    a = sampling.generate(net, SCHED, seed=1, **kw)
    b = sampling.generate(net, SCHED, seed=1, **kw)
    c = sampling.generate(net, SCHED, seed=2, **kw)
    assert a.shape == (3, 8, 8, 1) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.all(np.isfinite(a))


def test_batching_splits_the_request():
    net = _net()
    out = sampling.generate(net, SCHED, n=5, sampler="ddim", steps=4, batch_size=2)
    assert out.shape == (5, 8, 8, 1)
    first = sampling.generate(net, SCHED, n=2, sampler="ddim", steps=4, batch_size=2)
    np.testing.assert_array_equal(out[:2], first)  # the same first batch, the same samples


# The U-Net's float32 convolutions round differently at another batch size (measured
# <= 1e-6 after 40 steps); another noise stream moves the images by O(1).
BATCH_TOL = 1e-5


@pytest.mark.parametrize(("sampler", "steps", "eta", "variance"), [
    ("ddpm", None, 0.0, "fixed_small"), ("ddpm", 10, 0.0, "learned_range"),
    ("ddim", 8, 0.5, "fixed_small"), ("ddim", 8, 1.0, "learned"), ("ddim", 8, 0.0, "fixed_small"),
])
def test_sample_j_depends_only_on_seed_and_j(sampler, steps, eta, variance):
    net = _net(variance)
    kw = dict(sampler=sampler, steps=steps, eta=eta, variance=variance, seed=7)
    eight = sampling.generate(net, SCHED, n=8, **kw)
    np.testing.assert_allclose(sampling.generate(net, SCHED, n=4, **kw), eight[:4], rtol=0, atol=BATCH_TOL)
    for bs in (1, 3):
        np.testing.assert_allclose(sampling.generate(net, SCHED, n=8, batch_size=bs, **kw), eight,
                                   rtol=0, atol=BATCH_TOL)
    flat = eight.reshape(8, -1)
    assert min(np.abs(flat[j] - flat[k]).max() for j in range(8) for k in range(j)) > 0.1


def _streams(lo, hi, image=(4, 64, 64), K=11, seed=3):
    return sampling.SampleStreams(seed, lo, hi, image, K, torch.device("cpu"))


def test_streams_are_per_sample_across_chunks():
    whole, part = _streams(0, 5), _streams(2, 4)
    assert whole.chunk == 4  # 2**16 floats of 4x64x64 images: chunks of 4, 4 and 2 steps
    torch.testing.assert_close(part.x_T, whole.x_T[2:4], rtol=0, atol=0)
    for i in range(10, 0, -1):
        torch.testing.assert_close(part(i), whole(i)[2:4], rtol=0, atol=0)
    rows = whole.x_T.reshape(5, -1)
    assert not any(torch.equal(rows[j], rows[k]) for j in range(5) for k in range(j))


def test_stream_of_a_sample_is_its_own_generator_in_chunks():
    """The documented stream: x_T, then the steps K-1 .. 1 drawn ``chunk`` images at a time."""
    s = _streams(6, 7)
    g = torch.Generator().manual_seed(sampling.sample_seeds(3, 6, 7)[0])
    torch.testing.assert_close(s.x_T[0], torch.empty(4, 64, 64).normal_(generator=g), rtol=0, atol=0)
    for i, steps in ((10, 4), (6, 4), (2, 2)):
        block = torch.empty(steps, 4, 64, 64).normal_(generator=g)
        for k in range(steps):
            torch.testing.assert_close(s(i - k)[0], block[k], rtol=0, atol=0)


def test_streams_refuse_steps_out_of_order():
    s = _streams(0, 2)
    s(10)  # draws the chunk of steps 10 .. 7
    with pytest.raises(ValueError, match="noise of step 5 asked for out of order.* the next one is 6"):
        s(5)
    for bad in (0, 11, 2.0):
        with pytest.raises(ValueError, match=r"i must be a step index in \[1, 11\)"):
            s(bad)


def test_sample_seeds_are_distinct_in_their_low_32_bits():
    """PyTorch's CPU generator keeps only the low 32 bits of a seed: they must differ."""
    from ddpm_core.app.training.seeding import step_seed

    base = step_seed(9, 0, 11) & 0xFFFFFFFF
    lo = 2**32 - base - 1000  # cross the wrap-around of (k + j) mod 2**32
    seeds = sampling.sample_seeds(9, lo, lo + 2**17)
    assert len({s & 0xFFFFFFFF for s in seeds}) == 2**17
    assert all(0 <= s < 2**63 for s in seeds)
    assert sampling.sample_seeds(9, lo + 5, lo + 9) == seeds[5:9]
    assert sampling.sample_seeds(10, lo, lo + 4) != seeds[:4]
    with pytest.raises(ValueError, match="sample indices must satisfy"):
        sampling.sample_seeds(9, 3, 2)


@pytest.mark.parametrize(("sampler", "steps", "eta", "variance"), [
    ("ddpm", None, 0.0, "fixed_small"), ("ddpm", 10, 0.0, "fixed_large"),
    ("ddpm", None, 0.0, "learned_range"), ("ddim", 8, 0.5, "fixed_small"), ("ddim", 8, 0.0, "learned"),
    ("dpmpp-2m", 8, 0.0, "fixed_small"), ("dpmpp-2m-sde", 8, 0.0, "learned_range"),
])
def test_static_chain_matches_the_core_loop(sampler, steps, eta, variance):
    """The CUDA-graph step run eagerly on its fixed buffers (tensor step index) gives the core
    loop's images and frames up to float32 coefficient rounding."""
    from ddpm_core.app.sampling import driver
    from ddpm_core.app.sampling.chains import chain_schedule
    from ddpm_core.app.sampling.protocol import ChainSpec
    from ddpm_core.backends.torch.chain import TorchChain

    net = _net(variance)
    spec = ChainSpec(chain_schedule(SCHED, sampler, steps), sampler, eta, "eps", variance, True)
    kw = dict(n=3, seed=2, batch_size=2, frame_steps=(5, 0))
    ref = driver.draw_chain(sampling.BACKEND, TorchChain(net, spec, None), **kw)
    got = driver.draw_chain(sampling.BACKEND, TorchChain(net, spec, None, static=True), **kw)
    assert ref[0].shape == got[0].shape == (3, 1, 8, 8) and ref[1].shape == got[1].shape == (2, 3, 1, 8, 8)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=BATCH_TOL)


def test_cuda_graph_needs_a_cuda_network():
    with pytest.raises(ValueError, match="cuda_graph=True needs the network on a CUDA device; it is on cpu"):
        sampling.generate(_net(), SCHED, n=1, cuda_graph=True)


def test_ddim_eta_zero_is_deterministic_given_x_T():
    net = _net()
    a = sampling.generate(net, SCHED, n=2, sampler="ddim", steps=6, eta=0.0, seed=3)
    b = sampling.generate(net, SCHED, n=2, sampler="ddim", steps=6, eta=1.0, seed=3)
    assert not np.array_equal(a, b)


def test_progressive_frames_end_with_the_sample():
    net = _net()
    frames = sampling.progressive_frames(net, SCHED, n=2, frames=4, seed=5)
    final = sampling.generate(net, SCHED, n=2, seed=5)
    assert frames.shape == (4, 2, 8, 8, 1) and frames.dtype == np.uint8
    from ddpm_core.runs import to_uint8

    np.testing.assert_array_equal(frames[-1], to_uint8(final))  # x0_hat of step 0 = x_0
    with pytest.raises(ValueError, match=r"frames must be an integer in \[1, 40\]"):
        sampling.progressive_frames(net, SCHED, n=1, frames=41)


def test_interpolation_endpoints_and_shape():
    net = _net()
    rng = np.random.default_rng(0)
    a, b = (rng.uniform(-1, 1, (8, 8, 1)).astype(np.float32) for _ in range(2))
    out = sampling.interpolate_images(net, SCHED, a, b, lambdas=[0.0, 0.5, 1.0], t=20, seed=0)
    assert out.shape == (3, 8, 8, 1) and out.dtype == np.uint8
    assert not np.array_equal(out[0], out[2])
    again = sampling.interpolate_images(net, SCHED, a, b, lambdas=[0.0, 0.5, 1.0], t=20, seed=0)
    np.testing.assert_array_equal(out, again)
    with pytest.raises(ValueError, match=r"t must be an integer in \[0, 40\)"):
        sampling.interpolate_images(net, SCHED, a, b, lambdas=[0.5], t=40)
    with pytest.raises(ValueError, match="lambdas must be"):
        sampling.interpolate_images(net, SCHED, a, b, lambdas=[1.5], t=3)


@pytest.mark.parametrize(("kw", "words"), [
    (dict(sampler="plms"), "sampler must be one of"),
    (dict(steps=0), r"steps must be an integer in \[1, 40\]"),
    (dict(steps=41), r"steps must be an integer in \[1, 40\]"),
    (dict(eta=2.0), r"eta must be in \[0, 1\]"),
    (dict(n=0), "n must be an integer >= 1"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
])
def test_bad_arguments(kw, words):
    args = dict(n=1, sampler="ddim", steps=2) | kw
    with pytest.raises(ValueError, match=words):
        sampling.generate(_net(), SCHED, **args)


def test_api_on_a_trained_run(tmp_path):
    pytest.importorskip("sklearn")
    from ddpm_core.runs import TrainOptions

    api.train(TrainOptions(preset="tiny", out=str(tmp_path / "r"), steps=2, progress=False,
                           sample_n=2))
    x = api.sample(tmp_path / "r", n=3, sampler="ddim", steps=5, seed=4)
    assert x.shape == (3, 8, 8, 1) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, api.sample(tmp_path / "r", n=3, sampler="ddim", steps=5,
                                                seed=4))
    raw = api.sample(tmp_path / "r", n=3, sampler="ddim", steps=5, seed=4, use_ema=False)
    assert raw.shape == x.shape
    p = api.progressive(tmp_path / "r", n=2, frames=3, sampler="ddim", steps=6)
    assert p.shape == (3, 2, 8, 8, 1)
    i = api.interpolate(tmp_path / "r", t=100, lambdas=[0, 1], pair=(0, 5))
    assert i.shape == (2, 8, 8, 1)
    with pytest.raises(ValueError, match=r"pair indices must be in \[0, 180\)"):
        api.interpolate(tmp_path / "r", t=100, lambdas=[0, 1], pair=(0, 180))
    from ddpm_core.models import count_parameters

    for name in ("tiny", "cifar10"):
        assert api.param_count(name) == count_parameters(get_preset(name).unet)
