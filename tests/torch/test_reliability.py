"""Reliability of a PyTorch run directory end to end on the tiny preset (issue 12)."""

from __future__ import annotations

import errno
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")

from ddpm_core.app import cli  # noqa: E402
from ddpm_core.app.run.options import TrainOptions  # noqa: E402
from ddpm_core.backends.torch import api  # noqa: E402
from ddpm_core.backends.torch import checkpoint as ckpt  # noqa: E402

TRAIN = ["train", "--backend", "torch", "--preset", "tiny", "--data", "digits", "--quiet",
         "--sample-n", "1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 4-step run, checkpoints at 2 and 4, seed 5."""
    out = tmp_path_factory.mktemp("rel") / "run"
    assert cli.main([*TRAIN, "--steps", "4", "--seed", "5", "--ckpt-every", "2",
                     "--log-every", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture
def copy(run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run, dst)
    return dst


def test_run_json_records_options_and_hashes(run):
    info = json.loads((run / "run.json").read_text())
    assert info["format"] == 2 and info["seed"] == 5 and "pending" not in info
    assert info["options"]["ckpt_every"] == 2
    assert set(info["files"]) == {"state-torch.safetensors", "model.safetensors",
                                  "ema.safetensors"}


def test_resume_continues_with_the_stored_seed(copy, capsys):
    assert cli.main([*TRAIN, "--steps", "6", "--out", str(copy), "--resume"]) == 0
    info = json.loads((copy / "run.json").read_text())
    assert (info["seed"], info["step"], info["train"]["num_steps"]) == (5, 6, 6)
    assert cli.main([*TRAIN, "--steps", "8", "--seed", "0", "--out", str(copy),
                     "--resume"]) == 2
    assert cli.main([*TRAIN, "--steps", "3", "--out", str(copy), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "--seed cannot change on --resume: the run has 5, got 0" in err
    assert "--steps 3 is below the run's current step 6" in err
    assert json.loads((copy / "run.json").read_text())["step"] == 6  # nothing written


def test_library_resume_refuses_conflicts(copy):
    with pytest.raises(ValueError, match="--lr cannot change on --resume"):
        api.train(TrainOptions(preset="tiny", out=str(copy), resume=True, steps=6, lr=0.5))


def test_sampling_refuses_changed_and_non_finite_weights(copy, tmp_path, capsys):
    ema = copy / "ema.safetensors"
    w = ckpt.load_weights(ema)
    name = sorted(w)[0]
    w[name][...] = float("nan")
    ckpt.save_weights(ema, w)
    out = str(tmp_path / "s.png")
    assert cli.main(["sample", "--run", str(copy), "--n", "1", "--steps", "2", "--out", out]) == 2
    assert "ema.safetensors: changed since run.json was written" in capsys.readouterr().err
    info = json.loads((copy / "run.json").read_text())
    del info["files"]  # as a format-1 run.json would: no hash, but the NaN is still found
    (copy / "run.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=f"ema.safetensors: tensor '{name}' has"):
        api.sample(copy, n=1, steps=2)


def test_resume_refuses_another_runs_state(copy, tmp_path):
    other = tmp_path / "other"
    assert cli.main([*TRAIN, "--steps", "2", "--seed", "5", "--out", str(other)]) == 0
    shutil.copy(other / "state-torch.safetensors", copy / "state-torch.safetensors")
    with pytest.raises(ValueError, match="state-torch.safetensors: changed since run.json"):
        api.train(TrainOptions(preset="tiny", out=str(copy), resume=True, steps=6))


def test_outputs_never_replace_run_files(run, capsys):
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for out in ("ema.safetensors", "run.json", "samples/step-000004.png", "samples"):
        assert cli.main(["sample", "--run", str(run), "--n", "1", "--out", str(run / out)]) == 2
    assert cli.main(["eval", "rate-distortion", "--run", str(run), "--out",
                     str(run / "log")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 5 and all(line.startswith("ddpm ") for line in err)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_train_out_file_and_cuda_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    assert cli.main([*TRAIN, "--steps", "1", "--out", str(tmp_path / "f")]) == 2
    import torch

    if not torch.cuda.is_available():
        assert cli.main([*TRAIN, "--steps", "1", "--device", "cuda",
                         "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "is a file, not a run directory" in err[0]
    assert all("Traceback" not in line for line in err)
    if not torch.cuda.is_available():
        assert "cuda" in err[1] and "choose another --device" in err[1]


def test_full_disk_keeps_the_previous_checkpoint(copy, monkeypatch, capsys):
    import ddpm_core.app.run.atomic as atomic

    before = (copy / "state-torch.safetensors").read_bytes()
    real_replace = atomic.os.replace

    def full(src, dst):
        if str(dst).endswith("state-torch.safetensors"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full)
    assert cli.main([*TRAIN, "--steps", "5", "--out", str(copy), "--resume"]) == 1
    assert "no space left on the device" in capsys.readouterr().err
    monkeypatch.undo()
    assert (copy / "state-torch.safetensors").read_bytes() == before
    assert not list(copy.glob(".*.tmp"))
    assert api.sample(copy, n=1, steps=2).shape == (1, 8, 8, 1)  # still readable, hashes match


def test_nan_guard_says_no_checkpoint_exists(tmp_path, monkeypatch):
    from ddpm_core.backends.torch.training import NonFiniteLossError, TorchTrainer

    real = TorchTrainer.read_metrics
    monkeypatch.setattr(TorchTrainer, "read_metrics",
                        lambda self, h: (*(np.full_like(a, np.nan) for a in real(self, h)[:2]), {}))
    with pytest.raises(NonFiniteLossError, match="No checkpoint was written yet"):
        api.train(TrainOptions(preset="tiny", out=str(tmp_path / "n"), steps=2, log_every=1,
                               data="digits", progress=False))
