"""Weight conversion between the PyTorch and Flax U-Nets, and safetensors files.

The parity tests randomise *every* weight (the zero-initialised convolutions too),
otherwise the outputs would be zero and the comparison vacuous.
"""

import dataclasses
import math
import os

import numpy as np
import pytest

from ddpm_core.interop.convert import (
    check_state,
    flax_path,
    flax_to_torch,
    load_safetensors,
    save_safetensors,
    torch_to_flax,
)
from ddpm_core.models import get_preset, parameter_shapes, with_head

EPS32 = float(np.finfo(np.float32).eps)
TOL = 1000 * EPS32  # ~1.2e-4, relative to the output's scale


def _random_state(config, seed=0):
    """Canonical weights, all non-zero, scaled for O(1) activations."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in parameter_shapes(config).items():
        noise = rng.standard_normal(shape).astype(np.float32)
        if len(shape) == 1:
            base = 1.0 if name.endswith(".weight") else 0.0  # GroupNorm weights around 1
            state[name] = (base + 0.1 * noise).astype(np.float32)
        else:
            state[name] = (noise / math.sqrt(math.prod(shape[1:]))).astype(np.float32)
    return state


def _inputs(config, batch, seed=0):
    rng = np.random.default_rng(seed)
    s = config.image_size
    x = rng.standard_normal((batch, config.in_channels, s, s)).astype(np.float32)
    return x, rng.integers(0, 1000, batch)


def _assert_same_output(a, b):
    scale = max(1.0, float(np.abs(a).max()))
    np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL * scale)


# --- NumPy only ---------------------------------------------------------------------


def test_flax_path():
    assert flax_path("down.0.block.1.conv1.weight") == ("down_0", "block_1", "conv1", "kernel")
    assert flax_path("temb.dense.0.bias") == ("temb", "dense_0", "bias")
    assert flax_path("mid.block_1.norm1.weight") == ("mid", "block_1", "norm1", "scale")
    assert flax_path("up.3.upsample.conv.weight") == ("up_3", "upsample", "conv", "kernel")
    assert flax_path("norm_out.weight") == ("norm_out", "scale")
    assert flax_path("label_emb.weight") == ("label_emb", "embedding")
    assert flax_path("head.weight") == ("head", "kernel")


@pytest.mark.parametrize("name", ["tiny", "mnist"])
def test_round_trip_is_the_identity(name):
    config = get_preset(name).unet
    state = _random_state(config)
    tree = torch_to_flax(state, config)
    assert tree["conv_in"]["kernel"].shape == (3, 3, config.in_channels, config.ch)
    assert tree["temb"]["dense_0"]["kernel"].shape == (config.ch, 4 * config.ch)
    assert tree["mid"]["attn_1"]["norm"]["scale"].shape == (config.ch * config.ch_mult[-1],)
    back = flax_to_torch(tree, config)
    assert list(back) == list(state)
    for k in state:
        np.testing.assert_array_equal(back[k], state[k])
        assert back[k].dtype == state[k].dtype
    np.testing.assert_array_equal(flax_to_torch({"params": tree}, config)["conv_in.weight"],
                                  state["conv_in.weight"])


def test_conv_layout_is_oihw_to_hwio():
    config = get_preset("tiny").unet
    state = _random_state(config)
    w = state["conv_in.weight"]  # (O, I, kh, kw)
    k = torch_to_flax(state, config)["conv_in"]["kernel"]  # (kh, kw, I, O)
    assert k[1, 2, 0, 5] == w[5, 0, 1, 2]


def test_mismatched_state_is_rejected():
    config = get_preset("tiny").unet
    state = _random_state(config)
    with pytest.raises(ValueError, match="missing=\\['conv_in.weight'\\]"):
        torch_to_flax({k: v for k, v in state.items() if k != "conv_in.weight"}, config)
    with pytest.raises(ValueError, match="unexpected=\\['extra'\\]"):
        check_state({**state, "extra": np.zeros(1)}, config)
    with pytest.raises(ValueError, match="wrong shapes"):
        torch_to_flax({**state, "conv_out.bias": np.zeros(5, np.float32)}, config)
    wider = dataclasses.replace(config, ch=32)
    with pytest.raises(ValueError, match="does not match"):
        torch_to_flax(state, wider)
    tree = torch_to_flax(state, config)
    del tree["conv_out"]["bias"]
    with pytest.raises(ValueError, match="missing=\\['conv_out.bias'\\]"):
        flax_to_torch(tree, config)


def test_safetensors_round_trip_and_atomic_overwrite(tmp_path):
    pytest.importorskip("safetensors")
    state = _random_state(get_preset("tiny").unet)
    path = tmp_path / "model.safetensors"
    save_safetensors(path, {"old": np.zeros(3, np.float32)})
    save_safetensors(path, state, metadata={"preset": "tiny"})
    loaded = load_safetensors(path)
    assert loaded.keys() == state.keys()
    for k in state:
        np.testing.assert_array_equal(loaded[k], state[k])
    assert os.listdir(tmp_path) == ["model.safetensors"]  # no temporary file left


def test_failed_save_leaves_the_old_file(tmp_path):
    pytest.importorskip("safetensors")
    path = tmp_path / "model.safetensors"
    save_safetensors(path, {"a": np.ones(2, np.float32)})
    with pytest.raises(Exception):  # noqa: B017 - an object array cannot be serialised
        save_safetensors(path, {"a": np.array([object()])})
    np.testing.assert_array_equal(load_safetensors(path)["a"], np.ones(2, np.float32))
    assert os.listdir(tmp_path) == ["model.safetensors"]


# --- PyTorch <-> Flax -----------------------------------------------------------------


def _torch_model(config, state):
    torch = pytest.importorskip("torch")
    from ddpm_core.backends.torch import UNet

    with torch.device("meta"):  # skip the (useless) random init
        model = UNet(config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, assign=True)
    return model.eval()


def _torch_forward(model, x, t, *y):
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x), torch.from_numpy(t), *map(torch.from_numpy, y)).numpy()


def _flax_forward(config, params, x, t, *y):
    jax = pytest.importorskip("jax")
    pytest.importorskip("flax")
    from ddpm_core.backends.jax import UNet

    return np.asarray(jax.jit(UNet(config=config).apply)({"params": params}, x, t, *y))


def test_torch_state_dict_round_trip():
    torch = pytest.importorskip("torch")
    from ddpm_core.backends.torch import build_unet

    model = build_unet("tiny", variance="learned")
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    back = flax_to_torch(torch_to_flax(state, model.config), model.config)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()}, strict=True)
    for k in state:
        np.testing.assert_array_equal(back[k], state[k])


@pytest.mark.parametrize(("name", "variance", "batch"), [
    ("tiny", "fixed_small", 4), ("tiny", "learned_range", 4), ("mnist", "learned", 2)])
def test_torch_to_flax_gives_the_same_output(name, variance, batch):
    config = with_head(get_preset(name).unet, variance=variance)
    state = _random_state(config)
    x, t = _inputs(config, batch)
    y_torch = _torch_forward(_torch_model(config, state), x, t)
    y_flax = _flax_forward(config, torch_to_flax(state, config), x, t)
    assert np.abs(y_torch).max() > 0.1  # not vacuous
    _assert_same_output(y_flax, y_torch)


def test_flax_to_torch_gives_the_same_output():
    jax = pytest.importorskip("jax")
    pytest.importorskip("flax")
    from ddpm_core.backends.jax import build_unet
    from ddpm_core.backends.jax.unet import param_shapes

    model = build_unet("tiny", variance="learned")
    # A Flax-side tree (structure and shapes from the Flax model itself), all non-zero.
    rng = np.random.default_rng(1)
    params = jax.tree_util.tree_map(
        lambda s: (1.0 if len(s.shape) == 1 else 0.0) + rng.standard_normal(
            s.shape, dtype=np.float32) / math.sqrt(math.prod(s.shape[:-1])),
        param_shapes(model))
    x, t = _inputs(model.config, 3)
    y_flax = _flax_forward(model.config, params, x, t)
    y_torch = _torch_forward(_torch_model(model.config, flax_to_torch(params, model.config)), x, t)
    assert np.abs(y_flax).max() > 0.1
    _assert_same_output(y_torch, y_flax)


def test_avgpool_variant_gives_the_same_output():
    config = dataclasses.replace(get_preset("tiny").unet, resamp_with_conv=False, dropout=0.1)
    state = _random_state(config)
    x, t = _inputs(config, 2)
    y_torch = _torch_forward(_torch_model(config, state), x, t)
    _assert_same_output(_flax_forward(config, torch_to_flax(state, config), x, t), y_torch)


@pytest.mark.slow
def test_cifar10_single_input_gives_the_same_output():
    config = get_preset("cifar10").unet
    state = _random_state(config)
    x, t = _inputs(config, 1)
    y_torch = _torch_forward(_torch_model(config, state), x, t)
    y_flax = _flax_forward(config, torch_to_flax(state, config), x, t)
    assert np.abs(y_torch).max() > 0.1
    _assert_same_output(y_flax, y_torch)


# --- class-conditional U-Net and the classifier ------------------------------------------


def _conditional(variance="fixed_small", num_classes=10):
    return with_head(dataclasses.replace(get_preset("tiny").unet, num_classes=num_classes),
                     variance=variance)


def test_label_embedding_keeps_its_layout_and_round_trips():
    config = _conditional()
    state = _random_state(config)
    tree = torch_to_flax(state, config)
    np.testing.assert_array_equal(tree["label_emb"]["embedding"], state["label_emb.weight"])  # (K + 1, 4ch)
    back = flax_to_torch(tree, config)
    assert list(back) == list(state)
    for k in state:
        np.testing.assert_array_equal(back[k], state[k])
    with pytest.raises(ValueError, match="missing=\\['label_emb.weight'\\]"):
        check_state({k: v for k, v in state.items() if k != "label_emb.weight"}, config)
    with pytest.raises(ValueError, match="unexpected=\\['label_emb.weight'\\]"):
        check_state(state, get_preset("tiny").unet)


@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
def test_conditional_torch_and_flax_give_the_same_output(variance):
    config = _conditional(variance)
    state = _random_state(config)
    x, t = _inputs(config, 4)
    y = np.array([0, 3, 9, 10])  # 10: the null label
    y_torch = _torch_forward(_torch_model(config, state), x, t, y)
    y_flax = _flax_forward(config, torch_to_flax(state, config), x, t, y)
    assert np.abs(y_torch).max() > 0.1
    _assert_same_output(y_flax, y_torch)
    y_other = _torch_forward(_torch_model(config, state), x, t, (y + 1) % 11)
    assert np.abs(y_other - y_torch).max() > 1e-3  # the labels matter


def test_classifier_round_trip_and_layout():
    from ddpm_core.models import classifier_config

    config = classifier_config("tiny", 10)
    state = _random_state(config)
    tree = torch_to_flax(state, config)
    assert tree["head"]["kernel"].shape == (32, 10) and tree["norm_out"]["scale"].shape == (32,)
    assert "up_0" not in tree and "conv_out" not in tree
    back = flax_to_torch(tree, config)
    assert list(back) == list(state)
    for k in state:
        np.testing.assert_array_equal(back[k], state[k])
    with pytest.raises(ValueError, match="does not match the ClassifierConfig"):
        torch_to_flax(_random_state(get_preset("tiny").unet), config)
