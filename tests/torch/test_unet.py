"""The PyTorch U-Net: parameter counts, shapes, initialisation, layouts, errors."""

import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ddpm_core.backends.torch import UNet, build_unet  # noqa: E402
from ddpm_core.backends.torch.unet import GroupNorm, timestep_embedding  # noqa: E402
from ddpm_core.models import (  # noqa: E402
    count_parameters,
    get_preset,
    list_presets,
    parameter_shapes,
    timestep_frequencies,
)

EPS32 = float(np.finfo(np.float32).eps)
EPS64 = float(np.finfo(np.float64).eps)


def _randomize(model, seed=0):
    """Non-zero weights everywhere (incl. the zero-initialised convs), O(1) activations."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.ndim == 1:  # GroupNorm weights around 1, biases around 0
                p.copy_(0.1 * noise + (1.0 if name.endswith(".weight") else 0.0))
            else:
                p.copy_(noise / math.sqrt(p[0].numel()))
    return model


def _inputs(config, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = config.image_size
    x = torch.randn(batch, config.in_channels, s, s, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    return x, t


@pytest.mark.parametrize("name", list_presets())
def test_parameter_count_and_state_dict_layout(name):
    config = get_preset(name).unet
    with torch.device("meta"):  # no memory, no init: cheap even for 114M parameters
        model = UNet(config)
    n = sum(p.numel() for p in model.parameters())
    assert n == count_parameters(config)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(state.items()) == list(parameter_shapes(config).items())


def test_cifar10_has_the_papers_35_7m_parameters():
    with torch.device("meta"):
        model = build_unet("cifar10")
    n = sum(p.numel() for p in model.parameters())
    assert n == 35_746_307  # the official TF implementation's count
    assert abs(n - 35.7e6) / 35.7e6 < 0.005


@pytest.mark.parametrize(("variance", "channels"), [
    ("fixed_small", 1), ("fixed_large", 1), ("learned", 2), ("learned_range", 2)])
def test_output_shape_and_head(variance, channels):
    model = build_unet("tiny", variance=variance)
    x, t = _inputs(model.config, batch=2)
    assert model(x, t).shape == (2, channels, 8, 8)


def test_mnist_output_shape():
    model = build_unet("mnist").eval()
    x, t = _inputs(model.config, batch=2)
    with torch.no_grad():
        assert model(x, t).shape == (2, 1, 28, 28)


def test_zero_initialised_output_at_init():
    model = build_unet(get_preset("tiny"), variance="learned")
    x, t = _inputs(model.config)
    assert torch.count_nonzero(model(x, t)) == 0
    # ... while the body is not trivially zero.
    assert torch.count_nonzero(model.conv_in.weight) > 0


def test_output_depends_on_t_and_not_on_other_samples():
    model = _randomize(build_unet("tiny")).eval()
    x, t = _inputs(model.config, batch=3)
    with torch.no_grad():
        y = model(x, t)
        y_other_t = model(x, (t + 1) % 1000)
        y_first = model(x[:1], t[:1])
    assert (y - y_other_t).abs().amax(dim=(1, 2, 3)).min() > 1e-3
    torch.testing.assert_close(y_first, y[:1], rtol=100 * EPS32, atol=100 * EPS32)


def test_scalar_t_broadcasts():
    model = _randomize(build_unet("tiny")).eval()
    x, _ = _inputs(model.config, batch=2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, 7), model(x, torch.tensor([7, 7])))


def test_timestep_embedding_formula():
    t = torch.tensor([0, 1, 17, 999])
    emb = timestep_embedding(t, 16)
    w = timestep_frequencies(16).astype(np.float64)
    args = t.numpy()[:, None].astype(np.float64) * w[None]
    expected = np.concatenate([np.sin(args), np.cos(args)], axis=1)
    np.testing.assert_allclose(emb.numpy(), expected, rtol=0, atol=1000 * EPS32)
    assert timestep_embedding(t, 15).shape == (4, 15)


def test_channels_last_gives_the_same_output():
    model = _randomize(build_unet("tiny")).eval()
    x, t = _inputs(model.config)
    with torch.no_grad():
        y = model(x, t)
        model_cl = model.to(memory_format=torch.channels_last)
        y_cl = model_cl(x.contiguous(memory_format=torch.channels_last), t)
    torch.testing.assert_close(y_cl, y, rtol=100 * EPS32, atol=100 * EPS32)


def test_bf16_autocast_runs_and_backpropagates():
    model = _randomize(build_unet("tiny"))
    x, t = _inputs(model.config)
    y = model(x, t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_bf16 = model(x.contiguous(memory_format=torch.channels_last), t)
    eps_bf16 = float(torch.finfo(torch.bfloat16).eps)
    err = (y_bf16.float() - y).abs().max() / y.abs().max()
    assert err < 20 * eps_bf16
    y_bf16.float().square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_group_norm_keeps_the_autocast_dtype():
    """Under autocast a bf16 activation is normalised in bf16 (statistics in float32 inside
    the kernel): the same numbers as float32 GroupNorm rounded once, and float32 gradients."""
    norm = GroupNorm(4, 8, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(0))
    ref = torch.nn.functional.group_norm(x.bfloat16().float(), 4, norm.weight, norm.bias, 1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = norm(x.bfloat16())
        y32 = norm(x)  # float32 in: nn.GroupNorm's float32 result
    assert y.dtype == torch.bfloat16 and y32.dtype == torch.float32
    torch.testing.assert_close(y.float(), ref, rtol=2 * float(torch.finfo(torch.bfloat16).eps), atol=1e-2)
    torch.testing.assert_close(y32, torch.nn.GroupNorm.forward(norm, x), rtol=0, atol=0)
    y.float().sum().backward()
    assert norm.weight.grad.dtype == torch.float32 and norm.bias.grad.dtype == torch.float32


def test_every_norm_of_the_unet_runs_in_bf16_under_autocast():
    model = _randomize(build_unet("tiny"))
    seen = []
    for m in model.modules():
        if isinstance(m, torch.nn.GroupNorm):
            assert isinstance(m, GroupNorm)
            m.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    x, t = _inputs(model.config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(x, t)
    assert seen and set(seen) == {torch.bfloat16}


def test_dropout_is_active_only_in_training():
    config = dataclasses.replace(get_preset("tiny").unet, dropout=0.5)
    model = _randomize(UNet(config))
    x, t = _inputs(config)
    torch.manual_seed(0)
    a, b = model(x, t), model(x, t)
    assert not torch.equal(a, b)
    model.eval()
    torch.testing.assert_close(model(x, t), model(x, t), rtol=0, atol=0)


def test_avgpool_resampling_variant_runs():
    config = dataclasses.replace(get_preset("tiny").unet, resamp_with_conv=False)
    model = _randomize(UNet(config))
    x, t = _inputs(config)
    assert model(x, t).shape == x.shape


@pytest.mark.parametrize(("x_shape", "t_shape", "match"), [
    ((2, 3, 8, 8), (2,), "x must have shape"),
    ((2, 1, 16, 16), (2,), "x must have shape"),
    ((1, 8, 8), (1,), "x must have shape"),
    ((2, 1, 8, 8), (3,), "t must have shape"),
])
def test_bad_inputs_raise(x_shape, t_shape, match):
    model = build_unet("tiny")
    with pytest.raises(ValueError, match=match):
        model(torch.zeros(x_shape), torch.zeros(t_shape, dtype=torch.int64))


def test_build_unet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="valid names"):
        build_unet("cifar")
    with pytest.raises(ValueError, match="variance"):
        build_unet("tiny", variance="large")
    with pytest.raises(TypeError, match="preset_or_config"):
        build_unet(42)


def test_timestep_embedding_in_float64_uses_float64_frequencies():
    t = torch.tensor([0, 1, 17, 999])
    half = 8
    w = np.exp(-math.log(10000.0) / (half - 1) * np.arange(half, dtype=np.float64))  # not rounded
    args = t.numpy()[:, None].astype(np.float64) * w[None]
    expected = np.concatenate([np.sin(args), np.cos(args)], axis=1)
    emb = timestep_embedding(t, 16, torch.float64)
    assert emb.dtype == torch.float64
    # |t| <= 999: the sines' arguments carry ~1e3 ulps of float64 (float32 would be 1e-4 off)
    np.testing.assert_allclose(emb.numpy(), expected, rtol=0, atol=1000 * EPS64)
    assert timestep_embedding(t, 15, torch.float64).shape == (4, 15)


@pytest.mark.parametrize("name", ["tiny", "digits"])
def test_float64_forward_pass(name):
    model = _randomize(build_unet(name)).eval()
    x, t = _inputs(model.config, batch=2)
    with torch.no_grad():
        y32 = model(x, t)
        y64 = model.double()(x.double(), t)
    assert y64.dtype == torch.float64
    # the float32 pass is the one that rounds (measured ~15 eps32 of the output's scale)
    scale = max(1.0, float(y64.abs().max()))
    np.testing.assert_allclose(y32.numpy(), y64.numpy(), rtol=0, atol=100 * EPS32 * scale)


# ---- class-conditional U-Net ------------------------------------------------------------

K = 10


def _conditional(num_classes=K, **kw):
    return UNet(dataclasses.replace(get_preset("tiny").unet, num_classes=num_classes, **kw))


def test_conditional_state_dict_has_a_label_embedding_of_k_plus_1_rows():
    model = _conditional()
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(state.items()) == list(parameter_shapes(model.config).items())
    assert state["label_emb.weight"] == (K + 1, model.config.temb_channels)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(model.config)
    assert count_parameters(model.config) - count_parameters(get_preset("tiny").unet) == (K + 1) * 64
    assert "label_emb.weight" not in build_unet("tiny").state_dict()


def test_labels_are_added_to_the_time_embedding_after_the_mlp():
    """y shifts the time MLP's output by label_emb[y]: the same as an unconditional U-Net
    whose last time-MLP bias is moved by that row (the null row K included)."""
    model = _randomize(_conditional()).eval()
    plain = UNet(get_preset("tiny").unet).eval()
    x, t = _inputs(model.config, batch=2)
    for label in (3, K):
        state = {k: v.clone() for k, v in model.state_dict().items() if k != "label_emb.weight"}
        state["temb.dense.1.bias"] += model.label_emb.weight[label].detach()
        plain.load_state_dict(state)
        with torch.no_grad():
            y = model(x, t, torch.full((2,), label))
            torch.testing.assert_close(y, plain(x, t), rtol=100 * EPS32, atol=100 * EPS32)
            assert (y - model(x, t, torch.full((2,), (label + 1) % (K + 1)))).abs().max() > 1e-3


def test_scalar_label_broadcasts_and_samples_stay_independent():
    model = _randomize(_conditional()).eval()
    x, t = _inputs(model.config, batch=3)
    labels = torch.tensor([0, K, 4])
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, 4)[2], model(x, t, labels)[2])
        torch.testing.assert_close(model(x[:1], t[:1], labels[:1]), model(x, t, labels)[:1],
                                   rtol=100 * EPS32, atol=100 * EPS32)


@pytest.mark.parametrize(("num_classes", "y", "error", "match"), [
    (K, None, ValueError, "class-conditional.*pass labels y"),
    (0, torch.tensor([1, 2]), ValueError, "unconditional.*takes no labels"),
    (K, torch.tensor([0, K + 1]), ValueError, r"y must lie in \[0, 10\].*\[0, 11\]"),
    (K, torch.tensor([-1, 0]), ValueError, r"y must lie in \[0, 10\]"),
    (K, torch.tensor([0.0, 1.0]), TypeError, "integer class labels"),
    (K, torch.tensor([0, 1, 2]), ValueError, r"y must have shape \(2,\)"),
])
def test_label_errors(num_classes, y, error, match):
    model = _conditional(num_classes)
    x, t = _inputs(model.config, batch=2)
    with pytest.raises(error, match=match):
        model(x, t, y)


def test_num_classes_must_be_a_non_negative_int():
    for bad in (-1, True, 2.0):
        with pytest.raises(ValueError, match="num_classes"):
            dataclasses.replace(get_preset("tiny").unet, num_classes=bad)
