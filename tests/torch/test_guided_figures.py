"""``ddpm progressive`` (Figure 6) and ``ddpm interpolate`` (Figure 8) on class-conditional
runs: the guidance of ``ddpm sample``, and one label (or the null label) for interpolation."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from guided_runs import write_model_run, write_test_runs  # noqa: E402

from ddpm_core.app.cli import main  # noqa: E402
from ddpm_core.app.run.splits import interpolation_sources  # noqa: E402
from ddpm_core.backends.torch import api, sampling  # noqa: E402
from ddpm_core.data import to_model_range  # noqa: E402

K = 4
LAMBDAS = [0.0, 0.5, 1.0]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = write_test_runs(tmp_path_factory.mktemp("figures"), K)
    for run, dropout in (("dropout", 0.1), ("nodrop", 0.0)):
        write_model_run(root / run, num_classes=K, seed=3)
        info = json.loads((root / run / "run.json").read_text())
        info["options"] = {"label_dropout": dropout}
        (root / run / "run.json").write_text(json.dumps(info))
    return root


def _cli(root, tmp_path, command, run, *extra):
    out = tmp_path / f"{command}.png"
    rc = main([command, "--run", str(root / run), "--out", str(out), "--device", "cpu",
               *[str(root / a) if a.startswith("clf") else a for a in extra]])
    return rc, out


@pytest.mark.parametrize("options", [
    ["--sampler", "ddim", "--steps", "5", "--class", "3", "--guidance", "2", "--n", "2"],
    ["--class", "1,3", "--guidance", "3", "--guidance-rescale", "0.5"],  # the full 20 steps
    ["--steps", "6", "--class", "all", "--n", "1", "--classifier", "clf",
     "--classifier-scale", "2"],
])
def test_progressive_frames_end_with_the_guided_sample(root, tmp_path, options):
    """The last frame is `ddpm sample`'s output with the same options and seed, bit for bit."""
    rc, out = _cli(root, tmp_path, "progressive", "cond", "--frames", "3", "--seed", "7",
                   *options)
    assert rc == 0
    prog = np.load(out.with_suffix(".npz"))
    rc, out = _cli(root, tmp_path, "sample", "cond", "--seed", "7", *options)
    assert rc == 0
    samp = np.load(out.with_suffix(".npz"))
    frames = prog["frames"]
    assert frames.shape == (3, len(samp["labels"]), 8, 8, 1) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[-1], samp["images"])
    np.testing.assert_array_equal(prog["labels"], samp["labels"])
    assert np.abs(frames[0].astype(int) - frames[-1]).max() > 0


def test_progressive_class_all_gives_n_chains_per_class(root, tmp_path):
    rc, out = _cli(root, tmp_path, "progressive", "cond", "--class", "all", "--n", "2",
                   "--frames", "2", "--sampler", "ddim", "--steps", "3")
    npz = np.load(out.with_suffix(".npz"))
    assert rc == 0 and npz["frames"].shape == (2, 2 * K, 8, 8, 1)
    np.testing.assert_array_equal(npz["labels"], np.repeat(np.arange(K), 2))
    api_frames = api.progressive(root / "cond", n=2, classes="all", frames=2, sampler="ddim",
                                 steps=3, device="cpu")
    np.testing.assert_array_equal(api_frames, npz["frames"])


def _reference_interpolation(root, run, label, pair=(0, 1)):
    """The decode of the core's interpolation with net(x, t, y=label), y for every mixture."""
    net, schedule, info = api.load_run(root / run, device="cpu")
    src = to_model_range(interpolation_sources(info, pair))

    from ddpm_core import interpolate
    from ddpm_core.app.run.images import to_uint8
    from ddpm_core.backends.torch.noise import interpolation_streams

    L, fn = len(LAMBDAS), sampling.model_fn(net)
    y = torch.full((L,), label, dtype=torch.int64)
    a, b = (torch.as_tensor(v).permute(2, 0, 1)[None].expand(L, -1, -1, -1) for v in src)
    noise_a, noise_b, noise = interpolation_streams(0, L, a.shape[1:], torch.device("cpu"))
    x = interpolate(schedule, lambda x, t: fn(x, t, y), a, b, torch.as_tensor(np.asarray(LAMBDAS, np.float32)),
                    10, noise_a, noise_b, noise, prediction=info["prediction"], variance=info["variance"], clip=True)
    return to_uint8(x.permute(0, 2, 3, 1).numpy())


