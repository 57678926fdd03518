"""``ddpm train-classifier`` with PyTorch: the shared loop, exact resume, the run files."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from ddpm_core.app.cli import main  # noqa: E402
from ddpm_core.app.run.classifier_run import read_classifier_run  # noqa: E402
from ddpm_core.app.run.options import TrainOptions  # noqa: E402
from ddpm_core.backends.torch.classifier import Classifier  # noqa: E402
from ddpm_core.backends.torch.classifier_training import train_classifier  # noqa: E402
from ddpm_core.interop.convert import load_safetensors  # noqa: E402
from ddpm_core.models import classifier_config, parameter_shapes  # noqa: E402


def options(out, **kw):
    base = dict(preset="tiny", data="digits", out=str(out), steps=6, log_every=2,
                ckpt_every=0, progress=False, seed=4)
    return TrainOptions(**{**base, **kw})


def test_classifier_run_files_and_exact_resume(tmp_path):
    whole = train_classifier(options(tmp_path / "whole"))
    train_classifier(options(tmp_path / "parts", steps=2))
    train_classifier(TrainOptions(preset="tiny", out=str(tmp_path / "parts"), steps=6,
                                  resume=True, progress=False))
    for name in ("model.safetensors", "state-torch.safetensors"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "parts" / name).read_bytes()
    config, info = read_classifier_run(tmp_path / "whole")
    assert config == classifier_config("tiny", 10) and info["step"] == 6
    assert info["classes"]["names"] == [str(k) for k in range(10)] and info["data"] == "digits"
    assert set(info["files"]) == {"model.safetensors", "state-torch.safetensors"}
    weights = load_safetensors(tmp_path / "whole" / "model.safetensors")
    assert {k: v.shape for k, v in weights.items()} == parameter_shapes(config)
    Classifier(config).load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    assert np.isfinite(whole["final_loss"]) and whole["heldout_n"] == 180
    assert 0.0 <= whole["heldout_accuracy"] <= 1.0
    assert not (tmp_path / "whole" / "ema.safetensors").exists()
    assert len((tmp_path / "whole" / "log.csv").read_text().splitlines()) == 4


def test_classifier_resume_refuses_changes_and_cli_errors(tmp_path, capsys):
    train_classifier(options(tmp_path / "c", steps=1))
    with pytest.raises(ValueError, match="--lr cannot change on --resume"):
        train_classifier(options(tmp_path / "c", steps=2, resume=True, lr=0.5))
    with pytest.raises(FileExistsError, match="already holds a run"):
        train_classifier(options(tmp_path / "c", steps=2))
    assert main(["train-classifier", "--data", str(tmp_path), "--out", str(tmp_path / "d")]) == 2
    assert "--preset is required" in capsys.readouterr().err
    plain = tmp_path / "plain.npz"
    np.savez(plain, images=np.zeros((20, 8, 8, 1), np.uint8))
    assert main(["train-classifier", "--data", str(plain), "--preset", "tiny", "--out",
                 str(tmp_path / "e"), "--quiet"]) == 2
    assert "this dataset has no labels" in capsys.readouterr().err
