"""Parameterisations: eq. 11, exact conversions eps/x0/v/mean, variance types, clipping."""

from __future__ import annotations

import numpy as np
import pytest
from ddpm_testing import (
    Ref,
    as_t,
    asarray,
    assert_close,
    batch_shapes,
    rounded,
    schedule_betas,
    table_factor,
)
from hypothesis import given
from hypothesis import strategies as st

from ddpm_core.parameterization import (
    p_mean_variance,
    predict_eps,
    predict_mean,
    predict_v,
    predict_x0,
)
from ddpm_core.schedules import Schedule


def _setup(data, betas, shape, dtype):
    T, B = len(betas), shape[0]
    t = np.asarray(data.draw(st.lists(st.integers(0, T - 1), min_size=B, max_size=B)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    return t, rounded(rng.standard_normal(shape), dtype), rounded(rng.standard_normal(shape), dtype)


def _posterior_mean(ref, x0, x_t, t):
    """mu~_t(x_t, x0) of eq. 7, written out."""
    n = x0.ndim
    abar, abar_prev, beta = ref.at("abar", t, n), ref.at("abar_prev", t, n), ref.at("betas", t, n)
    return np.sqrt(abar_prev) * beta / (1 - abar) * x0 + np.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar) * x_t


@given(betas=schedule_betas(), shape=batch_shapes(), data=st.data())
def test_eq11_mean_equals_posterior_mean_of_x0_hat(xp, dtype, betas, shape, data):
    t, x_t, eps = _setup(data, betas, shape, dtype)
    ref, n = Ref(betas), len(shape)
    abar, beta = ref.at("abar", t, n), ref.at("betas", t, n)
    x0_hat = (x_t - np.sqrt(1 - abar) * eps) / np.sqrt(abar)
    mean_eq11 = (x_t - beta / np.sqrt(1 - abar) * eps) / np.sqrt(1 - beta)
    np.testing.assert_allclose(_posterior_mean(ref, x0_hat, x_t, t), mean_eq11, rtol=1e-9, atol=1e-9)
    out = p_mean_variance(Schedule.from_betas(betas), asarray(eps, xp, dtype), asarray(x_t, xp, dtype), as_t(t, xp))
    # x0_hat divides by sqrt(abar_t): errors scale with (|x_t| + |eps|) / sqrt(abar_t)
    scale = (np.max(np.abs(x_t)) + np.max(np.abs(eps))) / np.sqrt(np.min(abar))
    factor = table_factor(betas, dtype)
    assert_close(out.x0_hat, x0_hat, xp=xp, dtype=dtype, scale=scale, factor=factor)
    assert_close(out.mean, mean_eq11, xp=xp, dtype=dtype, scale=scale, factor=factor)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "mean"])
@given(betas=schedule_betas(), shape=batch_shapes(), data=st.data())
def test_conversions_are_identities(xp, prediction, betas, shape, data):
    """Feed the exact eps / x0 / v / mu~ of a known (x0, eps): every conversion recovers them."""
    dtype = "float64"
    t, x0, eps = _setup(data, betas, shape, dtype)
    ref, n = Ref(betas), len(shape)
    abar = ref.at("abar", t, n)
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps
    truth = {
        "eps": eps,
        "x0": x0,
        "v": np.sqrt(abar) * eps - np.sqrt(1 - abar) * x0,
        "mean": _posterior_mean(ref, x0, x_t, t),
    }
    s = Schedule.from_betas(betas)
    args = (asarray(truth[prediction], xp), asarray(x_t, xp), as_t(t, xp))
    # recovering eps from x0 or mean divides by sqrt(1 - abar) / coef1: conditioning bound
    cond = (1 + np.max(np.abs(x0)) + np.max(np.abs(eps))) / np.sqrt(np.min(abar) * np.min(1 - abar))
    cond /= min(1.0, float(np.min(ref.at("coef1", t, n)))) if prediction == "mean" else 1.0
    kw = dict(xp=xp, dtype=dtype, scale=cond, factor=table_factor(betas, dtype))
    assert_close(predict_x0(s, *args, prediction=prediction), x0, **kw)
    assert_close(predict_eps(s, *args, prediction=prediction), eps, **kw)
    assert_close(predict_v(s, *args, prediction=prediction), truth["v"], **kw)
    assert_close(predict_mean(s, *args, prediction=prediction), truth["mean"], **kw)


