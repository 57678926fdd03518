"""The training set held on the device gives the host path's steps exactly.

On CUDA the PyTorch trainer keeps the whole training set on the device
(``TorchTrainer.hold_data``, CIFAR-10 is 150 MB of uint8) and gathers each step's rows and
flips there from the same ``(seed, step)`` streams the host path uses, so only the indices
(b int64) and flips (b bool) cross the bus. Forced on here, on the CPU, both paths must
train bit-identical weights: with flips, with labels and label dropout.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from ddpm_core.app.run.options import TrainOptions  # noqa: E402
from ddpm_core.app.training.batches import host_batch  # noqa: E402
from ddpm_core.backends.torch import api, checkpoint  # noqa: E402
from ddpm_core.backends.torch.training import TorchTrainer  # noqa: E402


def _weights(tmp_path, monkeypatch, held: bool, **kw) -> dict[str, torch.Tensor]:
    monkeypatch.setattr(TorchTrainer, "device_data", held)
    seen = []
    inner = TorchTrainer._inputs
    monkeypatch.setattr(TorchTrainer, "_inputs",
                        lambda self, step, batch: seen.append(batch.images is None) or inner(self, step, batch))
    out = tmp_path / f"run-{held}"
    api.train(TrainOptions(preset="tiny", out=str(out), steps=4, log_every=2, ckpt_every=0,
                           progress=False, sample_n=4, random_flip=True, **kw))
    assert seen == [held] * 4  # the path asked for is the one that ran
    return checkpoint.load_weights(out / "model.safetensors")


@pytest.mark.parametrize("kw", [{}, {"class_conditional": True, "label_dropout": 0.5}],
                         ids=["unconditional", "labels"])
def test_held_data_trains_the_host_paths_weights(tmp_path, monkeypatch, kw):
    host = _weights(tmp_path, monkeypatch, False, **kw)
    held = _weights(tmp_path, monkeypatch, True, **kw)
    assert host.keys() == held.keys()
    for name in host:
        assert torch.equal(host[name], held[name]), name


def test_the_trainer_gathers_the_host_batchs_images():
    class Train:
        batch_size, num_timesteps, random_flip = 6, 10, True

    data = np.random.default_rng(0).integers(0, 256, (20, 5, 4, 3), dtype=np.uint8)
    host = host_batch(data, 3, 7, Train, None)
    bare = host_batch(data, 3, 7, Train, None, gather=False)
    assert bare.images is None and bare.flips.any() and not bare.flips.all()
    trainer = TorchTrainer.__new__(TorchTrainer)
    trainer.device, trainer.cuda, trainer.device_data = torch.device("cpu"), False, True
    assert trainer.hold_data(data)
    got = trainer._images(bare).numpy()
    np.testing.assert_array_equal(got, host.images.transpose(0, 3, 1, 2))
