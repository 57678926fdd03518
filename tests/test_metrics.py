"""FID and KID on feature vectors (``ddpm_core.metrics``): NumPy only, float64."""

from __future__ import annotations

import doctest
import importlib.util
import itertools
import math

import numpy as np
import pytest

from ddpm_core import metrics
from ddpm_core.metrics import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_score,
    kid,
)

EPS = np.finfo(np.float64).eps


def _features(seed: int, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    """Correlated Gaussian features with a spread of scales (like CNN activations)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) * np.geomspace(0.05, 2.0, d)
    return rng.normal(size=(n, d)) @ mix + shift


def _random_orthogonal(seed: int, d: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _trace_term_eig(s1: np.ndarray, s2: np.ndarray) -> float:
    """Reference trace term by another route: eigenvalues of the non-symmetric S1 S2."""
    ev = np.linalg.eigvals(s1 @ s2)
    return float(np.sqrt(np.clip(ev.real, 0.0, None)).sum())


def _fid_eig(mu1, s1, mu2, s2) -> float:
    return float(
        (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2.0 * _trace_term_eig(s1, s2)
    )


def test_docstring_examples_run() -> None:
    result = doctest.testmod(metrics, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize(("n", "d"), [(200, 16), (40, 64), (5, 32)])
def test_fid_of_a_set_with_itself_is_zero(n: int, d: int) -> None:
    x = _features(n + d, n, d)
    _, sigma = feature_statistics(x)
    assert 0.0 <= fid_from_features(x, x) <= 100 * d * EPS * np.trace(sigma)


def test_fid_is_symmetric() -> None:
    x, y = _features(1, 60, 24), _features(2, 50, 24, shift=0.3)
    assert fid_from_features(x, y) == pytest.approx(fid_from_features(y, x), rel=1e-12)


@pytest.mark.parametrize("rotate", [False, True])
def test_fid_of_gaussians_matches_closed_form(rotate: bool) -> None:
    """Covariances sharing eigenvectors: d^2 = |mu1 - mu2|^2 + sum (sqrt a_i - sqrt b_i)^2."""
    d = 12
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.01, 5.0, size=d), rng.uniform(0.01, 5.0, size=d)
    a[:3] = 0.0  # a singular covariance is allowed
    q = _random_orthogonal(4, d) if rotate else np.eye(d)
    s1, s2 = (q * a) @ q.T, (q * b) @ q.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    # Rounding the rotated S1 moves its zero eigenvalues to ~eps |S1|; the square root turns
    # that into ~sqrt(eps) (the problem's own conditioning at a singular covariance).
    rel = 1e2 * d * np.sqrt(EPS) if rotate else 1e2 * d * EPS
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=rel)


def test_fid_of_sample_statistics_matches_distribution_closed_form() -> None:
    """Large samples of N(0, diag(a)) and N(m, diag(b)) land near the population value."""
    rng = np.random.default_rng(5)
    a, b, m = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25]), np.array([1.0, 0.0, 2.0])
    x = rng.normal(size=(200_000, 3)) * np.sqrt(a)
    y = rng.normal(size=(200_000, 3)) * np.sqrt(b) + m
    expected = m @ m + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)  # 5 + 4 + 1 = 10
    assert fid_from_features(x, y) == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize(("n1", "n2", "d"), [(300, 250, 20), (400, 300, 64), (30, 25, 48)])
def test_frechet_distance_agrees_with_eigenvalue_route(n1: int, n2: int, d: int) -> None:
    """Against tr sqrt(S1 S2) from numpy.linalg.eigvals (rank-deficient when n < d; that
    route is then only good to ~sqrt(eps) per null direction)."""
    x, y = _features(n1, n1, d), _features(n2, n2, d, shift=0.1)
    (mu1, s1), (mu2, s2) = feature_statistics(x), feature_statistics(y)
    rank_deficient = min(n1, n2) <= d
    rel = 1e3 * d * np.sqrt(EPS) if rank_deficient else 1e3 * d * EPS
    scale = np.trace(s1) + np.trace(s2)
    assert abs(frechet_distance(mu1, s1, mu2, s2) - _fid_eig(mu1, s1, mu2, s2)) <= rel * scale


@pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="needs scipy")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_frechet_distance_agrees_with_scipy_sqrtm(seed: int) -> None:
    import scipy.linalg

    d = 32
    x, y = _features(seed, 400, d), _features(seed + 10, 300, d, shift=0.2)
    (mu1, s1), (mu2, s2) = feature_statistics(x), feature_statistics(y)
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    reference = (mu1 - mu2) @ (mu1 - mu2) + np.trace(s1 + s2 - 2.0 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e3 * d * EPS)


@pytest.mark.parametrize(("n1", "n2", "d"), [(30, 25, 48), (64, 10, 64), (2, 2, 8)])
def test_sample_space_route_agrees_with_covariance_route(n1: int, n2: int, d: int) -> None:
    """For N <= d fid_from_features never forms a (d, d) matrix; same value either way.

    The covariance route sees rank-deficient covariances whose zero eigenvalues were rounded
    to ~eps |S|; their square roots make it differ by ~sqrt(eps), hence the tolerance.
    """
    x, y = _features(n1 + 1, n1, d), _features(n2 + 2, n2, d, shift=0.1)
    (mu1, s1), (mu2, s2) = feature_statistics(x), feature_statistics(y)
    scale = np.trace(s1) + np.trace(s2)
    assert abs(fid_from_features(x, y) - frechet_distance(mu1, s1, mu2, s2)) <= (
        10 * np.sqrt(EPS) * scale
    )


def test_feature_statistics_match_numpy_cov() -> None:
    x = _features(7, 30, 5)
    mu, sigma = feature_statistics(x.astype(np.float32))
    assert mu.dtype == sigma.dtype == np.float64
    assert mu.shape == (5,) and sigma.shape == (5, 5)
    np.testing.assert_allclose(mu, x.astype(np.float32).mean(axis=0, dtype=np.float64))
    np.testing.assert_allclose(
        sigma, np.cov(x.astype(np.float32).astype(np.float64), rowvar=False), rtol=1e-12, atol=1e-14
    )


def _mmd2_loops(x: np.ndarray, y: np.ndarray) -> float:
    """Binkowski et al. eq. 3 written with explicit sums."""
    m, d = x.shape

    def k(u, v):
        return (u @ v / d + 1.0) ** 3

    pairs = [(i, j) for i, j in itertools.product(range(m), repeat=2) if i != j]
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i, j in pairs) / (m * (m - 1))
    cross = sum(k(x[i], y[j]) for i, j in itertools.product(range(m), repeat=2)) / m**2
    return within - 2.0 * cross


def test_kid_matches_the_estimator_written_out() -> None:
    """With subset_size >= N every subset is the whole set (reordered): one exact value."""
    x, y = _features(8, 12, 5), _features(9, 12, 5, shift=0.5)
    mean, std = kid(x, y, subsets=3, subset_size=1000)
    assert mean == pytest.approx(_mmd2_loops(x, y), rel=1e-10)
    assert std <= 1e-10 * abs(mean)


def test_kid_of_two_halves_of_one_sample_is_near_zero() -> None:
    z = _features(10, 600, 16)
    mean, std = kid(z[:300], z[300:], subsets=50, subset_size=100)
    assert std > 0.0
    assert abs(mean) < 3.0 * std


def test_kid_of_different_sets_is_large() -> None:
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(300, 16)), rng.normal(1.0, 1.0, size=(300, 16))
    mean_same, std_same = kid(x[:150], x[150:], subsets=20, subset_size=100)
    mean, std = kid(x, y, subsets=20, subset_size=100)
    assert mean > 10.0 * std
    assert mean > 100.0 * (abs(mean_same) + std_same)


def test_kid_is_deterministic_per_seed() -> None:
    x, y = _features(13, 80, 8), _features(14, 70, 8, shift=0.2)
    assert kid(x, y, subsets=5, subset_size=20) == kid(x, y, subsets=5, subset_size=20)
    assert kid(x, y, subsets=5, subset_size=20) != kid(x, y, subsets=5, subset_size=20, rng_seed=1)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: fid_from_features(np.ones((1, 4)), np.ones((5, 4))), "at least 2 samples"),
        (lambda: fid_from_features(np.ones((5, 4)), np.ones((5, 3))), "same dimension d"),
        (lambda: fid_from_features(np.ones(5), np.ones((5, 1))), r"2-D \(N, d\)"),
        (lambda: fid_from_features(np.full((3, 2), np.nan), np.ones((3, 2))), "NaN"),
        (lambda: feature_statistics(np.zeros((1, 3))), "at least 2 samples"),
        (
            lambda: frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3)),
            r"sigma1 must have shape \(d, d\)",
        ),
        (
            lambda: frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2)),
            "mu1 and mu2 must have the same length",
        ),
        (
            lambda: frechet_distance(np.zeros((3, 1)), np.eye(3), np.zeros(3), np.eye(3)),
            "mu1 must be a non-empty 1-D",
        ),
        (lambda: kid(np.ones((1, 4)), np.ones((5, 4))), "at least 2 samples"),
        (lambda: kid(np.ones((5, 4)), np.ones((5, 4)), subsets=0), "subsets must be"),
        (lambda: kid(np.ones((5, 4)), np.ones((5, 4)), subset_size=1), "subset_size must be"),
        (lambda: kid(np.ones((5, 4)), np.ones((5, 4)), rng_seed=-1), "rng_seed must be"),
    ],
)
def test_bad_inputs_raise_clear_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# ---- Inception Score ------------------------------------------------------------------


def _is_loops(p: np.ndarray, splits: int) -> tuple[float, float]:
    """IS written out element by element with math.log (0 log 0 = 0)."""
    n, k = p.shape
    scores = []
    for i in range(splits):
        rows = p[i * n // splits:(i + 1) * n // splits].tolist()
        marginal = [sum(r[j] for r in rows) / len(rows) for j in range(k)]
        kl = [sum(r[j] * (math.log(r[j]) - math.log(marginal[j])) for j in range(k) if r[j] > 0)
              for r in rows]
        scores.append(math.exp(sum(kl) / len(kl)))
    mean = sum(scores) / splits
    return mean, math.sqrt(sum((s - mean) ** 2 for s in scores) / splits)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize(("n", "k", "splits", "temperature"),
                         [(100, 10, 10, 1.0), (37, 3, 4, 0.2), (50, 7, 1, 5.0), (12, 2, 12, 1.0)])
def test_inception_score_matches_the_definition_written_out(n, k, splits, temperature) -> None:
    rng = np.random.default_rng(n + k)
    p = _softmax(rng.normal(size=(n, k)) / temperature)
    p[0] = np.eye(k)[1]  # a row with exact zero probabilities: 0 log 0 = 0
    mean, std = inception_score(p, splits=splits)
    ref_mean, ref_std = _is_loops(p, splits)
    assert mean == pytest.approx(ref_mean, rel=100 * EPS)
    assert std == pytest.approx(ref_std, rel=1e-9, abs=100 * EPS * ref_mean)
    assert 1.0 - 100 * EPS <= mean <= k


@pytest.mark.parametrize("k", [2, 10, 1008])
def test_inception_score_limits_uniform_is_1_and_confident_balanced_is_k(k) -> None:
    mean, std = inception_score(np.full((4 * k, k), 1.0 / k, np.float32), splits=4)
    assert mean == pytest.approx(1.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    confident = np.eye(k)[np.tile(np.arange(k), 4)]  # every split sees each class once
    mean, std = inception_score(confident, splits=4)
    assert mean == pytest.approx(k, rel=100 * EPS) and std < 100 * EPS * k


def test_inception_score_of_one_repeated_confident_class_is_1() -> None:
    assert inception_score(np.eye(5)[np.zeros(30, int)], splits=3) == (1.0, 0.0)


def test_inception_score_accepts_float32_softmax_rows() -> None:
    logits = np.random.default_rng(0).normal(size=(64, 1000)).astype(np.float32)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    p32 = e / e.sum(axis=1, keepdims=True)
    mean, _ = inception_score(p32, splits=2)
    assert mean == pytest.approx(_is_loops(p32.astype(np.float64), 2)[0], rel=1e-12)


@pytest.mark.parametrize(
    ("probs", "splits", "message"),
    [
        (np.full((4, 2), 0.6), 2, "row 0 sums to"),
        (np.array([[0.5, 0.5], [0.5, 0.5 + 1e-9]]), 1, "row 1 sums to"),
        (np.array([[1.5, -0.5], [0.5, 0.5]]), 1, "non-negative"),
        (np.array([[np.nan, 1.0]]), 1, "NaN"),
        (np.ones(4) / 4, 1, "2-D"),
        (np.zeros((0, 3)), 1, "2-D"),
        (np.array([[0, 1], [1, 0]]), 1, "floating-point"),
        (np.full((4, 2), 0.5), 5, "splits must be"),
        (np.full((4, 2), 0.5), 0, "splits must be"),
        (np.full((4, 2), 0.5), True, "splits must be"),
        (np.full((4, 2), 0.5), 2.0, "splits must be"),
    ],
)
def test_inception_score_bad_inputs_raise_clear_errors(probs, splits, message) -> None:
    with pytest.raises(ValueError, match=message):
        inception_score(probs, splits=splits)
