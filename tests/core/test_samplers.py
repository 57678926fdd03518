"""Samplers: Algorithm 2's ancestral step, DDIM (any eta), and the sampling loop."""

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
    to_numpy,
)
from hypothesis import given
from hypothesis import strategies as st

from ddpm_core.parameterization import predict_x0
from ddpm_core.reverse import sample, sample_loop
from ddpm_core.samplers import ddim_step, ddpm_step
from ddpm_core.schedules import Schedule


def _inputs(data, betas, shape, dtype, t_min=0):
    T, B = len(betas), shape[0]
    t = np.asarray(data.draw(st.lists(st.integers(t_min, T - 1), min_size=B, max_size=B)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    return t, *(rounded(rng.standard_normal(shape), dtype) for _ in range(3))


def _ref_ddpm(ref, eps, x_t, t, noise, variance):
    """Algorithm 2: x_{t-1} = mu_theta (eq. 11) + sigma_t z, z = 0 at index 0."""
    n = x_t.ndim
    abar, beta = ref.at("abar", t, n), ref.at("betas", t, n)
    mean = (x_t - beta / np.sqrt(1 - abar) * eps) / np.sqrt(1 - beta)
    var = ref.at("post_var", t, n) if variance == "fixed_small" else beta
    return mean + np.where(ref.at("betas", t, n) * 0 + np.reshape(t, var.shape) > 0, np.sqrt(var), 0.0) * noise


def _scale(ref, t, *arrays):
    return sum(np.max(np.abs(a)) for a in arrays) / np.sqrt(np.min(ref.abar[t]))


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
@given(betas=schedule_betas(), shape=batch_shapes(), data=st.data())
def test_ddpm_step_is_algorithm_2(xp, dtype, variance, betas, shape, data):
    t, eps, x_t, noise = _inputs(data, betas, shape, dtype)
    ref = Ref(betas)
    got = ddpm_step(
        Schedule.from_betas(betas),
        asarray(eps, xp, dtype),
        asarray(x_t, xp, dtype),
        as_t(t, xp),
        asarray(noise, xp, dtype),
        variance=variance,
    )
    expected = _ref_ddpm(ref, eps, x_t, t, noise, variance)
    assert_close(
        got.x_prev,
        expected,
        xp=xp,
        dtype=dtype,
        scale=_scale(ref, t, eps, x_t, noise),
        factor=table_factor(betas, dtype),
    )


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_index_0_adds_no_noise(xp, dtype, variance):
    s = Schedule.linear(100)
    rng = np.random.default_rng(11)
    eps, x_t = (asarray(rng.standard_normal((3, 2, 2)), xp, dtype) for _ in range(2))
    quiet = ddpm_step(s, eps, x_t, 0, asarray(np.zeros((3, 2, 2)), xp, dtype), variance=variance)
    loud = ddpm_step(s, eps, x_t, 0, asarray(np.full((3, 2, 2), 1e4), xp, dtype), variance=variance)
    assert_close(loud.x_prev, to_numpy(quiet.x_prev), xp=xp, dtype=dtype, factor=0)
    assert_close(quiet.x_prev, to_numpy(quiet.x0_hat), xp=xp, dtype=dtype, factor=0 if dtype == "float64" else 4)


def test_mixed_t_equals_separate_calls_and_int_t_broadcasts(xp, dtype):
    s = Schedule.cosine(40)
    rng = np.random.default_rng(12)
    eps, x_t, noise = (rng.standard_normal((4, 3)) for _ in range(3))
    t = [0, 39, 5, 20]
    whole = ddpm_step(s, asarray(eps, xp, dtype), asarray(x_t, xp, dtype), as_t(t, xp), asarray(noise, xp, dtype))
    for i, ti in enumerate(t):
        one = ddpm_step(
            s, *(asarray(a[i : i + 1], xp, dtype) for a in (eps, x_t)), ti, asarray(noise[i : i + 1], xp, dtype)
        )
        # batch 4 and batch 1 may vectorise differently (FMA): a few ulp, not bit-identical
        assert_close(whole.x_prev[i : i + 1, ...], to_numpy(one.x_prev), xp=xp, dtype=dtype, factor=4)
    a = ddim_step(s, asarray(eps, xp, dtype), asarray(x_t, xp, dtype), 7, 3)
    b = ddim_step(s, asarray(eps, xp, dtype), asarray(x_t, xp, dtype), as_t([7] * 4, xp), as_t([3] * 4, xp))
    assert_close(a.x_prev, to_numpy(b.x_prev), xp=xp, dtype=dtype, factor=0)


@given(betas=schedule_betas(), shape=batch_shapes(), data=st.data())
def test_ddim_eta_1_on_the_full_chain_is_the_ancestral_step(xp, dtype, betas, shape, data):
    t, eps, x_t, noise = _inputs(data, betas, shape, dtype)
    ref = Ref(betas)
    s = Schedule.from_betas(betas)
    args = (asarray(eps, xp, dtype), asarray(x_t, xp, dtype), as_t(t, xp))
    ddim = ddim_step(s, *args, as_t(t - 1, xp), asarray(noise, xp, dtype), eta=1.0)
    ddpm = ddpm_step(s, *args, asarray(noise, xp, dtype), variance="fixed_small")
    kw = dict(xp=xp, dtype=dtype, scale=_scale(ref, t, eps, x_t, noise), factor=table_factor(betas, dtype))
    assert_close(ddim.x_prev, to_numpy(ddpm.x_prev), **kw)
    assert_close(ddim.x0_hat, to_numpy(ddpm.x0_hat), **kw)


@given(betas=schedule_betas(), shape=batch_shapes(), data=st.data(), eta=st.sampled_from([0.0, 0.3, 1.0]))
def test_ddim_matches_song_et_al_eq_12(xp, dtype, betas, shape, data, eta):
    t, eps, x_t, noise = _inputs(data, betas, shape, dtype)
    t_prev = np.asarray([data.draw(st.integers(-1, ti - 1)) for ti in t])
    ref, n = Ref(betas), len(shape)
    abar = ref.at("abar", t, n)
    abar_prev = np.where(np.reshape(t_prev, abar.shape) < 0, 1.0, ref.at("abar", np.maximum(t_prev, 0), n))
    x0 = (x_t - np.sqrt(1 - abar) * eps) / np.sqrt(abar)
    sigma = eta * np.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
    expected = np.sqrt(abar_prev) * x0 + np.sqrt(np.maximum(1 - abar_prev - sigma**2, 0)) * eps + sigma * noise
    s = Schedule.from_betas(betas)
    got = ddim_step(
        s,
        asarray(eps, xp, dtype),
        asarray(x_t, xp, dtype),
        as_t(t, xp),
        as_t(t_prev, xp),
        asarray(noise, xp, dtype),
        eta=eta,
    )
    kw = dict(xp=xp, dtype=dtype, scale=_scale(ref, t, eps, x_t, noise), factor=table_factor(betas, dtype))
    assert_close(got.x_prev, expected, **kw)
    assert_close(got.x0_hat, x0, **kw)


@given(betas=schedule_betas(), shape=batch_shapes(), data=st.data(),
       prediction=st.sampled_from(["eps", "v"]), ddim_eps=st.sampled_from(["clipped", "network"]))
def test_ddim_clipping_conventions(xp, dtype, betas, shape, data, prediction, ddim_eps):
    """x0_hat clipped to [-1, 1]; eps re-derived from it ("clipped", improved-diffusion) or
    the network's own ("network", diffusers' use_clipped_model_output=False), eq. 12, eta 0."""
    t, out, x_t, _ = _inputs(data, betas, shape, dtype)
    out, x_t = 3.0 * out, 3.0 * x_t  # far enough out that the clipping changes x0_hat
    t_prev = np.asarray([data.draw(st.integers(-1, ti - 1)) for ti in t])
    ref, n = Ref(betas), len(shape)
    abar = ref.at("abar", t, n)
    abar_prev = np.where(np.reshape(t_prev, abar.shape) < 0, 1.0, ref.at("abar", np.maximum(t_prev, 0), n))
    if prediction == "eps":
        eps = out
    else:  # v = sqrt(abar) eps - sqrt(1 - abar) x0, x_t = sqrt(abar) x0 + sqrt(1 - abar) eps
        eps = np.sqrt(abar) * out + np.sqrt(1 - abar) * x_t
    x0 = np.clip((x_t - np.sqrt(1 - abar) * eps) / np.sqrt(abar), -1.0, 1.0)
    if ddim_eps == "clipped":
        eps = (x_t - np.sqrt(abar) * x0) / np.sqrt(1 - abar)
    expected = np.sqrt(abar_prev) * x0 + np.sqrt(1 - abar_prev) * eps
    s = Schedule.from_betas(betas)
    got = ddim_step(s, asarray(out, xp, dtype), asarray(x_t, xp, dtype), as_t(t, xp), as_t(t_prev, xp),
                    prediction=prediction, clip=True, ddim_eps=ddim_eps)
    # the re-derived eps divides by sqrt(1 - abar): its rounding grows by 1 / sqrt(1 - abar)
    grow = float(np.max(1.0 / np.sqrt(1 - abar)))
    kw = dict(xp=xp, dtype=dtype, scale=_scale(ref, t, eps, x_t, x_t) * grow, factor=table_factor(betas, dtype))
    assert_close(got.x_prev, expected, **kw)
    assert_close(got.x0_hat, x0, **kw)


def test_ddim_conventions_differ_only_where_clipping_changes_x0(xp):
    s = Schedule.linear(50, 1e-3, 0.1)
    rng = np.random.default_rng(3)
    eps, x_t = asarray(rng.standard_normal((4, 2)), xp), asarray(4.0 * rng.standard_normal((4, 2)), xp)
    t, t_prev = as_t([49, 30, 10, 1], xp), as_t([40, 20, 0, -1], xp)
    a, b = (ddim_step(s, eps, x_t, t, t_prev, clip=True, ddim_eps=e) for e in ("clipped", "network"))
    assert_close(a.x0_hat, to_numpy(b.x0_hat), xp=xp, dtype="float64", factor=0)
    assert not np.allclose(to_numpy(a.x_prev), to_numpy(b.x_prev))
    c, d = (ddim_step(s, eps, x_t, t, t_prev, ddim_eps=e) for e in ("clipped", "network"))  # no clip
    assert_close(c.x_prev, to_numpy(d.x_prev), xp=xp, dtype="float64", factor=0)
    with pytest.raises(ValueError, match="ddim_eps must be one of 'clipped', 'network'; got ddim_eps='raw'"):
        ddim_step(s, eps, x_t, t, t_prev, clip=True, ddim_eps="raw")


def test_ddim_eta_0_is_deterministic_and_uses_the_parameterisations_x0(xp, dtype):
    s = Schedule.linear(50, 1e-3, 0.1)
    rng = np.random.default_rng(13)
    v, x_t = (asarray(rng.standard_normal((3, 2)), xp, dtype) for _ in range(2))
    t, t_prev = as_t([49, 10, 1], xp), as_t([39, 0, -1], xp)
    a = ddim_step(s, v, x_t, t, t_prev, None, eta=0.0, prediction="v")
    b = ddim_step(s, v, x_t, t, t_prev, asarray(rng.standard_normal((3, 2)), xp, dtype), eta=0.0, prediction="v")
    assert_close(a.x_prev, to_numpy(b.x_prev), xp=xp, dtype=dtype, factor=0)
    assert_close(a.x0_hat, to_numpy(predict_x0(s, v, x_t, t, prediction="v")), xp=xp, dtype=dtype, factor=0)


def test_sample_loop_yields_every_step_and_calls_the_model_with_original_indices(xp):
    s = Schedule.linear(100).respace("ddim5")
    rng = np.random.default_rng(14)
    seen = []

    def model(x, t_model):
        seen.append(to_numpy(t_model).tolist())
        return x * 0.0

    noises = {i: asarray(rng.standard_normal((2, 3)), xp) for i in range(5)}
    x_T = asarray(rng.standard_normal((2, 3)), xp)
    steps = list(sample_loop(s, model, x_T, lambda i: noises[i]))
    assert [st_.step for st_ in steps] == [4, 3, 2, 1, 0]
    assert seen == [[80, 80], [60, 60], [40, 40], [20, 20], [0, 0]]
    # replay with the step function: the loop is exactly Algorithm 2 on the respaced chain
    x = x_T
    for i in range(4, -1, -1):
        x = ddpm_step(s, x * 0.0, x, i, noises[i]).x_prev
    assert_close(steps[-1].x, to_numpy(x), xp=xp, dtype="float64", factor=4)
    final = sample(s, model, x_T, lambda i: noises[i])
    assert_close(final, to_numpy(x), xp=xp, dtype="float64", factor=4)
