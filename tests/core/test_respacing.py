"""Respacing: which steps are kept, and the respaced chain stays exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ddpm_testing import as_t, asarray, assert_close, to_numpy
from hypothesis import given
from hypothesis import strategies as st

from ddpm_core.posterior import q_posterior
from ddpm_core.respacing import space_timesteps
from ddpm_core.schedules import Schedule


def test_ddimN_is_the_strided_range():
    s = Schedule.linear(1000)
    np.testing.assert_array_equal(s.respace("ddim50").timesteps, np.arange(0, 1000, 20))
    np.testing.assert_array_equal(s.respace("ddim4").timesteps, [0, 250, 500, 750])


def test_section_counts():
    # improved DDPM: 30 steps in 3 sections of 10, each keeps 10 evenly spaced steps, both ends
    kept = Schedule.linear(30).respace("10,10,10").timesteps
    np.testing.assert_array_equal(kept, np.arange(30))
    kept = Schedule.linear(300).respace("10,10,10").timesteps
    expected = [start + round(k * 99 / 9) for start in (0, 100, 200) for k in range(10)]
    np.testing.assert_array_equal(kept, expected)
    kept = Schedule.linear(100).respace("3,1").timesteps  # sections of 50: 0, 24.5->24, 49 | 50
    np.testing.assert_array_equal(kept, [0, round(24.5), 49, 50])


@pytest.mark.parametrize("T,N", [(1000, 50), (1000, 7), (10, 4), (100, 100)])
def test_leading_trailing_linspace(T, N):
    s = Schedule.linear(T)
    lin = s.respace(N, timestep_spacing="linspace").timesteps
    np.testing.assert_array_equal(lin, np.unique(np.round(np.linspace(0, T - 1, N)).astype(int)))
    lead = s.respace(N, timestep_spacing="leading").timesteps
    np.testing.assert_array_equal(lead, [k * (T // N) for k in range(N)])
    trail = s.respace(N, timestep_spacing="trailing").timesteps
    np.testing.assert_array_equal(trail, sorted(round(T - k * T / N) - 1 for k in range(N)))
    assert trail[-1] == T - 1
    assert len(lin) == len(lead) == len(trail) == N


@given(data=st.data())
def test_respacing_keeps_abar_and_rederives_betas(data):
    T = data.draw(st.sampled_from([50, 1000]))
    base = data.draw(st.sampled_from([Schedule.linear(T), Schedule.cosine(T)]))
    spacing = data.draw(st.sampled_from(["ddim10", "5", "3,4", [0, 7, 8, 31]]))
    s = base.respace(spacing)
    kept = s.timesteps
    assert kept.dtype == np.int64 and np.all(np.diff(kept) > 0)
    abar = base.alphas_cumprod[kept]
    alphas = abar / np.concatenate([[1.0], abar[:-1]])
    # abar is rebuilt as a product of alphas = 1 - beta: each alpha carries an absolute eps,
    # i.e. a relative eps / alpha (large where a long jump makes alpha small)
    np.testing.assert_allclose(s.alphas_cumprod, abar, rtol=len(kept) * 1e-15 / np.min(alphas))
    betas = 1 - abar / np.concatenate([[1.0], abar[:-1]])
    np.testing.assert_allclose(s.betas, betas, rtol=1e-12, atol=1e-16)
    assert s.num_timesteps == len(kept)


def test_respaced_posterior_is_bayes_between_kept_steps(xp):
    """q(x_s | x_t, x_0) for kept s < t of the original chain: prior N(sqrt(abar_s) x0,
    1 - abar_s), jump kernel N(sqrt(abar_t / abar_s) x_s, 1 - abar_t / abar_s)."""
    base = Schedule.linear(1000)
    s = base.respace("ddim10")
    rng = np.random.default_rng(15)
    x0, x_t = rng.standard_normal((9, 2)), rng.standard_normal((9, 2))
    k = np.arange(1, 10)
    mean, var, _ = q_posterior(s, asarray(x0, xp), asarray(x_t, xp), as_t(k, xp))
    a_s = base.alphas_cumprod[s.timesteps[k - 1]][:, None]
    a_t = base.alphas_cumprod[s.timesteps[k]][:, None]
    jump = a_t / a_s
    prec = 1 / (1 - a_s) + jump / (1 - jump)
    exp_var = 1 / prec
    exp_mean = exp_var * (np.sqrt(a_s) * x0 / (1 - a_s) + np.sqrt(jump) * x_t / (1 - jump))
    assert_close(mean, exp_mean, xp=xp, dtype="float64", factor=1e3)
    assert_close(var, exp_var, xp=xp, dtype="float64", factor=1e3)
    assert math.isfinite(float(to_numpy(var).sum()))


def _strided_ranges(T):
    """{N: range(0, T, s)} for every integer stride s, the smallest s for each count N."""
    ranges = {}
    for stride in range(T, 0, -1):
        ranges[len(range(0, T, stride))] = np.arange(0, T, stride)
    return ranges


@pytest.mark.parametrize("T", [1, 2, 7, 10, 97, 1000, 1024])
def test_ddimN_gives_every_count_and_stays_strided_where_it_can(T):
    """Every N in [1, T]: N sorted steps from 0, each gap floor(T/N) or ceil(T/N) (issue 12.10);
    where an integer stride gives exactly N, the strided range itself (unchanged behaviour)."""
    strided = _strided_ranges(T)
    for n in range(1, T + 1):
        kept = space_timesteps(T, f"ddim{n}")
        assert kept.dtype == np.int64 and len(kept) == n and kept[0] == 0, n
        gaps = np.diff(kept)
        assert set(gaps.tolist()) <= {T // n, -(-T // n)}, n
        assert T - 1 - kept[-1] < -(-T // n), n  # within one stride of the last step
        if n in strided:
            np.testing.assert_array_equal(kept, strided[n])
        else:
            np.testing.assert_array_equal(kept, [i * T // n for i in range(n)])
    if T == 1000:
        assert len(strided) == 63  # the 937 other counts used to be refused


def test_ddimN_without_an_integer_stride_is_the_floored_fractional_stride():
    kept = Schedule.linear(1000).respace("ddim60").timesteps
    np.testing.assert_array_equal(kept[:4], [0, 16, 33, 50])
    assert kept[-1] == 983 and len(kept) == 60
    # diffusers' "leading" stops at N - 1 when N > T / 2; ddimN still spans the chain
    assert space_timesteps(1000, 600, timestep_spacing="leading")[-1] == 599
    assert space_timesteps(1000, "ddim600")[-1] == 998


@pytest.mark.parametrize("spacing", ["ddim0", "abc", "2000", "0,5", [], [0, 1000], "ddim", 3.5])
def test_bad_spacing_raises_naming_spacing(spacing):
    with pytest.raises((ValueError, TypeError), match=r"\bspacing\b"):
        Schedule.linear(1000).respace(spacing)


def test_bad_timestep_spacing_raises():
    with pytest.raises(ValueError, match=r"\btimestep_spacing\b"):
        Schedule.linear(100).respace(10, timestep_spacing="middle")
