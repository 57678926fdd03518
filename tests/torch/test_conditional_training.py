"""Class-conditional training with PyTorch (tiny preset, CPU): labels, label dropout, resume."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from ddpm_core.app.run.options import TrainOptions  # noqa: E402
from ddpm_core.app.run.rundir import read_run_json  # noqa: E402
from ddpm_core.app.training import trainer  # noqa: E402
from ddpm_core.backends.torch import api  # noqa: E402


def options(tmp_path, name="run", **kw):
    base = dict(preset="tiny", out=str(tmp_path / name), steps=4, log_every=1, ckpt_every=0,
                progress=False, sample_n=1, class_conditional=True, seed=1)
    base.update(kw)
    return TrainOptions(**base)


def test_conditional_run_trains_and_records_its_classes(tmp_path):
    summary = api.train(options(tmp_path, label_dropout=0.2))
    info = read_run_json(tmp_path / "run")
    assert info["unet"]["num_classes"] == 10
    assert info["classes"] == {"num_classes": 10, "names": [str(k) for k in range(10)]}
    assert info["options"]["class_conditional"] is True and info["options"]["label_dropout"] == 0.2
    assert np.isfinite(summary["final_loss"]) and summary["steps"] == 4
    assert (tmp_path / "run" / "samples" / "step-000004.png").is_file()
    from ddpm_core.interop.convert import load_safetensors

    emb = load_safetensors(tmp_path / "run" / "model.safetensors")["label_emb.weight"]
    assert emb.shape == (11, 64)  # K + 1 rows: row K is the null label


def test_the_network_sees_the_host_batch_labels(tmp_path, monkeypatch):
    seen = []
    real = trainer.host_batch

    def spy(*args, **kwargs):
        batch = real(*args, **kwargs)
        seen.append(batch.labels)
        return batch

    calls = []
    from ddpm_core.backends.torch.unet import UNet

    forward = UNet.forward

    def spy_forward(self, x, t, y=None):
        calls.append(None if y is None else y.cpu().numpy())
        return forward(self, x, t, y)

    monkeypatch.setattr(trainer, "host_batch", spy)
    monkeypatch.setattr(UNet, "forward", spy_forward)
    api.train(options(tmp_path, steps=2, label_dropout=0.5, sample_n=1))
    np.testing.assert_array_equal(calls[0], seen[0])
    np.testing.assert_array_equal(calls[1], seen[1])
    assert (seen[0] == 10).any() and (seen[0] < 10).any()


def test_resume_with_label_dropout_is_exact(tmp_path):
    kw = dict(label_dropout=0.3, steps=5)
    api.train(options(tmp_path, "whole", **kw))
    api.train(options(tmp_path, "parts", **{**kw, "steps": 2}))
    api.train(TrainOptions(preset="tiny", out=str(tmp_path / "parts"), steps=5, resume=True,
                           progress=False))
    for name in ("model.safetensors", "ema.safetensors"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "parts" / name).read_bytes()
    assert read_run_json(tmp_path / "parts")["options"]["label_dropout"] == 0.3


def test_data_without_labels_is_a_clear_error(tmp_path):
    path = tmp_path / "plain.npz"
    np.savez(path, images=np.zeros((20, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match="--class-conditional needs labeled data: .*plain.npz: "
                                         "this dataset has no labels"):
        api.train(options(tmp_path, data=str(path)))
    assert not (tmp_path / "run").exists()
