"""Timestep samplers: uniform, loss-second-moment importance sampling, inverse CDF."""

from __future__ import annotations

import numpy as np
import pytest
from ddpm_testing import asarray, assert_close, check_array, to_numpy
from hypothesis import given
from hypothesis import strategies as st

from ddpm_core.timesteps import LossSecondMoment, sample_timesteps, uniform_weights


@pytest.mark.parametrize("T", [1, 7, 1000])
def test_uniform_weights(T):
    w = uniform_weights(T)
    assert w.shape == (T,) and w.dtype == np.float64
    np.testing.assert_allclose(w, 1.0 / T, rtol=1e-15)


def test_loss_second_moment_warm_up_then_sqrt_mean_square():
    T, H = 4, 3
    state = LossSecondMoment.create(T, history=H, uniform_prob=0.01)
    rng = np.random.default_rng(16)
    hist = {t: [] for t in range(T)}
    for step in range(H * T + 3):
        t = np.array([step % T, (step + 1) % T])
        losses = rng.uniform(0.1, 5.0, size=2)
        for ti, li in zip(t, losses, strict=False):
            hist[int(ti)].append(float(li))
        new = state.update(t, losses)
        assert new is not state
        state = new
        if not all(len(h) >= H for h in hist.values()):
            np.testing.assert_allclose(state.weights(), 1.0 / T)  # warm-up: uniform
    assert all(len(h) >= H for h in hist.values())
    rms = np.array([np.sqrt(np.mean(np.square(hist[t][-H:]))) for t in range(T)])
    expected = rms / rms.sum() * (1 - 0.01) + 0.01 / T
    np.testing.assert_allclose(state.weights(), expected, rtol=1e-13)
    assert state.weights().sum() == pytest.approx(1.0, abs=1e-15)


def test_update_does_not_mutate():
    s0 = LossSecondMoment.create(3, history=2)
    snapshot = np.array(s0.losses, copy=True)
    s0.update(np.array([0, 1]), np.array([1.0, 2.0]))
    np.testing.assert_array_equal(s0.losses, snapshot)


@given(data=st.data())
def test_sample_timesteps_inverse_cdf_and_importance_weights(xp, data):
    T = data.draw(st.sampled_from([1, 5, 50]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    w = rng.uniform(0.1, 1.0, T)
    w /= w.sum()
    cdf = np.cumsum(w)
    # draws strictly inside each step's CDF interval [cdf_{t-1}, cdf_t)
    t_true = rng.integers(0, T, size=8)
    lo = np.concatenate([[0.0], cdf[:-1]])[t_true]
    u = lo + rng.uniform(0.05, 0.95, size=8) * w[t_true]
    t, imp = sample_timesteps(w, asarray(u, xp))
    check_array(t, xp=xp, dtype="int64", shape=(8,))
    np.testing.assert_array_equal(to_numpy(t), t_true)
    assert_close(imp, 1.0 / (T * w[t_true]), xp=xp, dtype="float64")


def test_uniform_sample_timesteps_is_floor_u_T(xp):
    u = np.array([0.0, 0.0999, 0.1, 0.55, 0.999999])
    t, imp = sample_timesteps(uniform_weights(10), asarray(u, xp))
    np.testing.assert_array_equal(to_numpy(t), [0, 0, 1, 5, 9])
    assert_close(imp, np.ones(5), xp=xp, dtype="float64")


def test_zero_weight_steps_are_never_drawn(xp):
    w = np.array([0.5, 0.0, 0.5])
    t, _ = sample_timesteps(w, asarray(np.linspace(0, 0.999, 50), xp))
    assert 1 not in to_numpy(t)


@pytest.mark.parametrize("weights", [np.array([0.5, 0.6]), np.array([-0.1, 1.1]), np.ones((2, 2)) / 4])
def test_bad_weights_raise(xp, weights):
    with pytest.raises(ValueError, match=r"\bweights\b"):
        sample_timesteps(weights, asarray(np.array([0.3]), xp))
