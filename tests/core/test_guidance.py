"""Guidance (docs/equations.md, "Guidance"): classifier-free (G1, G2), classifier (G3, G4),
and the score conversions, on every backend against float64 NumPy references."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from ddpm_testing import (
    Ref,
    as_t,
    asarray,
    assert_close,
    batch_shapes,
    import_backend,
    rounded,
    schedule_betas,
    table_factor,
    to_numpy,
)
from hypothesis import given
from hypothesis import strategies as st

import ddpm_core
from ddpm_core import guidance
from ddpm_core.guidance import (
    classifier_free_guidance,
    classifier_guidance_eps,
    classifier_guidance_mean,
)
from ddpm_core.parameterization import eps_from_score, p_mean_variance, predict_score
from ddpm_core.samplers import ddim_step, ddpm_step
from ddpm_core.schedules import Schedule

SCALES = st.one_of(st.sampled_from([0.0, 1.0, -1.0, 7.5]), st.floats(-3.0, 12.0))


def _normal(data, shape, dtype, n=2):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    return [rounded(rng.standard_normal(shape) * rng.uniform(0.5, 3.0), dtype) for _ in range(n)]


def _per_sample_std(a):
    return np.std(np.reshape(a, (a.shape[0], -1)), axis=1).reshape((-1,) + (1,) * (a.ndim - 1))


def _ref_cfg(c, u, s, phi=0.0):
    """(G1), then (G2), in float64 as docs/equations.md writes them."""
    g = u + s * (c - u)
    if phi == 0.0:
        return g
    r = g * _per_sample_std(c) / _per_sample_std(g)
    return phi * r + (1.0 - phi) * g


def _bits_equal(a, b):
    np.testing.assert_array_equal(to_numpy(a), to_numpy(b), strict=True)


# ---- classifier-free guidance ----------------------------------------------------------


@given(shape=batch_shapes(), scale=SCALES, data=st.data())
def test_cfg_is_g1(xp, dtype, shape, scale, data):
    c, u = _normal(data, shape, dtype)
    out = classifier_free_guidance(asarray(c, xp, dtype), asarray(u, xp, dtype), scale)
    # two products and a sum of inputs of size max|c|, max|u|, weighted by |1 - s| + |s|
    size = (abs(1 - scale) + abs(scale)) * max(np.abs(c).max(), np.abs(u).max())
    assert_close(out, _ref_cfg(c, u, scale), xp=xp, dtype=dtype, scale=size)


@pytest.mark.parametrize("rescale", [0.0, 0.7])
@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
def test_cfg_scale_1_is_cond_and_scale_0_is_uncond_bit_for_bit(xp, dtype, variance, rescale):
    rng = np.random.default_rng(0)
    # magnitudes far apart: u + s (c - u) would round away from c at s = 1
    c = asarray(rng.standard_normal((3, 4, 5)) * 1e-3, xp, dtype)
    u = asarray(rng.standard_normal((3, 4, 5)) * 1e3, xp, dtype)
    _bits_equal(classifier_free_guidance(c, u, 1.0, variance=variance, rescale=rescale), c)
    _bits_equal(classifier_free_guidance(c, u, 1, variance=variance, rescale=rescale), c)
    if rescale == 0.0:  # (G2) at s = 0 rescales uncond to cond's std, by design
        out = classifier_free_guidance(c, u, 0.0, variance=variance)
        half = 2 if variance == "learned_range" else 4  # variance channels stay cond's
        _bits_equal(out[:, :half, ...], u[:, :half, ...])
        _bits_equal(out[:, half:, ...], c[:, half:, ...])


@given(shape=st.sampled_from([(2, 2, 3), (3, 4, 2, 2)]), scale=SCALES, data=st.data())
def test_cfg_guides_only_the_prediction_half_of_learned_variance_outputs(xp, dtype, shape, scale, data):
    c, u = _normal(data, shape, dtype)
    half = shape[1] // 2
    out = classifier_free_guidance(asarray(c, xp, dtype), asarray(u, xp, dtype), scale,
                                   variance="learned", channels=half)
    size = (abs(1 - scale) + abs(scale)) * max(np.abs(c).max(), np.abs(u).max())
    assert_close(out[:, :half, ...], _ref_cfg(c[:, :half], u[:, :half], scale), xp=xp, dtype=dtype,
                 scale=size)
    np.testing.assert_array_equal(to_numpy(out[:, half:, ...]), c[:, half:])  # cond's, untouched


@given(shape=st.sampled_from([(2, 3), (3, 2, 4), (2, 1, 3, 3)]), scale=SCALES,
       phi=st.sampled_from([0.3, 0.7, 1.0]), data=st.data())
def test_cfg_rescale_is_g2(xp, dtype, shape, scale, phi, data):
    c, u = _normal(data, shape, dtype)
    expected = _ref_cfg(c, u, scale, phi)
    out = classifier_free_guidance(asarray(c, xp, dtype), asarray(u, xp, dtype), scale, rescale=phi)
    # the std ratio is computed from sums over the sample: a few more roundings per element
    size = (abs(1 - scale) + abs(scale)) * max(np.abs(c).max(), np.abs(u).max(), np.abs(expected).max())
    assert_close(out, expected, xp=xp, dtype=dtype, scale=size, factor=200)


def test_cfg_rescale_with_a_constant_guided_output_is_finite(xp):
    c = asarray(np.full((2, 3), 2.0), xp)
    u = asarray(np.stack([np.full(3, 1.0), np.array([0.0, 1.0, 2.0])]), xp)
    out = to_numpy(classifier_free_guidance(c, u, 1.0 + 1e-9, rescale=0.7))
    assert np.all(np.isfinite(out))
    # sample 0: guided is constant (std 0): the ratio is taken as 1, the output is (G1)
    np.testing.assert_allclose(out[0], _ref_cfg(np.full((1, 3), 2.0), np.full((1, 3), 1.0), 1.0 + 1e-9)[0])


def test_cfg_keeps_half_precision_dtype(xp):
    if not hasattr(xp, "float16"):
        pytest.skip("no float16")
    c = asarray(np.ones((2, 3)), xp, "float16")
    out = classifier_free_guidance(c, c * 0.5, 3.0, rescale=0.5)
    assert "float16" in str(out.dtype)
    np.testing.assert_allclose(to_numpy(out).astype(np.float64), 2.0)


# ---- classifier guidance ---------------------------------------------------------------


@given(betas=schedule_betas(), shape=batch_shapes(), scale=SCALES, data=st.data())
def test_classifier_guidance_eps_is_g4(xp, dtype, betas, shape, scale, data):
    T, B = len(betas), shape[0]
    t = np.asarray(data.draw(st.lists(st.integers(0, T - 1), min_size=B, max_size=B)))
    eps, grad = _normal(data, shape, dtype)
    root = np.sqrt(1.0 - Ref(betas).at("abar", t, len(shape)))
    move = -root * scale * grad
    s = Schedule.from_betas(betas)
    size = max(np.abs(eps).max(), np.abs(move).max(), 1.0)
    factor = table_factor(betas, dtype)
    out = classifier_guidance_eps(s, asarray(eps, xp, dtype), as_t(t, xp), asarray(grad, xp, dtype), scale=scale)
    assert_close(out, eps + move, xp=xp, dtype=dtype, scale=size, factor=factor)
    if dtype == "float64":  # eps moves by exactly -sqrt(1 - abar_t) s grad
        np.testing.assert_allclose(to_numpy(out) - eps, move, rtol=0, atol=factor * 2.3e-16 * size)
    scalar = classifier_guidance_eps(s, asarray(eps, xp, dtype), int(t[0]), asarray(grad, xp, dtype),
                                     scale=scale)
    root0 = np.sqrt(1.0 - Ref(betas).abar[t[0]])
    assert_close(scalar, eps - root0 * scale * grad, xp=xp, dtype=dtype, scale=size, factor=factor)


def test_classifier_guidance_eps_on_a_respaced_chain_uses_the_original_abar(xp, dtype):
    full = Schedule.linear(100)
    short = full.respace("10")
    i = np.array([0, 4, 9])
    original = short.timesteps[i]
    assert original.tolist() != i.tolist()
    eps, grad = np.zeros((3, 2)), np.ones((3, 2))
    out = classifier_guidance_eps(short, asarray(eps, xp, dtype), as_t(i, xp), asarray(grad, xp, dtype),
                                  scale=2.0)
    abar = Ref(np.linspace(1e-4, 0.02, 100)).abar[original]
    assert_close(out, -2.0 * np.sqrt(1 - abar)[:, None] * grad, xp=xp, dtype=dtype,
                 factor=table_factor(np.linspace(1e-4, 0.02, 100), dtype))


@pytest.mark.parametrize("full_variance", [False, True])
@given(shape=st.sampled_from([(2, 3), (3, 2, 4), (2, 1, 3, 3)]), scale=SCALES, data=st.data())
def test_classifier_guidance_mean_is_g3(xp, dtype, full_variance, shape, scale, data):
    mean, grad = _normal(data, shape, dtype)
    vshape = shape if full_variance else (shape[0],) + (1,) * (len(shape) - 1)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    var = rounded(rng.uniform(1e-4, 0.05, vshape), dtype)
    out = classifier_guidance_mean(asarray(mean, xp, dtype), asarray(var, xp, dtype), asarray(grad, xp, dtype),
                                   scale=scale)
    expected = mean + var * scale * grad
    size = max(np.abs(mean).max(), np.abs(expected - mean).max(), 1.0)
    assert_close(out, expected, xp=xp, dtype=dtype, scale=size)


def test_scale_0_reproduces_the_unguided_steps_bit_for_bit(xp, dtype):
    rng = np.random.default_rng(3)
    s = Schedule.linear(50).respace("ddim10")
    x, eps, noise, grad = (asarray(rng.standard_normal((4, 2, 3)), xp, dtype) for _ in range(4))
    t, t_prev = as_t([9, 5, 1, 0], xp), as_t([8, 4, 0, -1], xp)
    for tt in (t, 3):
        guided = classifier_guidance_eps(s, eps, tt, grad, scale=0.0)
        _bits_equal(guided, eps)
        tp = t_prev if tt is t else 2
        _bits_equal(ddim_step(s, guided, x, tt, tp).x_prev, ddim_step(s, eps, x, tt, tp).x_prev)
    mv = p_mean_variance(s, eps, x, t)
    _bits_equal(classifier_guidance_mean(mv.mean, mv.variance, grad, scale=0.0), mv.mean)
    # classifier-free at s = 1 is the conditional model's step
    cfg = classifier_free_guidance(eps, grad, 1.0)
    _bits_equal(ddpm_step(s, cfg, x, t, noise).x_prev, ddpm_step(s, eps, x, t, noise).x_prev)


# ---- score conversions -----------------------------------------------------------------


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@given(betas=schedule_betas(), shape=batch_shapes(), data=st.data())
def test_predict_score_and_back(xp, prediction, betas, shape, data):
    dtype = "float64"
    T, B = len(betas), shape[0]
    t = np.asarray(data.draw(st.lists(st.integers(0, T - 1), min_size=B, max_size=B)))
    x0, eps = _normal(data, shape, dtype)
    abar = Ref(betas).at("abar", t, len(shape))
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps
    output = {"eps": eps, "x0": x0, "v": np.sqrt(abar) * eps - np.sqrt(1 - abar) * x0}[prediction]
    score = -eps / np.sqrt(1 - abar)
    s = Schedule.from_betas(betas)
    got = predict_score(s, asarray(output, xp), asarray(x_t, xp), as_t(t, xp), prediction=prediction)
    # eps recovered from x0 divides by sqrt(1 - abar); the score divides once more
    cond = (1 + np.abs(x0).max() + np.abs(eps).max()) / np.min(1 - abar) / np.sqrt(np.min(abar))
    factor = table_factor(betas, dtype)
    assert_close(got, score, xp=xp, dtype=dtype, scale=cond, factor=factor)
    assert_close(eps_from_score(s, asarray(score, xp), as_t(t, xp)), eps, xp=xp, dtype=dtype,
                 scale=max(1.0, np.abs(eps).max()), factor=factor)


@given(betas=schedule_betas(), shape=batch_shapes(), data=st.data())
def test_eps_from_score_is_the_inverse_in_every_dtype(xp, dtype, betas, shape, data):
    T, B = len(betas), shape[0]
    t = np.asarray(data.draw(st.lists(st.integers(0, T - 1), min_size=B, max_size=B)))
    (eps,) = _normal(data, shape, dtype, n=1)
    root = np.sqrt(1 - Ref(betas).at("abar", t, len(shape)))
    s = Schedule.from_betas(betas)
    score = predict_score(s, asarray(eps, xp, dtype), asarray(eps, xp, dtype), as_t(t, xp))
    factor = table_factor(betas, dtype)
    assert_close(score, -eps / root, xp=xp, dtype=dtype, scale=np.abs(eps / root).max(), factor=factor)
    assert_close(eps_from_score(s, score, as_t(t, xp)), eps, xp=xp, dtype=dtype, factor=factor)


# ---- errors ----------------------------------------------------------------------------


def _raises(name, fn, *args, **kwargs):
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b"):
        fn(*args, **kwargs)


def test_cfg_errors(xp):
    c = asarray(np.zeros((2, 4, 3)), xp)
    _raises("uncond", classifier_free_guidance, c, asarray(np.zeros((1, 4, 3)), xp), 2.0)  # broadcast
    _raises("uncond", classifier_free_guidance, c, asarray(np.zeros((2, 2, 3)), xp), 2.0)
    _raises("scale", classifier_free_guidance, c, c, float("nan"))
    _raises("scale", classifier_free_guidance, c, c, float("inf"))
    _raises("scale", classifier_free_guidance, c, c, True)
    _raises("scale", classifier_free_guidance, c, c, asarray(np.array(2.0), xp))  # no host sync
    _raises("rescale", classifier_free_guidance, c, c, 2.0, rescale=1.5)
    _raises("rescale", classifier_free_guidance, c, c, 2.0, rescale=float("nan"))
    _raises("variance", classifier_free_guidance, c, c, 2.0, variance="large")
    odd = asarray(np.zeros((2, 3, 3)), xp)
    _raises("model_output", classifier_free_guidance, odd, odd, 2.0, variance="learned")  # 3 % 2
    _raises("channels", classifier_free_guidance, c, c, 2.0, variance="learned", channels=3)
    _raises("channels", classifier_free_guidance, c, c, 2.0, channels=3)
    _raises("cond", classifier_free_guidance, asarray(np.float64(1.0), xp), asarray(np.float64(1.0), xp), 2.0)


def test_classifier_guidance_errors(xp):
    s = Schedule.linear(10)
    x = asarray(np.zeros((2, 3, 4)), xp)
    _raises("grad", classifier_guidance_eps, s, x, 0, asarray(np.zeros((1, 3, 4)), xp), scale=1.0)
    _raises("t", classifier_guidance_eps, s, x, 10, x, scale=1.0)
    _raises("t", classifier_guidance_eps, s, x, as_t([0, 1, 2], xp), x, scale=1.0)
    _raises("scale", classifier_guidance_eps, s, x, 0, x, scale=float("-inf"))
    _raises("grad", classifier_guidance_mean, x, x, asarray(np.zeros((2, 3, 1)), xp), scale=1.0)
    _raises("variance", classifier_guidance_mean, x, asarray(np.zeros((1, 1, 1)), xp), x, scale=1.0)
    _raises("variance", classifier_guidance_mean, x, asarray(np.zeros((2, 1)), xp), x, scale=1.0)
    _raises("variance", classifier_guidance_mean, x, asarray(np.zeros((2, 3, 5)), xp), x, scale=1.0)
    _raises("scale", classifier_guidance_mean, x, x, x, scale=float("nan"))
    _raises("score", eps_from_score, s, asarray(np.float64(1.0), xp), 0)
    _raises("t", eps_from_score, s, x, -1)


# ---- compiled ---------------------------------------------------------------------------


def _guided(s, c, u, t, grad):
    """The three guidance functions with a traced t: no host synchronisation on t or scale."""
    cfg = classifier_free_guidance(c, u, 3.0, rescale=0.5, variance="learned")
    eps = classifier_guidance_eps(s, cfg[:, :1], t, grad, scale=2.0)
    return cfg, eps, classifier_guidance_mean(eps, c[:, 1:] ** 2, grad, scale=2.0)


def _guided_args(xp):
    rng = np.random.default_rng(5)
    c, u = (asarray(rng.standard_normal((3, 2, 4)), xp, "float32") for _ in range(2))
    return c, u, as_t([0, 20, 49], xp), asarray(rng.standard_normal((3, 1, 4)), xp, "float32")


def test_guidance_under_jax_jit():
    pytest.importorskip("jax")
    import jax

    s = Schedule.linear(50)
    args = _guided_args(import_backend("jax"))
    eager = _guided(s, *args)
    compiled = jax.jit(lambda *a: _guided(s, *a))(*args)
    for got, ref in zip(compiled, eager, strict=True):
        np.testing.assert_allclose(to_numpy(got), to_numpy(ref), rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:Dynamo detected a call to a `functools.lru_cache`")
def test_guidance_under_torch_compile_fullgraph():
    torch = pytest.importorskip("torch")
    s = Schedule.linear(50)
    args = _guided_args(import_backend("torch"))
    eager = _guided(s, *args)
    torch._dynamo.reset()
    compiled = torch.compile(lambda *a: _guided(s, *a), fullgraph=True, backend="aot_eager")(*args)
    for got, ref in zip(compiled, eager, strict=True):
        np.testing.assert_allclose(to_numpy(got), to_numpy(ref), rtol=1e-5, atol=1e-6)


def test_docstring_examples_run():
    result = doctest.testmod(guidance, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_exported_from_the_package():
    for name in ("classifier_free_guidance", "classifier_guidance_mean", "classifier_guidance_eps",
                 "predict_score", "eps_from_score"):
        assert name in ddpm_core.__all__ and callable(getattr(ddpm_core, name))