@pytest.mark.parametrize("run,options,label", [
    ("cond", ["--class", "2"], 2),
    ("dropout", [], K),  # label dropout > 0: the null label decodes
])
def test_interpolate_a_conditional_run(root, tmp_path, run, options, label):
    pytest.importorskip("sklearn")
    rc, out = _cli(root, tmp_path, "interpolate", run, "--t", "10", "--lambdas", "0,0.5,1",
                   "--pair", "0", "1", "--pair", "2", "3", *options)
    npz = np.load(out.with_suffix(".npz"))
    assert rc == 0 and npz["interpolations"].shape == (2, 3, 8, 8, 1)
    assert int(npz["label"]) == label
    np.testing.assert_array_equal(npz["interpolations"][0],
                                  _reference_interpolation(root, run, label))
    other = api.interpolate(root / run, t=10, lambdas=LAMBDAS, classes=(label + 1) % K,
                            device="cpu")
    assert not np.array_equal(other, npz["interpolations"][0])


def test_interpolate_with_guidance_is_the_guided_decode(root):
    pytest.importorskip("sklearn")
    kw = dict(t=10, lambdas=LAMBDAS, classes=1, device="cpu")
    plain = api.interpolate(root / "cond", **kw)
    np.testing.assert_array_equal(plain, api.interpolate(root / "cond", guidance=1.0, **kw))
    guided = api.interpolate(root / "cond", guidance=3.0, guidance_rescale=0.5, **kw)
    assert guided.shape == plain.shape and not np.array_equal(guided, plain)


@pytest.mark.parametrize("command,run,args,message", [
    ("progressive", "cond", [], "class-conditional (4 classes) needs classes (--class)"),
    ("progressive", "cond", ["--class", "4"], "classes must lie in [0, 4) (4 classes); got 4"),
    ("progressive", "uncond", ["--class", "1"],
     "unconditional (unet.num_classes = 0) and takes no classes"),
    ("progressive", "uncond", ["--guidance", "2"], "guidance needs a class-conditional model"),
    ("interpolate", "cond", [], "records label_dropout=None, so it has no unconditional "
                                "(null-label) model to decode with: give classes (--class K"),
    ("interpolate", "nodrop", [], "records label_dropout=0.0, so it has no unconditional"),
    ("interpolate", "cond", ["--class", "all"], "takes one class (--class K, an integer in "
                                                "[0, 4)); got 'all'"),
    ("interpolate", "cond", ["--class", "1,2"], "takes one class"),
    ("interpolate", "cond", ["--class", "7"], "classes must lie in [0, 4) (4 classes); got 7"),
    ("interpolate", "uncond", ["--class", "1"], "takes no classes (got 1); interpolation has no "
                                                "classifier guidance"),
    ("interpolate", "uncond", ["--guidance", "2"], "guidance needs a class-conditional model"),
    ("interpolate", "dropout", ["--guidance", "2"], "guidance=2.0 needs classes (--class K"),
    ("interpolate", "cond", ["--class", "1", "--classifier", "clf"],
     "--classifier is not available for interpolate"),
])
def test_errors_are_one_line_and_name_the_flag(root, tmp_path, capsys, command, run, args,
                                                message):
    rc, out = _cli(root, tmp_path, command, run, *args)
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1 and not out.exists()


@pytest.mark.parametrize("command", ["progressive", "interpolate"])
def test_bad_class_values_are_usage_errors(root, tmp_path, capsys, command):
    with pytest.raises(SystemExit) as e:
        _cli(root, tmp_path, command, "cond", "--class", "seven")
    assert e.value.code == 2
    assert "argument --class: must be 'all', an integer" in capsys.readouterr().err


def test_api_errors(root):
    with pytest.raises(ValueError, match=r"needs classes \(--class\)"):
        api.progressive(root / "cond", n=2, frames=2, device="cpu")
    with pytest.raises(ValueError, match="records label_dropout=None"):
        api.interpolate(root / "cond", t=5, lambdas=LAMBDAS, device="cpu")
    with pytest.raises(TypeError, match="classifier"):
        api.interpolate(root / "cond", t=5, classes=1, classifier=root / "clf")
