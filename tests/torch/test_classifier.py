"""The PyTorch noise-aware classifier: layout, head, and the gradient of log p(y | x_t, t)."""

import dataclasses
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ddpm_core.backends.torch.classifier import Classifier, build_classifier, log_prob_grad  # noqa: E402
from ddpm_core.backends.torch.unet import UNet  # noqa: E402
from ddpm_core.models import (  # noqa: E402
    classifier_config,
    count_parameters,
    get_preset,
    parameter_shapes,
)

EPS32 = float(np.finfo(np.float32).eps)
K = 10


def _randomized(config, seed=0):
    """Non-zero weights everywhere (the zero-initialised head too), O(1) activations."""
    model = Classifier(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
            if p.ndim == 1:
                p.copy_(0.1 * noise + (1.0 if name.endswith(".weight") else 0.0))
            else:
                p.copy_(noise / math.sqrt(p[0].numel()))
    return model.eval()


def _inputs(config, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = config.unet.image_size
    x = torch.randn(batch, config.unet.in_channels, s, s, generator=g)
    return x, torch.randint(0, 1000, (batch,), generator=g), torch.randint(0, config.num_classes, (batch,), generator=g)


@pytest.mark.parametrize("name", ["tiny", "mnist", "cifar10"])
def test_state_dict_is_the_canonical_layout_and_shares_the_unets_names(name):
    config = classifier_config(name, K)
    with torch.device("meta"):
        model, unet = Classifier(config), UNet(get_preset(name).unet)
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(state.items()) == list(parameter_shapes(config).items())
    assert sum(p.numel() for p in model.parameters()) == count_parameters(config)
    unet_state = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    assert all(unet_state[k] == v for k, v in state.items() if not k.startswith(("head", "norm_out")))


def test_untrained_classifier_is_uniform_and_its_gradient_zero():
    model = build_classifier("tiny", K).eval()
    x, t, y = _inputs(model.config)
    logits = model(x, t)
    assert logits.shape == (4, K) and torch.count_nonzero(logits) == 0
    assert torch.count_nonzero(log_prob_grad(model, x, t, y)) == 0


def test_logits_depend_on_t_and_not_on_other_samples():
    model = _randomized(classifier_config("tiny", K))
    x, t, _ = _inputs(model.config)
    with torch.no_grad():
        logits = model(x, t)
        assert (logits - model(x, (t + 1) % 1000)).abs().amax(dim=1).min() > 1e-4
        torch.testing.assert_close(model(x[1:2], t[1:2]), logits[1:2], rtol=100 * EPS32, atol=100 * EPS32)


def test_batched_gradient_equals_the_per_sample_gradients():
    model = _randomized(classifier_config("tiny", K))
    x, t, y = _inputs(model.config, batch=5)
    grad = log_prob_grad(model, x, t, y)
    assert grad.shape == x.shape and grad.dtype == x.dtype and grad.abs().max() > 1e-3
    for i in range(5):
        one = log_prob_grad(model, x[i:i + 1], t[i:i + 1], y[i:i + 1])
        torch.testing.assert_close(grad[i:i + 1], one, rtol=1e-5, atol=1e-5 * float(grad.abs().max()))


def test_gradient_is_that_of_the_log_softmax_of_the_target_class():
    """grad log p_y = J_y - sum_k p_k J_k, from the Jacobian J of the logits (another route)."""
    model = _randomized(classifier_config("tiny", K))
    x, t, y = _inputs(model.config, batch=2)
    grad = log_prob_grad(model, x, t, y)
    for i in range(2):
        jac = torch.autograd.functional.jacobian(lambda z, i=i: model(z, t[i:i + 1])[0], x[i:i + 1])[:, 0]
        with torch.no_grad():
            p = torch.softmax(model(x[i:i + 1], t[i:i + 1])[0], dim=-1)
        expected = jac[y[i]] - (p[:, None, None, None] * jac).sum(dim=0)
        scale = float(jac.abs().max())
        torch.testing.assert_close(grad[i], expected, rtol=1e-4, atol=1e-4 * scale)


def test_gradient_works_inside_inference_mode_and_leaves_parameter_grads_alone():
    model = _randomized(classifier_config("tiny", K))
    x, t, y = _inputs(model.config)
    expected = log_prob_grad(model, x, t, y)
    with torch.inference_mode():
        x_inf = x.clone()
        torch.testing.assert_close(log_prob_grad(model, x_inf, t, y), expected, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(log_prob_grad(model, x, t, 3)[y == 3], expected[y == 3], rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())


def test_dropout_is_active_only_in_training():
    config = classifier_config(dataclasses.replace(get_preset("tiny").unet, dropout=0.5), K)
    model = _randomized(config).train()
    x, t, _ = _inputs(config)
    assert not torch.equal(model(x, t), model(x, t))
    model.eval()
    assert torch.equal(model(x, t), model(x, t))


@pytest.mark.parametrize(("y", "error", "match"), [
    (torch.tensor([0, 1, 2, K]), ValueError, r"y must lie in \[0, 9\]"),
    (torch.tensor([-1, 1, 2, 3]), ValueError, r"y must lie in \[0, 9\]"),
    (torch.tensor([0.0, 1.0, 2.0, 3.0]), TypeError, "integer class labels"),
    (torch.tensor([0, 1]), ValueError, r"y must have shape \(4,\)"),
])
def test_gradient_label_errors(y, error, match):
    model = build_classifier("tiny", K)
    x, t, _ = _inputs(model.config)
    with pytest.raises(error, match=match):
        log_prob_grad(model, x, t, y)


def test_build_and_input_errors():
    with pytest.raises(ValueError, match="num_classes is required"):
        build_classifier("tiny")
    with pytest.raises(ValueError, match="do not pass it too"):
        build_classifier(classifier_config("tiny", K), K)
    with pytest.raises(TypeError, match="ClassifierConfig"):
        Classifier(get_preset("tiny").unet)
    model = build_classifier("tiny", K)
    with pytest.raises(ValueError, match="x must have shape"):
        model(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="t must have shape"):
        model(torch.zeros(2, 1, 8, 8), torch.zeros(3, dtype=torch.int64))
