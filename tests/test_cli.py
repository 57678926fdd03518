"""The ``ddpm`` command: help, flag errors, backend loading, end to end on the tiny preset."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ddpm_core.app import cli

COMMANDS = ("train", "sample", "progressive", "interpolate", "presets")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    assert f"usage: ddpm {command}" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "words"), [
    (["train", "--preset", "nope", "--out", "x"], "argument --preset: invalid choice: 'nope'"),
    (["train", "--preset", "tiny", "--out", "x", "--steps", "-3"],
     "argument --steps: must be an integer >= 1; got '-3'"),
    (["train", "--preset", "tiny", "--out", "x", "--lr", "5"],
     "argument --lr: must be a number in (0.0, 1.0]; got '5'"),
    (["train", "--preset", "tiny", "--out", "x", "--loss", "l1"],
     "argument --loss: invalid choice: 'l1'"),
    (["train", "--preset", "tiny", "--out", "x", "--variance", "learned"],
     "variance='learned' is only trained by loss='vlb' or 'hybrid'"),
    (["train", "--preset", "tiny"], "the following arguments are required: --out"),
    (["sample", "--run", "r", "--sampler", "plms"], "argument --sampler: invalid choice"),
    (["sample", "--run", "r", "--eta", "2"], "argument --eta: must be a number in [0.0, 1.0]"),
    (["interpolate", "--run", "r", "--lambdas", "0,2"], "argument --lambdas: must be"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_flags_name_the_flag(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert words in capsys.readouterr().err


def test_missing_run_directory(tmp_path, capsys):
    assert cli.main(["sample", "--run", str(tmp_path / "none")]) == 2
    assert "no run.json" in capsys.readouterr().err


def test_missing_framework_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "jax" else real(name, *a))
    with pytest.raises(cli.BackendUnavailable, match=r"pip install 'ddpm-core\[jax\]'"):
        cli.load_backend("jax")
    with pytest.raises(ValueError, match="backend must be one of 'torch', 'jax'"):
        cli.load_backend("tf")


def test_python_dash_m_is_the_same_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ddpm_core", "--help"], capture_output=True,
                          text=True, cwd=tmp_path, env=os.environ)
    assert proc.returncode == 0 and "usage: ddpm" in proc.stdout
    for command in COMMANDS:
        assert command in proc.stdout


def test_end_to_end_on_tiny(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path / "run"
        assert cli.main(["train", "--backend", "torch", "--preset", "tiny", "--out", str(run),
                         "--steps", "3", "--log-every", "1", "--sample-n", "4", "--quiet"]) == 0
        assert "trained 3 steps" in capsys.readouterr().out
        assert cli.main(["train", "--preset", "tiny", "--out", str(run), "--steps", "4",
                         "--resume", "--quiet"]) == 0
        out = tmp_path / "s.png"
        assert cli.main(["sample", "--run", str(run), "--n", "6", "--sampler", "ddim",
                         "--steps", "5", "--out", str(out)]) == 0
        images = np.load(tmp_path / "s.npz")["images"]
        assert out.is_file() and images.shape == (6, 8, 8, 1) and images.dtype == np.uint8
        from ddpm_core.backends.torch import api

        assert cli.main(["sample", "--run", str(run), "--n", "6", "--sampler", "ddim", "--steps", "5",
                         "--spacing", "trailing", "--out", str(tmp_path / "t.png")]) == 0
        trailing = np.load(tmp_path / "t.npz")["images"]
        np.testing.assert_array_equal(trailing, api.sample(run, n=6, sampler="ddim", steps=5, spacing="trailing"))
        assert not np.array_equal(trailing, images)  # another chain: steps 199..999 against 0..800
        for sampler in ("dpmpp-2m", "dpmpp-2m-sde"):
            assert cli.main(["sample", "--run", str(run), "--n", "3", "--sampler", sampler, "--steps", "4",
                             "--out", str(tmp_path / f"{sampler}.png")]) == 0
            got = np.load(tmp_path / f"{sampler}.npz")["images"]
            np.testing.assert_array_equal(got, api.sample(run, n=3, sampler=sampler, steps=4))
        assert cli.main(["progressive", "--run", str(run), "--n", "2", "--frames", "3",
                         "--sampler", "ddim", "--steps", "6",
                         "--out", str(tmp_path / "p.png")]) == 0
        assert np.load(tmp_path / "p.npz")["frames"].shape == (3, 2, 8, 8, 1)
        assert cli.main(["interpolate", "--run", str(run), "--pair", "0", "1", "--pair", "2",
                         "3", "--t", "50", "--lambdas", "0,0.5,1",
                         "--out", str(tmp_path / "i.png")]) == 0
        assert np.load(tmp_path / "i.npz")["interpolations"].shape == (2, 3, 8, 8, 1)
        capsys.readouterr()
        assert cli.main(["presets", "--json"]) == 0
        table = json.loads(capsys.readouterr().out)
        assert table["cifar10"]["torch"] == 35_746_307
        assert set(table) >= {"cifar10", "celebahq256", "lsun256", "mnist", "digits", "tiny"}
        assert cli.main(["presets"]) == 0
        assert "35,746,307" in capsys.readouterr().out
    finally:
        torch.set_num_threads(old)


def _weights(path):
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_export_import_round_trip_samples_the_same(tmp_path, capsys):
    """ddpm export diffusers, then ddpm import diffusers: the same weights, run.json and samples."""
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    run, folder, back = tmp_path / "run", tmp_path / "hf", tmp_path / "back"
    assert cli.main(["train", "--preset", "tiny", "--data", "digits", "--steps", "2", "--out",
                     str(run), "--quiet", "--sample-n", "1"]) == 0
    assert cli.main(["export", "diffusers", "--run", str(run), "--out", str(folder)]) == 0
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert cli.main(["import", "diffusers", str(folder), "--out", str(back)]) == 0
    a, b = json.loads((run / "run.json").read_text()), json.loads((back / "run.json").read_text())
    for key in ("preset", "unet", "train", "schedule", "prediction", "variance", "data"):
        assert a[key] == b[key], key
    ema, imported = _weights(run / "ema.safetensors"), _weights(back / "ema.safetensors")
    assert ema.keys() == imported.keys()
    assert all(np.array_equal(ema[k], imported[k]) for k in ema)
    for r, out in ((run, "a.png"), (back, "b.png")):
        assert cli.main(["sample", "--run", str(r), "--n", "3", "--sampler", "ddim", "--steps", "4",
                         "--out", str(tmp_path / out)]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "a.npz")["images"],
                                  np.load(tmp_path / "b.npz")["images"])
    assert cli.main(["import", "diffusers", str(folder), "--out", str(back)]) == 2  # not empty
    assert "import" in capsys.readouterr().err


def test_init_starts_from_another_runs_weights(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    src, tuned = tmp_path / "src", tmp_path / "tuned"
    common = ["--data", "digits", "--quiet", "--sample-n", "1"]
    assert cli.main(["train", "--preset", "tiny", "--steps", "2", "--out", str(src), *common]) == 0
    # lr 1e-12: one step leaves the weights where --init put them (to float32 rounding)
    assert cli.main(["train", "--preset", "tiny", "--steps", "1", "--lr", "1e-12", "--warmup", "0",
                     "--out", str(tuned), "--init", str(src), *common]) == 0
    model, ema = _weights(src / "model.safetensors"), _weights(src / "ema.safetensors")
    tuned_model, tuned_ema = _weights(tuned / "model.safetensors"), _weights(tuned / "ema.safetensors")
    decay = json.loads((tuned / "run.json").read_text())["train"]["ema_decay"]
    for k in model:  # the EMA started at the source's EMA and took one step towards the model
        np.testing.assert_allclose(tuned_model[k], model[k], rtol=0, atol=1e-6, err_msg=k)
        np.testing.assert_allclose(tuned_ema[k], decay * ema[k] + (1 - decay) * model[k],
                                   rtol=1e-5, atol=1e-6, err_msg=k)
    argv = ["train", "--preset", "digits", "--steps", "1", "--out", str(tmp_path / "x"),
            "--init", str(src), "--quiet"]
    assert cli.main(argv) == 2
    assert "its U-Net differs from this run's: ch is 16 there and 32 here" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--preset", "tiny", "--out", str(src), "--resume", "--init", str(src)])
    assert "cannot be combined with resume" in capsys.readouterr().err
