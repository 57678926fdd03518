"""A PyTorch training step reads nothing back from the device between log boundaries.

On CUDA a host read (``loss.item()``, a Python branch on a device value, ``.cpu()``) waits for
the device: one per step caps the GPU at the host's pace. The shared loop reads the window's
losses only at log boundaries (one synchronisation there, with the NaN guard); every step in
between must make none. ``HostReads`` sees every tensor call, so the CPU run proves it for
the code path CUDA runs: here the whole ``TorchTrainer.train_step`` of real training runs
(forward, loss, backward, gradient clipping, Adam, EMA), and the boundaries' reads counted
apart.
The
fused Adam (CUDA and CPU alike) keeps its step counts on the device; the foreach one reads
them back (two ``item`` calls per parameter tensor per step).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from host_reads import HostReads  # noqa: E402

from ddpm_core.app.run.options import TrainOptions  # noqa: E402
from ddpm_core.backends.torch import api  # noqa: E402
from ddpm_core.backends.torch.training import TorchTrainer  # noqa: E402

# Their ``.to(device)`` calls go to the training device, not to the host: clip_grad_norm_
# moves the per-tensor norms and the clip factor to the gradients' own device, the trainer
# uploads the host batch to ``self.device`` (any other host read there still counts).
TO_DEVICE = ("torch/nn/utils/clip_grad.py", "ddpm_core/backends/torch/training.py",
             "backends/torch/training.py")


def _counting(monkeypatch, name: str) -> list[dict[str, int]]:
    """Wrap ``TorchTrainer.<name>`` to record each call's host reads."""
    calls: list[dict[str, int]] = []
    inner = getattr(TorchTrainer, name)

    def counted(self, *args, **kwargs):  # noqa: ANN001, ANN202
        with HostReads(same_device_to=TO_DEVICE) as reads:
            out = inner(self, *args, **kwargs)
        calls.append(dict(reads.counts))
        return out

    monkeypatch.setattr(TorchTrainer, name, counted)
    return calls


@pytest.mark.parametrize("extra", [{}, {"timestep_sampler": "loss-second-moment"}, {"grad_clip": 0.5},
                                   {"loss": "hybrid", "variance": "learned_range"}],
                         ids=["paper", "importance", "clip", "hybrid-parts"])
def test_no_host_read_in_a_training_step(tmp_path, monkeypatch, extra):
    steps = _counting(monkeypatch, "train_step")
    flushes = _counting(monkeypatch, "read_metrics")
    api.train(TrainOptions(preset="tiny", out=str(tmp_path / "run"), steps=6, log_every=3,
                           ckpt_every=0, progress=False, sample_n=4, **extra))
    assert len(steps) == 6 and all(s == {} for s in steps), steps
    assert len(flushes) == 2 and all(f for f in flushes)  # the boundaries do read (the counter works)