def test_variance_types(xp, dtype):
    s = Schedule.linear(30, 1e-3, 0.1)
    ref = Ref(s.betas)
    B, C = 30, 2
    t = np.arange(B)
    x_t = np.zeros((B, C, 3))
    fixed = {
        v: p_mean_variance(s, asarray(x_t, xp, dtype), asarray(x_t, xp, dtype), as_t(t, xp), variance=v)
        for v in ("fixed_small", "fixed_large")
    }
    col = lambda a: np.reshape(a, (B, 1, 1))  # noqa: E731
    small_log = np.log(np.where(t == 0, ref.post_var[1], ref.post_var))
    assert_close(fixed["fixed_small"].log_variance, col(small_log), xp=xp, dtype=dtype)
    assert_close(fixed["fixed_small"].variance[1:, ...], col(ref.post_var)[1:], xp=xp, dtype=dtype, scale=1e-3)
    assert_close(fixed["fixed_large"].variance[1:, ...], col(ref.betas)[1:], xp=xp, dtype=dtype, scale=1e-3)
    assert_close(fixed["fixed_large"].log_variance[1:, ...], col(np.log(ref.betas))[1:], xp=xp, dtype=dtype)
    # index 0 never adds noise; Ho et al.'s code uses beta~ at index 1 there, the paper beta_1
    # (docs/equations.md, "Reverse process")
    v0 = float(np.asarray(fixed["fixed_large"].variance[0, 0, 0]))
    assert v0 == pytest.approx(ref.betas[0], rel=1e-5) or v0 == pytest.approx(ref.post_var[1], rel=1e-5)


@given(data=st.data())
def test_learned_range_interpolates_log_variance(xp, dtype, data):
    s = Schedule.cosine(20)
    ref = Ref(s.betas)
    B, C = 4, 2
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    t = rng.integers(0, 20, size=B)
    v = rounded(rng.uniform(-1, 1, size=(B, C, 3)), dtype)
    v[0, 0, 0], v[0, 0, 1] = -1.0, 1.0
    out_np = np.concatenate([np.zeros((B, C, 3)), v], axis=1)
    out = p_mean_variance(
        s, asarray(out_np, xp, dtype), asarray(np.zeros((B, C, 3)), xp, dtype), as_t(t, xp), variance="learned_range"
    )
    frac = (v + 1) / 2  # model output in [-1, 1] mapped to [0, 1] (Nichol & Dhariwal)
    lo, hi = ref.at("post_logvar", t, 3), np.log(ref.at("betas", t, 3))
    expected = frac * hi + (1 - frac) * lo
    assert_close(out.log_variance, expected, xp=xp, dtype=dtype)
    assert_close(out.variance, np.exp(expected), xp=xp, dtype=dtype)
    learned = p_mean_variance(
        s, asarray(out_np, xp, dtype), asarray(np.zeros((B, C, 3)), xp, dtype), as_t(t, xp), variance="learned"
    )
    assert_close(learned.log_variance, v, xp=xp, dtype=dtype)


def test_clip_and_dynamic_threshold(xp, dtype):
    s = Schedule.linear(10, 1e-3, 0.2)
    rng = np.random.default_rng(3)
    x0_out = rounded(3 * rng.standard_normal((3, 2, 4)), dtype)
    x_t = rounded(rng.standard_normal((3, 2, 4)), dtype)
    t = np.array([0, 4, 9])
    ref = Ref(s.betas)
    args = (s, asarray(x0_out, xp, dtype), asarray(x_t, xp, dtype), as_t(t, xp))
    clipped = np.clip(x0_out, -1, 1)
    out = p_mean_variance(*args, prediction="x0", clip=True)
    assert_close(out.x0_hat, clipped, xp=xp, dtype=dtype)
    assert_close(out.mean, _posterior_mean(ref, clipped, x_t, t), xp=xp, dtype=dtype)
    q = np.quantile(np.abs(x0_out).reshape(3, -1), 0.9, axis=1)  # linear interpolation
    s_b = np.maximum(q, 1.0).reshape(3, 1, 1)
    out = p_mean_variance(*args, prediction="x0", threshold=0.9)
    assert_close(out.x0_hat, np.clip(x0_out, -s_b, s_b) / s_b, xp=xp, dtype=dtype)
