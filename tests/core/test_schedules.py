"""Schedules: closed forms, derived float64 tables, zero terminal SNR, lookups, validation."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from ddpm_testing import (
    Ref,
    as_t,
    asarray,
    assert_close,
    assert_close_np,
    backend_name,
    check_array,
    ref_cosine_betas,
    schedule_betas,
    table_factor,
)
from hypothesis import given
from hypothesis import strategies as st

from ddpm_core.schedules import Schedule

TABLES = {
    "betas": "betas",
    "alphas": "alphas",
    "alphas_cumprod": "abar",
    "alphas_cumprod_prev": "abar_prev",
    "posterior_variance": "post_var",
    "posterior_log_variance_clipped": "post_logvar",
    "posterior_mean_coef1": "coef1",
    "posterior_mean_coef2": "coef2",
    "snr": "snr",
}


# --------------------------------------------------------------------------- closed forms
def test_linear_default_is_the_papers_schedule():
    s = Schedule.linear()
    assert s.num_timesteps == 1000
    np.testing.assert_array_equal(s.betas, np.linspace(1e-4, 0.02, 1000))
    # abar_T of the paper's schedule: prod(1 - beta) ~ 4.04e-5 (docs/equations.md, "Schedule")
    assert math.isclose(s.alphas_cumprod[-1], math.prod(1 - b for b in np.linspace(1e-4, 0.02, 1000)), rel_tol=1e-12)
    assert 4.0e-5 < s.alphas_cumprod[-1] < 4.1e-5


@pytest.mark.parametrize("T,lo,hi", [(10, 1e-3, 0.2), (300, 1e-4, 0.02), (1, 0.5, 0.5)])
def test_closed_forms(T, lo, hi):
    np.testing.assert_allclose(
        Schedule.linear(T, lo, hi).betas, [lo + (hi - lo) * i / max(T - 1, 1) for i in range(T)], rtol=1e-14
    )
    quad = [(math.sqrt(lo) + (math.sqrt(hi) - math.sqrt(lo)) * i / max(T - 1, 1)) ** 2 for i in range(T)]
    np.testing.assert_allclose(Schedule.quadratic(T, lo, hi).betas, quad, rtol=1e-14)
    np.testing.assert_allclose(Schedule.scaled_linear(T, lo, hi).betas, quad, rtol=1e-14)
    grid = np.linspace(-6.0, 6.0, T)
    sig = [lo + (hi - lo) / (1 + math.exp(-g)) for g in grid]
    np.testing.assert_allclose(Schedule.sigmoid(T, lo, hi).betas, sig, rtol=1e-14)


def test_scaled_linear_defaults_are_stable_diffusions():
    betas = Schedule.scaled_linear(1000).betas
    np.testing.assert_allclose(betas[[0, -1]], [0.00085, 0.012], rtol=1e-14)


@pytest.mark.parametrize("T", [1, 7, 1000])
def test_cosine_matches_nichol_dhariwal(T):
    s = Schedule.cosine(T)
    np.testing.assert_allclose(s.betas, ref_cosine_betas(T), rtol=1e-12, atol=1e-15)
    assert s.betas[-1] == pytest.approx(0.999)  # f(1) = 0: the last beta is clipped
    # where no beta was clipped, abar(t) = f(t) / f(0) exactly as the closed form says
    f = [math.cos(((i / T) + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(T + 1)]
    unclipped = np.cumsum(s.betas >= 0.999) == 0
    np.testing.assert_allclose(s.alphas_cumprod[unclipped], (np.array(f[1:]) / f[0])[unclipped], rtol=1e-12)


# --------------------------------------------------------------------------- derived tables
@given(betas=schedule_betas())
def test_tables_are_float64_readonly_and_match_the_definitions(betas):
    s = Schedule.from_betas(betas)
    ref = Ref(betas)
    for name, attr in TABLES.items():
        table = getattr(s, name)
        assert isinstance(table, np.ndarray) and table.dtype == np.float64, name
        assert table.shape == (ref.T,), name
        assert not table.flags.writeable, f"{name} is writeable: the schedule is not frozen"
        assert_close_np(table, getattr(ref, attr), factor=table_factor(betas, "float64"))
    assert_close_np(s.sqrt_alphas_cumprod, np.sqrt(ref.abar), factor=table_factor(betas, "float64"))
    assert_close_np(s.sqrt_one_minus_alphas_cumprod, np.sqrt(1 - ref.abar), factor=table_factor(betas, "float64"))
    np.testing.assert_array_equal(s.timesteps, np.arange(ref.T))
    assert s.timesteps.dtype == np.int64


@given(betas=schedule_betas())
def test_abar_strictly_decreasing_and_in_unit_interval(betas):
    abar = Schedule.from_betas(betas).alphas_cumprod
    assert np.all(np.diff(abar) < 0)
    assert np.all((abar > 0) & (abar < 1))


def test_posterior_variance_at_index_0_is_zero_and_its_log_is_clipped():
    s = Schedule.linear(50, 1e-3, 0.1)
    assert s.posterior_variance[0] == 0.0
    assert s.posterior_log_variance_clipped[0] == math.log(s.posterior_variance[1])
    assert np.all(np.isfinite(s.posterior_log_variance_clipped))


@given(betas=schedule_betas())
def test_from_alphas_cumprod_round_trips(betas):
    ref = Ref(betas)
    s = Schedule.from_alphas_cumprod(ref.abar)
    assert_close_np(s.betas, betas, factor=8 * ref.T, scale=1.0)  # beta = 1 - abar/abar_prev: absolute error ~ eps
    assert_close_np(s.alphas_cumprod, ref.abar, factor=8 * ref.T)


# --------------------------------------------------------------------------- zero terminal SNR
def _lin_algorithm_1(betas):
    """Lin et al. 2024, Algorithm 1, transcribed."""
    abar_sqrt = np.sqrt(np.cumprod(1 - np.asarray(betas)))
    a0, aT = abar_sqrt[0], abar_sqrt[-1]
    abar_sqrt = (abar_sqrt - aT) * a0 / (a0 - aT)
    abar = abar_sqrt**2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return 1 - alphas


@pytest.mark.parametrize(
    "make", [lambda: Schedule.linear(1000), lambda: Schedule.cosine(100), lambda: Schedule.scaled_linear(50)]
)
def test_rescale_zero_terminal_snr(make):
    s = make()
    z = s.rescale_zero_terminal_snr()
    assert z.alphas_cumprod[-1] == 0.0, "abar_T must be exactly 0"
    assert z.snr[-1] == 0.0
    assert z.betas[-1] == 1.0
    assert math.isclose(z.alphas_cumprod[0], s.alphas_cumprod[0], rel_tol=1e-14)
    np.testing.assert_allclose(z.betas, _lin_algorithm_1(s.betas), rtol=1e-10, atol=1e-15)
    assert np.all(np.diff(z.alphas_cumprod) < 0)
    assert np.all(np.isfinite(z.posterior_log_variance_clipped))


# --------------------------------------------------------------------------- lookups
@given(betas=schedule_betas(), data=st.data())
def test_lookup_in_every_backend(xp, dtype, betas, data):
    s = Schedule.from_betas(betas)
    ref = Ref(betas)
    B = data.draw(st.integers(1, 5))
    t = np.asarray(data.draw(st.lists(st.integers(0, ref.T - 1), min_size=B, max_size=B)))
    like = asarray(np.zeros((B, 2, 3)), xp, dtype)
    for name, attr in (("alphas_cumprod", "abar"), ("posterior_variance", "post_var"), ("betas", "betas")):
        got = s.lookup(name, as_t(t, xp), like)
        expected = ref.at(attr, t, 3).astype(dtype).astype(np.float64)  # the table, rounded once
        assert_close(got, expected, xp=xp, dtype=dtype, factor=1)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_half_precision_tables_warn_once(xp, half):
    if not hasattr(xp, half):
        pytest.skip(f"{backend_name(xp)} has no {half}")
    s = Schedule.linear(1000)  # abar at index 0 is 1 - 1e-4: rounds to 1 in half precision
    like = asarray(np.zeros((2, 3)), xp, half)
    t = as_t([0, 999], xp)
    with pytest.warns(RuntimeWarning, match="alphas_cumprod"):
        s.lookup("alphas_cumprod", t, like)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = s.lookup("alphas_cumprod", t, like)  # second time: silent
    check_array(got, xp=xp, dtype=half, shape=(2, 1))


def test_single_precision_tables_do_not_warn(xp):
    s = Schedule.linear(1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s.lookup("alphas_cumprod", as_t([0, 999], xp), asarray(np.zeros((2, 3)), xp, "float32"))


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "build, name",
    [
        (lambda: Schedule.linear(0), "num_timesteps"),
        (lambda: Schedule.linear(10, beta_start=0.0), "beta_start"),
        (lambda: Schedule.linear(10, beta_end=1.5), "beta_end"),
        (lambda: Schedule.quadratic(10, beta_start=-1e-4), "beta_start"),
        (lambda: Schedule.sigmoid(10, beta_end=float("nan")), "beta_end"),
        (lambda: Schedule.cosine(10, s=-0.1), "s"),
        (lambda: Schedule.cosine(10, max_beta=1.0), "max_beta"),
        (lambda: Schedule.cosine(0), "num_timesteps"),
        (lambda: Schedule.from_betas([0.1, 0.0, 0.2]), "betas"),
        (lambda: Schedule.from_betas([0.1, 1.2]), "betas"),
        (lambda: Schedule.from_betas([0.1, float("nan")]), "betas"),
        (lambda: Schedule.from_betas([]), "betas"),
        (lambda: Schedule.from_alphas_cumprod([0.9, 0.95, 0.5]), "alphas_cumprod"),
        (lambda: Schedule.from_alphas_cumprod([1.0, 0.5]), "alphas_cumprod"),
        (lambda: Schedule.from_alphas_cumprod([0.9, float("inf")]), "alphas_cumprod"),
    ],
)
def test_invalid_parameters_raise_naming_the_argument(build, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        build()


def test_schedule_is_frozen():
    s = Schedule.linear(10)
    with pytest.raises(AttributeError):
        s.betas = np.ones(10)  # type: ignore[misc]
    with pytest.raises(ValueError):
        s.alphas_cumprod[0] = 0.5
