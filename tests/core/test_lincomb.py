"""lincomb: the fused linear combination every step is made of, on every backend."""

from __future__ import annotations

import numpy as np
import pytest
from ddpm_testing import asarray, assert_close, rounded, to_numpy
from hypothesis import given
from hypothesis import strategies as st

from ddpm_core._arith import lincomb

COEFS = st.floats(-3.0, 3.0, allow_nan=False).map(float) | st.sampled_from([0.0, 1.0, -1.0])


@given(coefs=st.lists(COEFS, min_size=1, max_size=4), per_sample=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_lincomb_matches_float64_sum(xp, dtype, coefs, per_sample, seed):
    rng = np.random.default_rng(seed)
    shape = (3, 2, 4)
    arrays = [rounded(rng.standard_normal(shape), dtype) for _ in coefs]
    ref_coefs: list = list(coefs)
    given_coefs: list = list(coefs)
    if per_sample:  # the second term gets a (B, 1, 1) coefficient, as a t-vector step does
        c = rounded(rng.standard_normal((3, 1, 1)), dtype)
        ref_coefs[-1], given_coefs[-1] = c, asarray(c, xp, dtype)
    inputs = [asarray(a, xp, dtype) for a in arrays]
    before = [to_numpy(a).copy() for a in inputs]
    got = lincomb(xp, *zip(given_coefs, inputs, strict=True))
    expected = sum(c * a for c, a in zip(ref_coefs, arrays, strict=True))
    scale = float(np.max(sum(np.abs(c) * np.abs(a) for c, a in zip(ref_coefs, arrays, strict=True)))) + 1.0
    assert_close(got, expected, xp=xp, dtype=dtype, scale=scale, shape=shape)
    for a, b in zip(inputs, before, strict=True):  # the fused path writes only its own buffer
        np.testing.assert_array_equal(to_numpy(a), b)
    assert all(got is not a for a in inputs)


def test_lincomb_leaves_out_zero_coefficients(xp):
    x = asarray(np.ones((2, 3)), xp)
    bad = asarray(np.full((2, 3), np.nan), xp)
    np.testing.assert_array_equal(to_numpy(lincomb(xp, (2.0, x), (0.0, bad))), 2.0)
    np.testing.assert_array_equal(to_numpy(lincomb(xp, (0.0, x))), 0.0)


def test_lincomb_promotes_like_the_plain_expression(xp):
    if not hasattr(xp, "float32"):
        pytest.skip("no float32")
    x = asarray(np.ones((2, 3)), xp, "float32")
    y = asarray(np.full((2, 3), 0.5), xp, "float64")
    got = lincomb(xp, (1.0, x), (2.0, y))
    assert got.dtype == xp.float64
    np.testing.assert_array_equal(to_numpy(got), 2.0)


def test_torch_lincomb_gradients_match_the_plain_expression():
    torch = pytest.importorskip("torch")
    import array_api_compat.torch as tx

    g = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    k = torch.randn(4, 1, generator=g, dtype=torch.float64, requires_grad=True)
    fused = lincomb(tx, (1.0, a), (-0.5, b), (k, c))
    plain = a - 0.5 * b + k * c
    w = torch.randn(4, 3, generator=g, dtype=torch.float64)
    grads_fused = torch.autograd.grad((fused * w).sum(), (a, b, c, k))
    grads_plain = torch.autograd.grad((plain * w).sum(), (a, b, c, k))
    for f, p in zip(grads_fused, grads_plain, strict=True):
        torch.testing.assert_close(f, p, rtol=0, atol=1e-15)
