"""The Flax U-Net: the same parameters as the PyTorch one, shapes, init, errors."""

import dataclasses
import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
import flax.linen as fnn  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from ddpm_core.backends.jax import UNet, build_unet, init_params  # noqa: E402
from ddpm_core.backends.jax.unet import (  # noqa: E402
    GroupNorm,
    LabelEmbedding,
    param_shapes,
    timestep_embedding,
)
from ddpm_core.interop.convert import flax_path, torch_to_flax  # noqa: E402
from ddpm_core.models import (  # noqa: E402
    count_parameters,
    get_preset,
    list_presets,
    parameter_shapes,
    timestep_frequencies,
)

EPS32 = float(np.finfo(np.float32).eps)


def _flat_shapes(tree, prefix=()):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat_shapes(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = tuple(v.shape)
    return out


def _expected_flax_shapes(config):
    """The canonical (PyTorch) layout, moved to Flax paths and layouts."""
    out = {}
    for name, shape in parameter_shapes(config).items():
        path = flax_path(name)
        if len(shape) == 4:  # (O, I, kh, kw) -> (kh, kw, I, O)
            shape = (shape[2], shape[3], shape[1], shape[0])
        out[path] = shape[::-1] if len(shape) == 2 and path[-1] == "kernel" else shape
    return out


def _random_params(config, seed=0):
    """Random non-zero weights everywhere (incl. the zero-initialised convs), O(1)
    activations; drawn with NumPy in the canonical layout (no slow JAX init compile)."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in parameter_shapes(config).items():
        noise = rng.standard_normal(shape).astype(np.float32)
        base = 1.0 if len(shape) == 1 and name.endswith(".weight") else 0.0
        scale = 0.1 if len(shape) == 1 else 1 / math.sqrt(math.prod(shape[1:]))
        state[name] = (base + scale * noise).astype(np.float32)
    return torch_to_flax(state, config)


def _inputs(config, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    s = config.image_size
    x = rng.standard_normal((batch, config.in_channels, s, s)).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(rng.integers(0, 1000, batch))


@pytest.mark.parametrize("name", list_presets())
def test_parameter_count_and_tree_match_the_canonical_layout(name):
    config = get_preset(name).unet
    shapes = param_shapes(build_unet(config))  # jax.eval_shape: nothing is allocated
    n = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes))
    assert n == count_parameters(config)
    assert _flat_shapes(shapes) == _expected_flax_shapes(config)


def test_cifar10_has_the_papers_35_7m_parameters():
    shapes = param_shapes(build_unet("cifar10"))
    assert sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(shapes)) == 35_746_307


@pytest.fixture(scope="module")
def tiny():
    """The tiny preset with a 2C head: (model, randomised params, jitted apply)."""
    model = build_unet("tiny", variance="learned_range")
    return model, _random_params(model.config), jax.jit(model.apply)


def test_output_shape_and_zero_output_at_init(tiny):
    model, _, apply = tiny
    params = init_params(model, jax.random.key(0))
    x, t = _inputs(model.config)
    y = apply({"params": params}, x, t)
    assert y.shape == (3, 2, 8, 8) and y.dtype == jnp.float32
    assert not np.any(np.asarray(y))
    assert np.any(np.asarray(params["conv_in"]["kernel"]))


def test_output_depends_on_t_and_not_on_other_samples(tiny):
    model, params, apply = tiny
    x, t = _inputs(model.config)
    y = apply({"params": params}, x, t)
    y_other_t = apply({"params": params}, x, (t + 1) % 1000)
    y_other_x2 = apply({"params": params}, x.at[2].set(0.0), t.at[2].set(0))
    assert float(jnp.abs(y - y_other_t).max(axis=(1, 2, 3)).min()) > 1e-3
    np.testing.assert_allclose(y_other_x2[:2], y[:2], rtol=100 * EPS32, atol=100 * EPS32)


def test_scalar_t_broadcasts(tiny):
    model, params, _ = tiny
    x, _ = _inputs(model.config)
    out = jax.eval_shape(model.apply, {"params": params}, x, 5)  # traced only: no compile
    assert out.shape == (3, 2, 8, 8)
    assert model._check_inputs(x, 5).tolist() == [5, 5, 5]


def test_timestep_embedding_formula():
    t = jnp.array([0, 1, 17, 999])
    w = timestep_frequencies(16).astype(np.float64)
    args = np.asarray(t)[:, None].astype(np.float64) * w[None]
    expected = np.concatenate([np.sin(args), np.cos(args)], axis=1)
    np.testing.assert_allclose(timestep_embedding(t, 16), expected, rtol=0, atol=1000 * EPS32)
    assert timestep_embedding(t, 15).shape == (4, 15)


def test_dropout_needs_a_key_and_is_active_only_in_training():
    config = dataclasses.replace(get_preset("tiny").unet, dropout=0.5)
    model = UNet(config=config)
    params = _random_params(config)
    x, t = _inputs(config)
    train = jax.jit(lambda p, k: model.apply({"params": p}, x, t, train=True,
                                             rngs={"dropout": k}))
    assert not np.array_equal(train(params, jax.random.key(1)), train(params, jax.random.key(2)))
    np.testing.assert_array_equal(train(params, jax.random.key(1)),
                                  train(params, jax.random.key(1)))
    with pytest.raises(Exception, match="dropout"):  # noqa: B017 - flax's own error type
        model.apply({"params": params}, x, t, train=True)


def test_bf16_compute_dtype(tiny):
    model, params, apply = tiny
    model_bf16 = build_unet("tiny", variance="learned_range", dtype=jnp.bfloat16)
    x, t = _inputs(model.config)
    y_bf16 = jax.jit(model_bf16.apply)({"params": params}, x, t)
    y = apply({"params": params}, x, t)
    assert y_bf16.dtype == jnp.bfloat16
    eps_bf16 = float(jnp.finfo(jnp.bfloat16).eps)
    err = float(jnp.abs(y_bf16.astype(jnp.float32) - y).max() / jnp.abs(y).max())
    assert err < 20 * eps_bf16


def _group_norm_f64(x, groups, eps, scale, bias):
    """GroupNorm of NHWC ``x`` in float64 NumPy: the reference."""
    x = np.asarray(x, np.float64)
    b, c = x.shape[0], x.shape[-1]
    g = x.reshape(b, -1, groups, c // groups)
    mean = g.mean(axis=(1, 3), keepdims=True)
    var = ((g - mean) ** 2).mean(axis=(1, 3), keepdims=True)
    return ((g - mean) / np.sqrt(var + eps)).reshape(x.shape) * scale + bias


@pytest.mark.parametrize("shape,groups", [((3, 7, 5, 16), 8), ((2, 4, 4, 6), 3), ((2, 9, 4), 2),
                                          ((2, 3, 3, 8), 1), ((2, 3, 3, 8), 8)])
def test_group_norm_matches_flax_and_a_float64_reference(shape, groups):
    rng = np.random.default_rng(0)
    x = jnp.asarray(3.0 + 2.0 * rng.standard_normal(shape), jnp.float32)  # mean >> spread
    ours = GroupNorm(groups, 1e-6)
    flax_gn = fnn.GroupNorm(groups, epsilon=1e-6, use_fast_variance=False)
    params = ours.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, params) == jax.tree.map(jnp.shape, flax_gn.init(
        jax.random.key(0), x))
    params = {"params": {"scale": jnp.asarray(rng.standard_normal(shape[-1]), jnp.float32),
                         "bias": jnp.asarray(rng.standard_normal(shape[-1]), jnp.float32)}}
    p = params["params"]
    expected = _group_norm_f64(x, groups, 1e-6, np.asarray(p["scale"]), np.asarray(p["bias"]))
    y = ours.apply(params, x)
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(y, expected, rtol=0, atol=64 * EPS32 * np.abs(expected).max())
    np.testing.assert_allclose(y, flax_gn.apply(params, x), rtol=0,
                               atol=64 * EPS32 * np.abs(expected).max())

    def loss(module, p, v):
        return jnp.sum(jnp.sin(module.apply(p, v)))
    grads = jax.grad(loss, argnums=(1, 2))(ours, params, x)
    flax_grads = jax.grad(loss, argnums=(1, 2))(flax_gn, params, x)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(flax_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=256 * EPS32 * float(jnp.abs(b).max()))


def test_group_norm_dtypes_and_errors():
    x = jnp.ones((2, 4, 4, 8), jnp.bfloat16) + jnp.arange(8, dtype=jnp.bfloat16)
    gn = GroupNorm(4, 1e-6, dtype=jnp.bfloat16)
    params = gn.init(jax.random.key(0), x)
    assert params["params"]["scale"].dtype == jnp.float32
    assert gn.apply(params, x).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match="channels 8 must be divisible by num_groups=3"):
        GroupNorm(3).init(jax.random.key(0), x)


def test_avgpool_resampling_variant_runs():
    config = dataclasses.replace(get_preset("tiny").unet, resamp_with_conv=False)
    model = UNet(config=config)
    params = _random_params(config)
    x, t = _inputs(config)
    assert jax.jit(model.apply)({"params": params}, x, t).shape == x.shape


@pytest.mark.parametrize(("x_shape", "t_shape", "match"), [
    ((2, 3, 8, 8), (2,), "x must have shape"),
    ((2, 8, 8, 1), (2,), "x must have shape"),  # NHWC is not accepted
    ((2, 1, 8, 8), (3,), "t must have shape"),
])
def test_bad_inputs_raise(tiny, x_shape, t_shape, match):
    model, params, apply = tiny
    with pytest.raises(ValueError, match=match):
        apply({"params": params}, jnp.zeros(x_shape), jnp.zeros(t_shape, jnp.int32))


def test_build_unet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="valid names"):
        build_unet("cifar")
    with pytest.raises(ValueError, match="variance"):
        build_unet("tiny", variance="large")
    with pytest.raises(TypeError, match="preset_or_config"):
        build_unet(42)


# ---- class-conditional U-Net ------------------------------------------------------------

K = 10


@pytest.fixture(scope="module")
def conditional():
    """The tiny preset with 10 classes: (model, randomised params, jitted apply)."""
    model = UNet(config=dataclasses.replace(get_preset("tiny").unet, num_classes=K))
    return model, _random_params(model.config), jax.jit(model.apply)


def test_conditional_tree_has_a_label_embedding_of_k_plus_1_rows(conditional):
    model, _, _ = conditional
    shapes = param_shapes(model)
    assert shapes["label_emb"]["embedding"].shape == (K + 1, model.config.temb_channels)
    assert _flat_shapes(shapes) == _expected_flax_shapes(model.config)
    n = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes))
    assert n == count_parameters(model.config)
    assert "label_emb" not in param_shapes(build_unet("tiny"))
    table = LabelEmbedding(config=model.config).init(jax.random.key(0), jnp.zeros(2, jnp.int32))
    assert 0.8 < float(jnp.std(table["params"]["embedding"])) < 1.2  # N(0, 1), as nn.Embedding


def test_labels_are_added_to_the_time_embedding_after_the_mlp(conditional):
    """Row y moved into the last time-MLP bias (and zeroed) gives the same output: the
    label embedding is added after the MLP. The null row K too."""
    model, params, apply = conditional
    x, t = _inputs(model.config, batch=2)
    table = jnp.asarray(params["label_emb"]["embedding"])
    dense_1 = params["temb"]["dense_1"]
    for label in (3, K):
        shifted = {**params, "label_emb": {"embedding": table.at[label].set(0.0)},
                   "temb": {**params["temb"], "dense_1": {**dense_1, "bias": dense_1["bias"] + table[label]}}}
        y = apply({"params": params}, x, t, jnp.full((2,), label))
        np.testing.assert_allclose(y, apply({"params": shifted}, x, t, jnp.full((2,), label)),
                                   rtol=100 * EPS32, atol=100 * EPS32)
        other = apply({"params": params}, x, t, jnp.full((2,), (label + 1) % (K + 1)))
        assert float(jnp.abs(y - other).max()) > 1e-3


def test_out_of_range_labels_give_nan_under_jit_not_another_row(conditional):
    model, params, apply = conditional
    x, t = _inputs(model.config, batch=2)
    y = np.asarray(apply({"params": params}, x, t, jnp.array([K + 1, -1])))
    assert np.all(np.isnan(y))


def test_concrete_labels_closed_over_by_jit_are_checked(conditional):
    model, params, _ = conditional
    x, t = _inputs(model.config, batch=2)
    labels = jnp.array([0, K + 1])
    with pytest.raises(ValueError, match=r"y must lie in \[0, 10\]"):
        jax.eval_shape(lambda p: model.apply({"params": p}, x, t, labels), params)


@pytest.mark.parametrize(("num_classes", "y", "error", "match"), [
    (K, None, ValueError, "class-conditional.*pass labels y"),
    (0, np.array([1, 2]), ValueError, "unconditional.*takes no labels"),
    (K, np.array([0, K + 1]), ValueError, r"y must lie in \[0, 10\].*\[0, 11\]"),
    (K, np.array([-1, 0]), ValueError, r"y must lie in \[0, 10\]"),
    (K, np.array([0.0, 1.0]), TypeError, "integer class labels"),
    (K, np.array([0, 1, 2]), ValueError, r"y must have shape \(2,\)"),
])
def test_label_errors(num_classes, y, error, match):
    model = UNet(config=dataclasses.replace(get_preset("tiny").unet, num_classes=num_classes))
    x, t = _inputs(model.config, batch=2)
    labels = None if y is None else jnp.asarray(y)
    with pytest.raises(error, match=match):  # checked while tracing: nothing is compiled
        jax.eval_shape(lambda: model.init(jax.random.key(0), x, t, labels))
