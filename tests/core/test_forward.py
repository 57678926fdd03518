"""Forward process: eq. 4 and eq. 2 against float64 references on every backend."""

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
    to_numpy,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ddpm_core.forward import q_mean_variance, q_sample, q_step_sample
from ddpm_core.schedules import Schedule


def _draw(data, betas, shape, dtype):
    """t vector and dtype-rounded x, noise (float64 copies of exactly what the backend sees)."""
    T = len(betas)
    t = np.asarray(data.draw(st.lists(st.integers(0, T - 1), min_size=shape[0], max_size=shape[0])))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = rounded(rng.standard_normal(shape), dtype)
    noise = rounded(rng.standard_normal(shape), dtype)
    return t, x, noise


@given(betas=schedule_betas(), shape=batch_shapes(), data=st.data())
def test_q_sample_matches_eq4(xp, dtype, betas, shape, data):
    t, x0, noise = _draw(data, betas, shape, dtype)
    ref = Ref(betas)
    n = len(shape)
    expected = np.sqrt(ref.at("abar", t, n)) * x0 + np.sqrt(1 - ref.at("abar", t, n)) * noise
    got = q_sample(Schedule.from_betas(betas), asarray(x0, xp, dtype), as_t(t, xp), asarray(noise, xp, dtype))
    assert_close(got, expected, xp=xp, dtype=dtype, scale=np.max(np.abs(x0)) + np.max(np.abs(noise)))


@given(betas=schedule_betas(), shape=batch_shapes(), data=st.data())
def test_q_mean_variance_matches_eq4(xp, dtype, betas, shape, data):
    t, x0, _ = _draw(data, betas, shape, dtype)
    ref = Ref(betas)
    n = len(shape)
    mean, var, logvar = q_mean_variance(Schedule.from_betas(betas), asarray(x0, xp, dtype), as_t(t, xp))
    bshape = (shape[0],) + (1,) * (n - 1)
    assert_close(mean, np.sqrt(ref.at("abar", t, n)) * x0, xp=xp, dtype=dtype)
    assert_close(var, 1 - ref.at("abar", t, n), xp=xp, dtype=dtype, shape=bshape)
    # log(1 - abar) for abar -> 1 is relative-error sensitive: compare it in absolute terms
    assert_close(
        logvar, np.log(1 - ref.at("abar", t, n)), xp=xp, dtype=dtype, shape=bshape, scale=1 / (1 - ref.abar[0])
    )


@given(betas=schedule_betas(), shape=batch_shapes(), data=st.data())
def test_q_step_sample_matches_eq2(xp, dtype, betas, shape, data):
    t, x_prev, noise = _draw(data, betas, shape, dtype)
    ref = Ref(betas)
    n = len(shape)
    expected = np.sqrt(1 - ref.at("betas", t, n)) * x_prev + np.sqrt(ref.at("betas", t, n)) * noise
    got = q_step_sample(Schedule.from_betas(betas), asarray(x_prev, xp, dtype), as_t(t, xp), asarray(noise, xp, dtype))
    assert_close(got, expected, xp=xp, dtype=dtype, scale=np.max(np.abs(x_prev)) + np.max(np.abs(noise)))


@settings(max_examples=10)
@given(betas=schedule_betas(), data=st.data())
def test_composing_eq2_t_times_is_eq4_in_distribution(xp, betas, data):
    """x_t = m x_0 + sum_s c_s eps_s is Gaussian: eq. 4 holds iff m = sqrt(abar_t), sum c_s^2 = 1 - abar_t.

    Running the implementation's eq. 2 kernel on x_0 = 1 with zero noise gives m; running
    it from x_0 = 0 with a unit impulse of noise at step s (one batch row per s) gives c_s.
    """
    T = len(betas)
    t = data.draw(st.integers(0, T - 1))
    s = Schedule.from_betas(betas)
    steps = t + 1
    x = asarray(np.concatenate([np.ones((1, 1)), np.zeros((steps, 1))]), xp)  # row 0: mean path
    for i in range(steps):
        impulse = np.zeros((steps + 1, 1))
        impulse[1 + i] = 1.0  # row 1 + i: noise only at step i
        x = q_step_sample(s, x, i, asarray(impulse, xp))
    ref = Ref(betas)
    # mean coefficient and variance by recursion, independent of cumprod
    m, v = 1.0, 0.0
    for i in range(steps):
        m, v = m * np.sqrt(1 - betas[i]), (1 - betas[i]) * v + betas[i]
    assert_close(x[:1, ...], [[m]], xp=xp, dtype="float64", factor=4 * steps)
    coeffs = to_numpy(x)[1:, 0]
    tol = 8 * steps * 2.2e-16  # absolute: 1 - abar loses relative digits as abar -> 1
    np.testing.assert_allclose(np.sum(coeffs**2), v, rtol=tol, atol=tol)
    np.testing.assert_allclose([m**2, v], [ref.abar[t], 1 - ref.abar[t]], rtol=tol, atol=tol)
    # and the implementation's own eq. 4 moments agree with the composed kernel
    mean, var, _ = q_mean_variance(s, asarray(np.ones((1, 1)), xp), t)
    assert_close(mean, [[m]], xp=xp, dtype="float64", factor=4 * steps)
    assert_close(var, [[v]], xp=xp, dtype="float64", factor=8 * steps)


def test_python_int_t_broadcasts(xp, dtype):
    s = Schedule.linear(100)
    rng = np.random.default_rng(0)
    x0, noise = (asarray(rng.standard_normal((3, 2, 2)), xp, dtype) for _ in range(2))
    a = q_sample(s, x0, 17, noise)
    b = q_sample(s, x0, as_t([17, 17, 17], xp), noise)
    assert_close(a, to_numpy(b), xp=xp, dtype=dtype, factor=0)


def test_mixed_t_batch_equals_separate_calls(xp, dtype):
    s = Schedule.cosine(50)
    rng = np.random.default_rng(1)
    x0, noise = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    t = [0, 49, 7, 23]
    whole = q_sample(s, asarray(x0, xp, dtype), as_t(t, xp), asarray(noise, xp, dtype))
    for i, ti in enumerate(t):
        one = q_sample(s, asarray(x0[i : i + 1], xp, dtype), ti, asarray(noise[i : i + 1], xp, dtype))
        # batch 4 and batch 1 may vectorise differently (FMA): a few ulp, not bit-identical
        assert_close(whole[i : i + 1, ...], to_numpy(one), xp=xp, dtype=dtype, factor=4)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_inputs_keep_their_dtype_without_warning(xp, half):
    if not hasattr(xp, half):
        pytest.skip(f"no {half}")
    s = Schedule.linear(1000)
    x0 = asarray(np.full((2, 3), 0.5), xp, half)
    noise = asarray(np.full((2, 3), -0.25), xp, half)
    got = q_sample(s, x0, as_t([0, 999], xp), noise)
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[[0, 999]][:, None]
    expected = np.broadcast_to(np.sqrt(abar) * 0.5 - 0.25 * np.sqrt(1 - abar), (2, 3))
    assert_close(got, expected, xp=xp, dtype=half, factor=2)
