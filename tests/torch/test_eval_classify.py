"""``ddpm eval classify``: the report (app/evaluation/classify.py), the cached evaluation classifier
and user TorchScript networks (backends/torch/eval_classifier.py), and the command."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from guided_runs import write_clf_run, write_model_run  # noqa: E402

from ddpm_core.app.cli import main  # noqa: E402
from ddpm_core.app.evaluation.classify import IS_NOTE, classify_report, confusion_matrix  # noqa: E402
from ddpm_core.backends.torch import eval_classifier as ec  # noqa: E402
from ddpm_core.data import load_labeled_dataset  # noqa: E402

K = 10  # the digits' classes


# --------------------------------------------------------------------------- the report

def test_report_matches_a_hand_computed_example():
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.6, 0.3, 0.1]])
    r = classify_report(probs, np.array([0, 1, 2, 1]), num_classes=3, splits=1)
    assert r["accuracy"] == 0.75  # sample 3 (meant as 1) is called 0
    np.testing.assert_array_equal(r["confusion"], [[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    np.testing.assert_array_equal(r["predicted"], [0, 1, 2, 0])
    marginal = [0.425, 0.35, 0.225]  # column means
    kl = [sum(p * math.log(p / q) for p, q in zip(row, marginal, strict=True)) for row in probs]
    assert r["inception_score"] == pytest.approx(math.exp(sum(kl) / 4), rel=1e-14)
    assert (r["inception_score_std"], r["splits"], r["n"]) == (0.0, 1, 4)


def test_report_without_the_same_label_space_has_no_accuracy():
    probs = np.full((4, 3), 1 / 3)
    assert classify_report(probs)["accuracy"] is None
    r = classify_report(probs, np.array([0, 1, 0, 1]), num_classes=2)  # 3-class network
    assert r["accuracy"] is None and r["confusion"] is None
    assert r["inception_score"] == pytest.approx(1.0, abs=1e-12) and r["splits"] == 4


def test_class_ordered_samples_are_shuffled_before_the_splits():
    probs = np.eye(K)[np.repeat(np.arange(K), 20)]  # what --class all produces, confidently
    ordered = classify_report(probs, shuffle=False)["inception_score"]
    assert ordered == pytest.approx(1.0)  # one class per split
    assert classify_report(probs)["inception_score"] > 0.6 * K


def test_confusion_rejects_bad_classes():
    with pytest.raises(ValueError, match=r"predicted classes must lie in \[0, 2\); got 0..2"):
        confusion_matrix(np.array([0, 1]), np.array([0, 2]), 2)
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix(np.array([0, 1]), np.array([0]), 2)


# --------------------------------------------------------------------------- the classifier

@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache folder holding the digits' evaluation classifier (trained once here)."""
    folder = tmp_path_factory.mktemp("eval-cache")
    ec.cached_eval_classifier("digits", folder)
    return folder


