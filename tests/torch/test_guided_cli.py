"""``ddpm sample --class/--guidance/--classifier`` and the label checks of app/sampling/requests.py."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from guided_runs import write_clf_run, write_test_runs  # noqa: E402

from ddpm_core.app.cli import main  # noqa: E402
from ddpm_core.app.sampling.requests import guidance_settings, parse_classes, sample_labels  # noqa: E402

K = 3


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_test_runs(tmp_path_factory.mktemp("cli"), K)


def _sample(root, tmp_path, *extra):
    out = tmp_path / "s.png"
    rc = main(["sample", "--run", str(root / extra[0]), "--out", str(out), "--sampler", "ddim",
               "--steps", "3", "--device", "cpu", *extra[1:]])
    return rc, out


def test_class_grid_guidance_and_labels_in_the_npz(root, tmp_path):
    rc, out = _sample(root, tmp_path, "cond", "--class", "all", "--n", "2", "--guidance", "3",
                      "--guidance-rescale", "0.7", "--classifier", str(root / "clf"),
                      "--classifier-scale", "2")
    assert rc == 0 and out.is_file()
    npz = np.load(out.with_suffix(".npz"))
    assert npz["images"].shape == (2 * K, 8, 8, 1)
    np.testing.assert_array_equal(npz["labels"], [0, 0, 1, 1, 2, 2])
    rc, out = _sample(root, tmp_path, "cond", "--class", "2,0")  # one class per sample
    np.testing.assert_array_equal(np.load(out.with_suffix(".npz"))["labels"], [2, 0])
    rc, out = _sample(root, tmp_path, "uncond", "--n", "2")  # unguided: no labels
    assert rc == 0 and "labels" not in np.load(out.with_suffix(".npz"))


@pytest.mark.parametrize("run,args,message", [
    ("cond", [], "class-conditional (3 classes) needs classes"),
    ("cond", ["--class", "3"], "classes must lie in [0, 3) (3 classes); got 3"),
    ("cond", ["--class", "1", "--n", "2", "--classifier", "nowhere"], "no run.json"),
    ("uncond", ["--class", "1"], "unconditional (unet.num_classes = 0) and takes no classes"),
    ("uncond", ["--guidance", "2"], "guidance needs a class-conditional model"),
    ("uncond", ["--classifier", "clf"], "classifier guidance needs classes"),
    ("uncond", ["--class", "1", "--classifier-scale", "2"], "classifier_scale=2.0 needs a classifier"),
    ("cond", ["--class", "1", "--guidance", "nan"], "guidance must be a finite number"),
    ("cond", ["--class", "1", "--classifier", "clf4"], "the classifier has 4 classes but the model has 3"),
    ("cond", ["--class", "1", "--classifier", "clf10"], "trained on a 10-step chain but the model's"),
    ("cond", ["--class", "1", "--classifier", "clf28"], "image_size=28 but the model's image_size is 8"),
])
def test_errors_are_one_line_and_name_the_problem(root, tmp_path, capsys, run, args, message):
    write_clf_run(root / "clf4", num_classes=4)
    write_clf_run(root / "clf10", num_classes=K, num_timesteps=10)
    write_clf_run(root / "clf28", num_classes=K, preset="mnist")
    args = [str(root / a) if a.startswith("clf") else a for a in args]
    if "nowhere" in args:
        args[args.index("nowhere")] = str(root / "nowhere")
    rc, out = _sample(root, tmp_path, run, *args)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("text", ["seven", "1,,2", "1.5", ""])
def test_bad_class_values_are_usage_errors(root, tmp_path, capsys, text):
    with pytest.raises(SystemExit) as e:
        _sample(root, tmp_path, "cond", "--class", text)
    assert e.value.code == 2 and "argument --class: must be 'all', an integer" in capsys.readouterr().err


def test_labels():
    assert parse_classes("all") == "all" and parse_classes("7") == 7
    assert parse_classes("1,4") == [1, 4] and parse_classes(" 5 ") == 5
    np.testing.assert_array_equal(sample_labels("all", 2, 3), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(sample_labels(np.int64(2), 2, 3), [2, 2])
    for bad, match in [([1, 2], "one label per sample"), (True, "an integer"), (1.0, "an integer"),
                       (-1, r"lie in \[0, 3\)"), ([0, 1, 5], "got 5"), ("some", "or 'all'")]:
        with pytest.raises(ValueError, match=match):
            sample_labels(bad, 3, 3)
    g = guidance_settings(3, 1, 2)
    assert (g.scale, g.rescale, g.classifier_scale) == (1.0, 0.0, 0.0)
    assert guidance_settings(0, [0, 1], 2, classifier_classes=3).classifier_scale == 1.0
    with pytest.raises(ValueError, match=r"guidance_rescale must lie in \[0, 1\]"):
        guidance_settings(3, 1, 2, guidance_rescale=1.5)
