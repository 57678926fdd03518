"""Objectives: Gaussian KL, the discretized decoder (eq. 13), the bound's terms, L_simple, bpd."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ddpm_testing import (
    Ref,
    as_t,
    asarray,
    assert_close,
    data_grid,
    mean_flat,
    ref_decoder_log_likelihood,
    ref_normal_kl,
    rounded,
    to_numpy,
)
from hypothesis import given
from hypothesis import strategies as st

from ddpm_core.bounds import bits_per_dim
from ddpm_core.losses import (
    discretized_gaussian_log_likelihood,
    normal_kl,
    prior_bpd,
    training_loss_terms,
    training_losses,
    vlb_terms,
)
from ddpm_core.schedules import Schedule

LN2 = math.log(2.0)
GRID = np.arange(256) / 127.5 - 1.0


# --------------------------------------------------------------------------- normal_kl
@given(data=st.data())
def test_normal_kl_closed_form_and_nonnegative(xp, dtype, data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    m1, m2 = rounded(rng.normal(size=16), dtype), rounded(rng.normal(size=16), dtype)
    lv1, lv2 = rounded(rng.uniform(-4, 2, 16), dtype), rounded(rng.uniform(-4, 2, 16), dtype)
    got = normal_kl(*(asarray(a, xp, dtype) for a in (m1, lv1, m2, lv2)))
    # KL(N1||N2) = log(s2/s1) + (s1^2 + (m1-m2)^2) / (2 s2^2) - 1/2
    s1, s2 = np.exp(lv1 / 2), np.exp(lv2 / 2)
    expected = np.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - 0.5
    assert_close(got, expected, xp=xp, dtype=dtype, scale=np.max(np.exp(lv1 - lv2) + (m1 - m2) ** 2 * np.exp(-lv2)) + 6)
    assert np.all(to_numpy(got) >= -50 * np.finfo(dtype).eps * 10)


def test_normal_kl_zero_for_equal_gaussians(xp, dtype):
    m = asarray(np.linspace(-3, 3, 7), xp, dtype)
    lv = asarray(np.linspace(-5, 2, 7), xp, dtype)
    assert_close(normal_kl(m, lv, m, lv), np.zeros(7), xp=xp, dtype=dtype, factor=4)


# --------------------------------------------------------------------------- decoder, eq. 13
MEANS = [-1.0, -0.3, 0.0, 0.999, 1.7, 5.0]
LOG_SCALES = [-12.0, -6.0, -4.0, -1.0, 0.0, 3.0]


def test_decoder_bin_probabilities_sum_to_one(xp):
    x = np.broadcast_to(GRID, (len(MEANS) * len(LOG_SCALES), 256)).copy()
    m, ls = np.meshgrid(MEANS, LOG_SCALES, indexing="ij")
    mean, log_scale = m.reshape(-1, 1), ls.reshape(-1, 1)
    ll = discretized_gaussian_log_likelihood(asarray(x, xp), asarray(mean, xp), asarray(log_scale, xp))
    ll_np = to_numpy(ll)
    assert np.all(np.isfinite(ll_np)), "log-likelihood not finite in the tails"
    total = np.exp(ll_np).sum(axis=1)
    # 256 float64 roundings, plus the slivers between adjacent bins: the edges x_k + 1/255 and
    # x_{k+1} - 1/255 are rounded separately and differ by ~eps, a mass <= 2 eps / (s sqrt(2 pi))
    sliver = 2 * np.finfo(np.float64).eps / (np.exp(log_scale[:, 0]) * math.sqrt(2 * math.pi))
    assert np.all(np.abs(total - 1.0) <= 1e-13 + 4 * sliver), total - 1.0


@pytest.mark.parametrize("mean", MEANS)
@pytest.mark.parametrize("log_scale", LOG_SCALES)
def test_decoder_matches_exact_bin_mass(xp, mean, log_scale):
    x = GRID.reshape(1, 256)
    got = to_numpy(
        discretized_gaussian_log_likelihood(
            asarray(x, xp), asarray(np.full((1, 1), mean), xp), asarray(np.full((1, 1), log_scale), xp)
        )
    )
    expected = ref_decoder_log_likelihood(x, mean, log_scale)
    assert np.all(np.isfinite(got))
    # log-mass accurate to a relative 1e-10 (the log of a mass is well conditioned)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def test_decoder_dtype_and_float32(xp, dtype):
    rng = np.random.default_rng(4)
    x = data_grid(rng, (2, 3, 4))
    mean = rounded(rng.uniform(-1, 1, (2, 3, 4)), dtype)
    ls = rounded(rng.uniform(-5, 0, (2, 3, 4)), dtype)
    got = discretized_gaussian_log_likelihood(asarray(x, xp, dtype), asarray(mean, xp, dtype), asarray(ls, xp, dtype))
    expected = ref_decoder_log_likelihood(rounded(x, dtype), mean, ls)
    # the standardised bin edges (x -+ 1/255 - mean) / s lose eps * |x - mean| / s absolutely
    scale = np.max(2.0 / np.exp(ls)) * np.max(np.abs(expected)) if dtype == "float32" else None
    assert_close(got, expected, xp=xp, dtype=dtype, scale=scale, factor=200)


# --------------------------------------------------------------------------- bound terms
def _ref_vlb_term(ref, x0, x_t, t, mean_model, logvar_model):
    """Per-sample bits/dim: KL(q(x_{t-1}|x_t,x_0) || p) for t > 0, decoder NLL at t = 0."""
    n = x0.ndim
    abar, abar_prev, beta = ref.at("abar", t, n), ref.at("abar_prev", t, n), ref.at("betas", t, n)
    mu = np.sqrt(abar_prev) * beta / (1 - abar) * x0 + np.sqrt(1 - beta) * (1 - abar_prev) / (1 - abar) * x_t
    kl = mean_flat(ref_normal_kl(mu, ref.at("post_logvar", t, n), mean_model, logvar_model)) / LN2
    nll = -mean_flat(ref_decoder_log_likelihood(x0, mean_model, 0.5 * np.broadcast_to(logvar_model, x0.shape))) / LN2
    return np.where(t == 0, nll, kl)


def _batch(seed, T, B=4, shape=(2, 3)):
    rng = np.random.default_rng(seed)
    x0 = data_grid(rng, (B,) + shape)
    eps = rng.standard_normal((B,) + shape)
    t = rng.integers(0, T, size=B)
    t[0] = 0
    return x0, eps, t, rng


@given(seed=st.integers(0, 2**32 - 1))
def test_vlb_terms_match_reference(xp, seed):
    s = Schedule.linear(20, 1e-3, 0.2)
    ref = Ref(s.betas)
    x0, eps, t, rng = _batch(seed, 20)
    abar = ref.at("abar", t, 3)
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps
    eps_model = eps + 0.3 * rng.standard_normal(eps.shape)
    got = vlb_terms(s, asarray(eps_model, xp), asarray(x0, xp), asarray(x_t, xp), as_t(t, xp))
    x0_hat = (x_t - np.sqrt(1 - abar) * eps_model) / np.sqrt(abar)
    beta = ref.at("betas", t, 3)
    mean_model = (x_t - beta / np.sqrt(1 - abar) * eps_model) / np.sqrt(1 - beta)  # eq. 11
    assert np.allclose(mean_model[0], x0_hat[0])
    expected = _ref_vlb_term(ref, x0, x_t, t, mean_model, ref.at("post_logvar", t, 3))
    assert_close(got, expected, xp=xp, dtype="float64", factor=1e5)  # 1e-11: decoder log-mass


def test_prior_bpd(xp, dtype):
    s = Schedule.linear(1000)
    x0 = data_grid(np.random.default_rng(5), (3, 2, 2))
    abar_T = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[-1]
    expected = mean_flat(ref_normal_kl(np.sqrt(abar_T) * x0, np.log(1 - abar_T), 0.0, 0.0)) / LN2
    # KL ~ 1e-5 is the residue of O(1) terms that cancel: absolute tolerance (scale 1)
    assert_close(prior_bpd(s, asarray(x0, xp, dtype)), expected, xp=xp, dtype=dtype, scale=1.0)


# --------------------------------------------------------------------------- training losses
@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "mean"])
def test_simple_loss_is_mse_to_the_target(xp, dtype, prediction):
    s = Schedule.cosine(30)
    ref = Ref(s.betas)
    x0, eps, t, rng = _batch(6, 30)
    x0 = rounded(x0, dtype)
    eps = rounded(eps, dtype)
    abar = ref.at("abar", t, 3)
    x_t = rounded(np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps, dtype)
    target = {
        "eps": eps,
        "x0": x0,
        "v": np.sqrt(abar) * eps - np.sqrt(1 - abar) * x0,
        "mean": ref.at("coef1", t, 3) * x0 + ref.at("coef2", t, 3) * x_t,
    }[prediction]
    out = rounded(rng.standard_normal(x0.shape), dtype)
    got = training_losses(
        s, *(asarray(a, xp, dtype) for a in (out, x0, x_t)), as_t(t, xp), asarray(eps, xp, dtype), prediction=prediction
    )
    assert_close(got, mean_flat((target - out) ** 2), xp=xp, dtype=dtype, scale=20)


def test_vlb_loss_is_T_times_the_term_and_decoder_nll_at_index_0(xp):
    T = 20
    s = Schedule.linear(T, 1e-3, 0.2)
    ref = Ref(s.betas)
    x0, eps, t, rng = _batch(7, T)
    abar = ref.at("abar", t, 3)
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps
    eps_model = eps + 0.1 * rng.standard_normal(eps.shape)
    args = (asarray(eps_model, xp), asarray(x0, xp), asarray(x_t, xp), as_t(t, xp))
    got = training_losses(s, *args, asarray(eps, xp), loss="vlb")
    beta = ref.at("betas", t, 3)
    mean_model = (x_t - beta / np.sqrt(1 - abar) * eps_model) / np.sqrt(1 - beta)
    expected = T * _ref_vlb_term(ref, x0, x_t, t, mean_model, ref.at("post_logvar", t, 3))
    assert_close(got, expected, xp=xp, dtype="float64", factor=1e5)
    # index 0 is the decoder: -log p(x0 | x1) with mean x0_hat and log sigma = log beta~_2 / 2
    nll = -np.mean(ref_decoder_log_likelihood(x0[0], mean_model[0], 0.5 * ref.post_logvar[0])) / LN2
    assert to_numpy(got)[0] == pytest.approx(T * nll, rel=1e-10)


def test_hybrid_is_simple_plus_lambda_vlb(xp):
    T = 20
    s = Schedule.cosine(T)
    ref = Ref(s.betas)
    x0, eps, t, rng = _batch(8, T, shape=(2, 3))
    abar = ref.at("abar", t, 3)
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps
    eps_model = eps + 0.1 * rng.standard_normal(eps.shape)
    v = rng.uniform(-1, 1, eps.shape)
    out = np.concatenate([eps_model, v], axis=1)
    got = training_losses(
        s,
        asarray(out, xp),
        asarray(x0, xp),
        asarray(x_t, xp),
        as_t(t, xp),
        asarray(eps, xp),
        loss="hybrid",
        variance="learned_range",
    )
    beta = ref.at("betas", t, 3)
    mean_model = (x_t - beta / np.sqrt(1 - abar) * eps_model) / np.sqrt(1 - beta)
    frac = (v + 1) / 2
    logvar = frac * np.log(beta) + (1 - frac) * ref.at("post_logvar", t, 3)
    vlb = _ref_vlb_term(ref, x0, x_t, t, mean_model, logvar)
    expected = mean_flat((eps - eps_model) ** 2) + 0.001 * T * vlb
    assert_close(got, expected, xp=xp, dtype="float64", factor=1e5)


def _hybrid_case(xp, dtype, T=20):
    """A learned-range output on a cosine schedule and its float64 reference parts."""
    s = Schedule.cosine(T)
    ref = Ref(s.betas)
    x0, eps, t, rng = _batch(8, T, shape=(2, 3))
    x0, eps = rounded(x0, dtype), rounded(eps, dtype)
    abar = ref.at("abar", t, 3)
    x_t = rounded(np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps, dtype)
    eps_model = rounded(eps + 0.1 * rng.standard_normal(eps.shape), dtype)
    v = rounded(rng.uniform(-1, 1, eps.shape), dtype)
    beta = ref.at("betas", t, 3)
    mean_model = (x_t - beta / np.sqrt(1 - abar) * eps_model) / np.sqrt(1 - beta)
    frac = (v + 1) / 2
    logvar = frac * np.log(beta) + (1 - frac) * ref.at("post_logvar", t, 3)
    parts = {"simple": mean_flat((eps - eps_model) ** 2),
             "vlb": T * _ref_vlb_term(ref, x0, x_t, t, mean_model, logvar)}
    args = (asarray(np.concatenate([eps_model, v], axis=1), xp, dtype), asarray(x0, xp, dtype),
            asarray(x_t, xp, dtype), as_t(t, xp), asarray(eps, xp, dtype))
    return s, args, parts


@pytest.mark.parametrize("loss", ["hybrid", "vlb"])
def test_loss_terms_are_the_loss_and_its_parts(xp, dtype, loss):
    s, args, parts = _hybrid_case(xp, dtype)
    kw = dict(loss=loss, variance="learned_range")
    factor = 1e5 if dtype == "float64" else 50  # float64: the KL's cancellation, as above
    got = training_loss_terms(s, *args, **kw)
    for name in ("simple", "vlb"):
        assert_close(getattr(got, name), parts[name], xp=xp, dtype=dtype, factor=factor,
                     scale=np.max(np.abs(parts[name])))
    # the loss is the one training_losses gives, and it is made of the parts
    np.testing.assert_array_equal(to_numpy(got.loss), to_numpy(training_losses(s, *args, **kw)))
    whole = parts["simple"] + 0.001 * parts["vlb"] if loss == "hybrid" else parts["vlb"]
    assert_close(got.loss, whole, xp=xp, dtype=dtype, factor=factor, scale=np.max(whole))


def test_loss_terms_of_simple_have_no_bound_term(xp):
    s, args, parts = _hybrid_case(xp, "float64")
    eps_only = (asarray(to_numpy(args[0])[:, :2], xp),) + args[1:]
    got = training_loss_terms(s, *eps_only, weighting="min_snr")
    assert got.vlb is None
    np.testing.assert_array_equal(to_numpy(got.simple), to_numpy(got.loss))
    plain = training_loss_terms(s, *eps_only).simple
    assert not np.allclose(to_numpy(plain), to_numpy(got.simple))  # the weights reach `simple`


@pytest.mark.parametrize(
    "prediction,form",
    [
        ("eps", lambda snr: np.minimum(snr, 5) / snr),
        ("x0", lambda snr: np.minimum(snr, 5)),
        ("v", lambda snr: np.minimum(snr, 5) / (snr + 1)),
    ],
)
def test_min_snr_weighting(xp, prediction, form):
    s = Schedule.linear(50, 1e-3, 0.1)
    ref = Ref(s.betas)
    x0, eps, t, rng = _batch(9, 50)
    abar = ref.at("abar", t, 3)
    x_t = np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps
    out = rng.standard_normal(x0.shape)
    args = (asarray(out, xp), asarray(x0, xp), asarray(x_t, xp), as_t(t, xp), asarray(eps, xp))
    plain = to_numpy(training_losses(s, *args, prediction=prediction))
    got = training_losses(s, *args, prediction=prediction, weighting="min_snr")
    assert_close(got, plain * form(ref.snr[t]), xp=xp, dtype="float64", scale=np.max(plain * form(ref.snr[t])))


# --------------------------------------------------------------------------- bits per dim
def test_bits_per_dim_of_the_true_posterior_is_prior_plus_decoder(xp):
    """An x0-oracle gives p_theta = q(x_{t-1}|x_t,x_0): every KL term is 0 (eq. 5)."""
    T = 12
    s = Schedule.linear(T, 1e-3, 0.3)
    ref = Ref(s.betas)
    rng = np.random.default_rng(10)
    x0 = data_grid(rng, (3, 2, 2))
    x0_xp = asarray(x0, xp)
    noises = [asarray(rng.standard_normal(x0.shape), xp) for _ in range(T)]
    calls = []

    def oracle(x_t, t_model):
        calls.append(to_numpy(t_model))
        return x0_xp

    bpd = bits_per_dim(s, oracle, x0_xp, lambda i: noises[i], prediction="x0", variance="fixed_small")
    assert sorted(int(c[0]) for c in calls) == list(range(T))
    terms = to_numpy(bpd.terms)
    assert terms.shape == (T, 3)
    np.testing.assert_allclose(terms[1:], 0.0, atol=1e-12)
    prior = mean_flat(ref_normal_kl(np.sqrt(ref.abar[-1]) * x0, np.log(1 - ref.abar[-1]), 0.0, 0.0)) / LN2
    decoder = -mean_flat(ref_decoder_log_likelihood(x0, x0, np.full(x0.shape, 0.5 * ref.post_logvar[0]))) / LN2
    assert_close(bpd.prior, prior, xp=xp, dtype="float64", factor=1e3)
    assert_close(bpd.decoder, decoder, xp=xp, dtype="float64", factor=1e5)
    assert_close(bpd.total, prior + decoder, xp=xp, dtype="float64", factor=1e5)
