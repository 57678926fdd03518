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
    np.testing.assert_array_equal(out[:2], first)  # batch b draws from (seed, b)


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
