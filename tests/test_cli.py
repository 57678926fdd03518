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
    with pytest.raises(ValueError, match="backend must be one of torch, jax"):
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
