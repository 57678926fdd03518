"""Posterior q(x_{t-1} | x_t, x_0), eqs. 6-7, against Bayes' rule on Gaussians."""

from __future__ import annotations

import math

import numpy as np
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

from ddpm_core.posterior import q_posterior
from ddpm_core.schedules import Schedule


def bayes_posterior(betas, x0, x_t, t):
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): a product of Gaussians in x_{t-1}.

    Prior N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}) (eq. 4 one step earlier); likelihood
    N(x_t; sqrt(alpha_t) x_{t-1}, beta_t) (eq. 2) is, as a function of x_{t-1}, a Gaussian
    with precision alpha_t / beta_t and mean x_t / sqrt(alpha_t). Precisions add; the mean
    is the precision-weighted mean. At index 0 the prior is a point mass at x_0.
    Returns mean (shape of x0) and variance per sample (B,).
    """
    betas = np.asarray(betas)
    means, variances = np.empty_like(x0), np.empty(len(t))
    for b, ti in enumerate(t):
        beta, alpha = betas[ti], 1.0 - betas[ti]
        if ti == 0:
            means[b], variances[b] = x0[b], 0.0
            continue
        abar_prev = math.prod(1.0 - betas[:ti])
        prec_prior, mean_prior = 1.0 / (1.0 - abar_prev), math.sqrt(abar_prev) * x0[b]
        prec_lik, mean_lik = alpha / beta, x_t[b] / math.sqrt(alpha)
        variances[b] = 1.0 / (prec_prior + prec_lik)
        means[b] = variances[b] * (prec_prior * mean_prior + prec_lik * mean_lik)
    return means, variances


@given(betas=schedule_betas(), shape=batch_shapes(), data=st.data())
def test_posterior_is_bayes_rule(xp, dtype, betas, shape, data):
    T, B, n = len(betas), shape[0], len(shape)
    t = np.asarray(data.draw(st.lists(st.integers(0, T - 1), min_size=B, max_size=B)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x0, x_t = rounded(rng.standard_normal(shape), dtype), rounded(rng.standard_normal(shape), dtype)
    mean_ref, var_ref = bayes_posterior(betas, x0, x_t, t)
    mean, var, logvar = q_posterior(
        Schedule.from_betas(betas), asarray(x0, xp, dtype), asarray(x_t, xp, dtype), as_t(t, xp)
    )
    bshape = (B,) + (1,) * (n - 1)
    scale = np.max(np.abs(x0)) + np.max(np.abs(x_t))
    # the table route and the Bayes route differ by the tables' own float64 rounding
    factor = table_factor(betas, dtype)
    assert_close(mean, mean_ref, xp=xp, dtype=dtype, scale=scale, factor=factor)
    assert_close(var, var_ref.reshape(bshape), xp=xp, dtype=dtype, factor=factor, scale=np.max(var_ref))
    # log beta~ with index 0 clipped to log beta~ at index 1
    ref = Ref(betas)
    clipped = np.where(t == 0, ref.post_var[1], var_ref)
    assert_close(logvar, np.log(clipped).reshape(bshape), xp=xp, dtype=dtype, factor=factor)


def test_index_0_posterior_is_x0_with_zero_variance(xp, dtype):
    s = Schedule.linear(20, 1e-3, 0.2)
    rng = np.random.default_rng(2)
    x0, x_t = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    mean, var, logvar = q_posterior(s, asarray(x0, xp, dtype), asarray(x_t, xp, dtype), 0)
    assert_close(mean, rounded(x0, dtype), xp=xp, dtype=dtype, factor=table_factor(s.betas, dtype))
    assert_close(var, np.zeros((2, 1)), xp=xp, dtype=dtype, factor=0)
    beta1, abar1, abar2 = s.betas[1], 1 - s.betas[0], (1 - s.betas[0]) * (1 - s.betas[1])
    assert_close(logvar, np.full((2, 1), math.log((1 - abar1) / (1 - abar2) * beta1)), xp=xp, dtype=dtype)
