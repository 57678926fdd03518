"""erf, erfc, log Phi and log interval masses against math.erf/math.erfc and tail series."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ddpm_testing import asarray, check_array, eps_of, ref_log_bin_mass, ref_log_ndtr, to_numpy
from hypothesis import given
from hypothesis import strategies as st

from ddpm_core.special import erf, erfc, log_erfc, log_ndtr, log_normal_mass

ERF_X = np.concatenate([np.linspace(-6, 6, 241), [-1.0, 1.0, -1e-8, 1e-8, 0.0, 7.9, 8.0, 8.1]])
ERFC_X = np.concatenate([np.linspace(-6, 26, 321), [1.0, 8.0, 0.999999, 1.000001]])


def _rel(got, expected):
    return np.abs(got - expected) / np.maximum(np.abs(expected), np.finfo(np.float64).tiny)


def _tol(dtype, factor=50.0):
    return factor * eps_of(dtype)


def test_erf(xp, dtype):
    x = ERF_X.astype(dtype)
    got = erf(asarray(x, xp, dtype))
    check_array(got, xp=xp, dtype=dtype, shape=x.shape)
    expected = np.array([math.erf(float(v)) for v in x])
    np.testing.assert_allclose(to_numpy(got), expected, rtol=_tol(dtype), atol=_tol(dtype) * 1e-8)


def test_erfc_relative_accuracy_into_the_tail(xp, dtype):
    x = ERFC_X if dtype == "float64" else ERFC_X[ERFC_X < 9]  # erfc(9) ~ 4e-37: float32 range
    x = x.astype(dtype)
    got = to_numpy(erfc(asarray(x, xp, dtype))).astype(np.float64)
    expected = np.array([math.erfc(float(v)) for v in x])
    # erfc = exp(log erfc): an absolute error eps |log erfc| in the log is that relative error
    bound = _tol(dtype) * np.maximum(1.0, np.abs(np.log(expected)))
    assert np.all(_rel(got, expected) <= bound), np.max(_rel(got, expected) / bound)


def test_log_erfc_far_tail(xp):
    x = np.array([0.5, 5.0, 27.0, 40.0, 100.0, 1e3, 1e5, -3.0, -30.0])
    got = to_numpy(log_erfc(asarray(x, xp)))
    expected = np.array([math.log(2.0) + ref_log_ndtr(-math.sqrt(2.0) * v) for v in x])
    np.testing.assert_allclose(got, expected, rtol=_tol("float64"), atol=_tol("float64"))


def test_log_ndtr(xp, dtype):
    x = np.concatenate([np.linspace(-60, 10, 141), [-1e3, -200.0, 20.0, 37.0]])
    if dtype == "float32":
        x = x[(x > -1e3)]
    x = x.astype(dtype)
    got = to_numpy(log_ndtr(asarray(x, xp, dtype))).astype(np.float64)
    expected = np.array([ref_log_ndtr(float(v)) for v in x])
    assert np.all(np.isfinite(got))
    # relative accuracy everywhere; for x > 0, log Phi(x) ~ -Phi(-x) = -exp(log Phi(-x)) whose
    # relative error is eps |log Phi(-x)| (the exp of an accurate log); below the dtype's
    # smallest normal number an underflow to 0 is correct
    tail = np.array([abs(ref_log_ndtr(-float(v))) if v > 0 else 1.0 for v in x])
    bound = _tol(dtype) * np.maximum(1.0, tail) * np.abs(expected) + np.finfo(dtype).tiny
    assert np.all(np.abs(got - expected) <= bound), np.max(np.abs(got - expected) / bound)


@given(a=st.floats(-60, 60), width=st.floats(1e-6, 30))
def test_log_normal_mass(xp, a, width):
    b = a + width
    got = float(to_numpy(log_normal_mass(asarray(np.array([a]), xp), asarray(np.array([b]), xp)))[0])
    expected = ref_log_bin_mass(a, b)
    assert math.isfinite(got)
    # as a difference of CDFs (implementation and reference alike) a mass of width w keeps
    # ~eps / w relative digits; far tails add (|a| + |b|)^2 (the log of the CDF)
    cond = max(1.0, (abs(a) + abs(b)) ** 2, 1.0 / width)
    assert got == pytest.approx(expected, rel=100 * cond * eps_of("float64"), abs=100 * cond * eps_of("float64"))