def test_training_is_deterministic_and_leaves_the_global_state():
    data = load_labeled_dataset("digits", "train")
    rng_before, threads = torch.get_rng_state(), torch.get_num_threads()
    nets = [ec.train_eval_classifier(data.images[:96], data.labels[:96], K, epochs=1)
            for _ in range(2)]
    for (name, a), b in zip(nets[0].state_dict().items(), nets[1].state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(torch.get_rng_state(), rng_before) and torch.get_num_threads() == threads


def test_the_cache_is_reused_and_records_the_heldout_accuracy(cache, monkeypatch, tmp_path):
    from safetensors import safe_open

    path = cache / "eval-classifier-digits.safetensors"
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    held = load_labeled_dataset("digits", "heldout")
    calls = []

    def untrained(images, labels, k):
        calls.append(images.shape)
        return ec.EvalNet(1, 8, k).eval()

    monkeypatch.setattr(ec, "train_eval_classifier", untrained)
    clf = ec.cached_eval_classifier("digits", cache)
    assert calls == [] and clf.path == path and meta["data"] == "digits"
    assert clf.heldout_accuracy == float(meta["heldout_accuracy"]) > 0.5
    assert ec.accuracy(clf.net, held.images, held.labels) == clf.heldout_accuracy
    other = tmp_path / "other"
    other.mkdir()
    (other / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(ec, "RECIPE", "another recipe")  # a changed recipe retrains
    assert ec.cached_eval_classifier("digits", other).heldout_accuracy < 0.5
    assert calls == [(1617, 8, 8, 1)]
    with safe_open(str(other / path.name), framework="numpy") as f:
        assert f.metadata()["recipe"] == "another recipe"


def test_no_builtin_classifier_for_other_data(tmp_path):
    with pytest.raises(ValueError, match="this run's data is 'x.npz': give --is-network PATH"):
        ec.cached_eval_classifier("x.npz", tmp_path)


# --------------------------------------------------------------------------- the command

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify")
    write_model_run(root / "cond", num_classes=K)
    write_model_run(root / "uncond", num_classes=0, seed=2)
    write_clf_run(root / "clf", num_classes=K)
    return root


def _classify(runs, cache, run, *extra):
    return main(["eval", "classify", "--run", str(runs / run), "--sampler", "ddim", "--steps",
                 "2", "--device", "cpu", "--cache-dir", str(cache), *extra])


def test_conditional_run_prints_every_field(runs, cache, capsys):
    assert _classify(runs, cache, "cond", "--n", "2", "--guidance", "2") == 0
    out = capsys.readouterr().out
    for text in ("20 samples graded by the built-in digits evaluation classifier",
                 "held-out accuracy", "intended class accuracy", "Inception Score",
                 IS_NOTE, "confusion (rows: intended class, columns: predicted class)"):
        assert text in out


def test_json_fields_agree(runs, cache, capsys):
    assert _classify(runs, cache, "cond", "--n", "2", "--json") == 0
    r = json.loads(capsys.readouterr().out)
    conf = np.asarray(r["confusion"])
    assert r["n"] == 2 * K and conf.shape == (K, K) and (conf.sum(axis=1) == 2).all()
    assert r["accuracy"] == pytest.approx(np.trace(conf) / r["n"])
    assert r["eval_accuracy"] == ec.cached_eval_classifier("digits", cache).heldout_accuracy
    assert 1.0 <= r["inception_score"] <= K and r["splits"] == 10 and r["note"] == IS_NOTE


def test_unconditional_run_has_intended_classes_only_with_a_classifier(runs, cache, capsys):
    assert _classify(runs, cache, "uncond", "--n", "4", "--json") == 0
    r = json.loads(capsys.readouterr().out)
    assert r["accuracy"] is None and r["confusion"] is None and r["n"] == 4
    assert _classify(runs, cache, "uncond", "--n", "3", "--class", "7", "--classifier",
                     str(runs / "clf"), "--classifier-scale", "2", "--json") == 0
    r = json.loads(capsys.readouterr().out)
    assert np.asarray(r["confusion"]).sum() == 3 and np.asarray(r["confusion"])[7].sum() == 3


def test_guidance_rescale_reaches_the_sampler(runs, cache, capsys):
    def inception_score(*extra):
        assert _classify(runs, cache, "cond", "--n", "2", "--guidance", "3", *extra, "--json") == 0
        return json.loads(capsys.readouterr().out)["inception_score"]

    assert inception_score("--guidance-rescale", "1") != inception_score()
    assert _classify(runs, cache, "uncond", "--n", "2", "--guidance-rescale", "0.5") == 2
    err = capsys.readouterr().err
    assert "guidance_rescale needs a class-conditional model" in err and err.count("\n") == 1


class _Pixels(torch.nn.Module):
    """Logits from the first ``k`` pixels (a fixed linear map), or a wrong shape."""

    def __init__(self, k: int, flat: bool = False) -> None:
        super().__init__()
        self.k, self.flat = k, flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = 3.0 * x.flatten(1)[:, :self.k]
        return z.sum(1) if self.flat else z


def _scripted(tmp_path, name, k, flat=False):
    path = tmp_path / name
    with warnings.catch_warnings():  # recent torch deprecates TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(_Pixels(k, flat)), str(path))
    return path


def test_is_network_replaces_the_builtin_classifier(runs, cache, tmp_path, capsys):
    net = _scripted(tmp_path, "net10.pt", K)
    assert _classify(runs, cache, "cond", "--n", "1", "--is-network", str(net), "--json") == 0
    r = json.loads(capsys.readouterr().out)
    held = load_labeled_dataset("digits", "heldout")
    x = held.images.reshape(len(held.images), -1)[:, :K].astype(np.float64) / 127.5 - 1
    assert r["eval_accuracy"] == pytest.approx(np.mean(x.argmax(1) == held.labels))
    assert r["classifier"] == f"TorchScript network {net}" and r["accuracy"] is not None
    assert IS_NOTE not in r["note"]
    net3 = _scripted(tmp_path, "net3.pt", 3)  # other classes than the run: IS only
    assert _classify(runs, cache, "cond", "--n", "1", "--is-network", str(net3)) == 0
    out = capsys.readouterr().out
    assert "- (the classifier has 3 classes, the request 10)" in out and IS_NOTE not in out


@pytest.mark.parametrize("case,message", [
    ("missing", "--is-network {path}: no such file"),
    ("garbage", "--is-network {path}: not a TorchScript network"),
    ("flat", "--is-network {path}: the network must return logits of shape (N, K) with K >= 2"),
])
def test_bad_is_network_is_a_one_line_error(runs, cache, tmp_path, capsys, case, message):
    path = tmp_path / "missing.pt"
    if case == "garbage":
        path = tmp_path / "garbage.pt"
        path.write_bytes(b"not a network")
    elif case == "flat":
        path = _scripted(tmp_path, "flat.pt", K, flat=True)
    assert _classify(runs, cache, "cond", "--n", "1", "--is-network", str(path)) == 2
    err = capsys.readouterr().err
    assert message.format(path=path) in err and err.count("\n") == 1


# --------------------------------------------------------------------------- the benchmark

def test_guidance_benchmark_grades_each_row_once(runs, cache, tmp_path, monkeypatch):
    from ddpm_testing import load_benchmark

    bench = load_benchmark("guidance")
    root = tmp_path / "guidance"
    argv = ["--root", str(root), "--cond", str(runs / "cond"), "--uncond", str(runs / "uncond"),
            "--classifier", str(runs / "clf"), "--cfg-scales", "1,3", "--classifier-scales",
            "0", "--per-class", "2", "--steps", "2", "--no-fid", "--grid-n", "2",
            "--cache-dir", str(cache)]
    assert bench.main(argv) == 0
    table = (root / "guidance.md").read_text(encoding="utf-8")
    rows = [line for line in table.splitlines() if line[:4] in ("| 1 ", "| 3 ", "| 0 ")]
    assert len(rows) == 3 and all("%" in line for line in rows)
    stored = json.loads((root / "rows" / "cfg-3.json").read_text(encoding="utf-8"))["row"]
    assert np.sum(stored["confusion"]) == 2 * K and stored["eval_accuracy"] > 0.8
    with np.load(root / "rows" / "cfg-3.npz") as z:
        np.testing.assert_array_equal(z["labels"], np.repeat(np.arange(K), 2))
        assert z["images"].shape == (2 * K, 8, 8, 1)
    monkeypatch.setattr(bench, "sample_row", lambda *a: pytest.fail("sampled again"))
    assert bench.main(argv) == 0  # same settings: every stored row is reused
    assert (root / "guidance.md").read_text(encoding="utf-8") == table
    with pytest.raises(SystemExit):
        bench.main(argv[:4] + ["--cfg-scales", "1,-2"])
