"""The Flax noise-aware classifier: layout, the batched gradient of log p(y | x_t, t), and
agreement with the PyTorch classifier on converted weights."""

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
import jax.numpy as jnp  # noqa: E402

from ddpm_core.backends.jax.classifier import (  # noqa: E402
    Classifier,
    build_classifier,
    init_params,
    log_prob_grad,
)
from ddpm_core.backends.jax.unet import param_shapes  # noqa: E402
from ddpm_core.interop.convert import flax_path, flax_to_torch, torch_to_flax  # noqa: E402
from ddpm_core.models import classifier_config, count_parameters, parameter_shapes  # noqa: E402

EPS32 = float(np.finfo(np.float32).eps)
K = 10
CONFIG = classifier_config("tiny", K)


def _random_state(config, seed=0):
    """Canonical weights, all non-zero (the zero-initialised head too), O(1) activations."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in parameter_shapes(config).items():
        noise = rng.standard_normal(shape).astype(np.float32)
        if len(shape) == 1:
            state[name] = ((1.0 if name.endswith(".weight") else 0.0) + 0.1 * noise).astype(np.float32)
        else:
            state[name] = (noise / math.sqrt(math.prod(shape[1:]))).astype(np.float32)
    return state


def _inputs(batch=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 1, 8, 8)).astype(np.float32)
    return x, rng.integers(0, 1000, batch), rng.integers(0, K, batch)


@pytest.fixture(scope="module")
def model():
    """(module, randomised params, jitted batched gradient)."""
    net = build_classifier(CONFIG)
    params = torch_to_flax(_random_state(CONFIG), CONFIG)
    return net, params, jax.jit(lambda p, x, t, y: log_prob_grad(net, p, x, t, y))


@pytest.fixture(scope="module")
def computed(model):
    """The batched gradient, and the logits and their full (B, K, B, C, H, W) Jacobian on
    one batch: two compiled functions shared by the tests below."""
    net, params, grad_fn = model
    x, t, y = _inputs(batch=4)

    def logits(z):
        out = net.apply({"params": params}, z, t)
        return out, out

    jac, out = jax.jit(jax.jacrev(logits, has_aux=True))(x)
    return {"x": x, "t": t, "y": y, "grad": np.asarray(grad_fn(params, x, t, y)),
            "jac": np.asarray(jac), "logits": np.asarray(out)}


def test_tree_is_the_canonical_layout():
    net = build_classifier("tiny", K)
    assert net.classifier_config == CONFIG
    shapes = param_shapes(net)
    n = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes))
    assert n == count_parameters(CONFIG)
    paths = {flax_path(name) for name in parameter_shapes(CONFIG)}
    flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
    assert {tuple(k.key for k in path) for path, _ in flat} == paths


def test_head_is_zero_initialised_so_an_untrained_classifier_is_uniform():
    params = init_params(build_classifier("tiny", K), jax.random.key(0))
    assert not np.any(np.asarray(params["head"]["kernel"])) and not np.any(np.asarray(params["head"]["bias"]))
    assert np.any(np.asarray(params["conv_in"]["kernel"]))


def test_batched_gradient_is_each_samples_gradient_of_its_log_softmax(computed):
    """From the Jacobian J of the logits: samples do not interact (off-diagonal blocks are
    0), and sample i's gradient is grad log p_y = J_y - sum_k p_k J_k of its own block."""
    grad, jac, y = computed["grad"], computed["jac"], computed["y"]
    assert grad.shape == computed["x"].shape and grad.dtype == np.float32 and np.abs(grad).max() > 1e-3
    p = np.exp(computed["logits"] - computed["logits"].max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    for i in range(4):
        others = np.delete(jac[i], i, axis=1)
        assert np.abs(others).max() <= 10 * EPS32 * np.abs(jac[i, :, i]).max()
        j = jac[i, :, i]
        expected = j[y[i]] - np.tensordot(p[i], j, axes=1)
        np.testing.assert_allclose(grad[i], expected, rtol=1e-4, atol=1e-4 * np.abs(j).max())


def test_torch_and_flax_classifiers_agree_on_converted_weights(model, computed):
    torch = pytest.importorskip("torch")
    from ddpm_core.backends.torch.classifier import Classifier as TorchClassifier
    from ddpm_core.backends.torch.classifier import log_prob_grad as torch_log_prob_grad

    _, params, _ = model
    with torch.device("meta"):
        ref = TorchClassifier(CONFIG)
    state = flax_to_torch(params, CONFIG)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, assign=True)
    ref.eval()
    x, t, y = (torch.from_numpy(computed[k]) for k in ("x", "t", "y"))
    with torch.no_grad():
        logits = ref(x, t).numpy()
    scale = np.abs(logits).max()
    assert scale > 0.1
    np.testing.assert_allclose(computed["logits"], logits, rtol=1000 * EPS32, atol=1000 * EPS32 * scale)
    grad = torch_log_prob_grad(ref, x, t, y).numpy()
    scale = np.abs(grad).max()
    assert scale > 1e-3
    np.testing.assert_allclose(computed["grad"], grad, rtol=1000 * EPS32, atol=1000 * EPS32 * scale)


def test_labels_out_of_range_under_jit_give_nan_not_a_wrong_gradient(model, computed):
    _, params, grad_fn = model
    grad = np.asarray(grad_fn(params, computed["x"], computed["t"], np.array([0, K, -1, 3])))
    assert np.all(np.isfinite(grad[[0, 3]])) and np.all(np.isnan(grad[[1, 2]]))


@pytest.mark.parametrize(("y", "error", "match"), [
    (np.array([0, 1, 2, K]), ValueError, r"y must lie in \[0, 9\]"),
    (np.array([-1, 1, 2, 3]), ValueError, r"y must lie in \[0, 9\]"),
    (np.array([0.0, 1.0, 2.0, 3.0]), TypeError, "integer class labels"),
    (np.array([0, 1]), ValueError, r"y must have shape \(4,\)"),
])
def test_gradient_label_errors(model, y, error, match):
    net, params, _ = model
    x, t, _ = _inputs(batch=4)
    with pytest.raises(error, match=match):
        jax.eval_shape(lambda p: log_prob_grad(net, p, x, t, y), params)  # raised while tracing


def test_build_errors():
    with pytest.raises(ValueError, match="num_classes is required"):
        build_classifier("tiny")
    with pytest.raises(ValueError, match="do not pass it too"):
        build_classifier(CONFIG, K)
    net = Classifier(config=CONFIG.unet, num_classes=K)
    with pytest.raises(ValueError, match="x must have shape"):
        jax.eval_shape(net.init, jax.random.key(0), jnp.zeros((2, 3, 8, 8)), jnp.zeros(2, jnp.int32))
