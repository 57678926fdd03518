"""The PyTorch training loop on the tiny preset (CPU, float32)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import ddpm_core  # noqa: E402
from ddpm_core.app.run.options import TrainOptions  # noqa: E402
from ddpm_core.app.run.rundir import read_run_json  # noqa: E402
from ddpm_core.backends.torch import api, checkpoint  # noqa: E402
from ddpm_core.backends.torch.training import NonFiniteLossError  # noqa: E402
from ddpm_core.backends.torch.unet import UNet  # noqa: E402


def options(tmp_path, **kw):
    base = dict(preset="tiny", out=str(tmp_path / "run"), steps=4, log_every=1, ckpt_every=0,
                progress=False, sample_n=4)
    base.update(kw)
    return TrainOptions(**base)


def test_loss_falls(tmp_path):
    summary = api.train(options(tmp_path, steps=60, log_every=10))
    losses = [float(r["loss"]) for r in _rows(tmp_path / "run" / "log.csv")]
    assert len(losses) == 6
    assert np.mean(losses[-2:]) < 0.7 * losses[0], losses
    assert summary["steps"] == 60 and summary["images_per_s"] > 0
    assert np.isfinite(summary["final_loss"])
    run = tmp_path / "run"
    assert (run / "samples" / "step-000060.png").is_file()
    assert read_run_json(run)["step"] == 60


def _rows(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_overfits_one_batch():
    """Fixed x_0, t and eps: Algorithm 1's regression drives L_simple towards zero."""
    from ddpm_core.models import get_preset

    torch.manual_seed(0)
    net = UNet(get_preset("tiny").unet)
    sched = ddpm_core.Schedule.linear(1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(8, 1, 8, 8, generator=g) * 2 - 1
    noise = torch.randn(8, 1, 8, 8, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    x_t = ddpm_core.q_sample(sched, x0, t, noise)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    first = None
    for _ in range(150):
        loss = ddpm_core.training_losses(sched, net(x_t, t), x0, x_t, t, noise).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert loss.item() < 0.05 * first, (first, loss.item())


def test_nan_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    real = ddpm_core.training_loss_terms
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out._replace(loss=out.loss * float("nan")) if calls["n"] >= 6 else out

    monkeypatch.setattr(ddpm_core, "training_loss_terms", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 6.*checkpoint \(step 4\)"):
        api.train(options(tmp_path, steps=10, ckpt_every=2))
    run = tmp_path / "run"
    assert read_run_json(run)["step"] == 4
    weights = checkpoint.load_weights(run / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())
    monkeypatch.setattr(ddpm_core, "training_loss_terms", real)
    summary = api.train(options(tmp_path, steps=6, ckpt_every=2, resume=True))
    assert summary["steps"] == 6 and np.isfinite(summary["final_loss"])


def test_existing_run_needs_resume(tmp_path):
    api.train(options(tmp_path, steps=1))
    with pytest.raises(FileExistsError, match="pass --resume"):
        api.train(options(tmp_path, steps=2))
    with pytest.raises(ValueError, match="cannot resume it with preset 'digits'"):
        api.train(options(tmp_path, preset="digits", steps=2, resume=True))
    with pytest.raises(FileNotFoundError, match="run.json"):
        api.train(options(tmp_path, out=str(tmp_path / "none"), resume=True))


def test_data_that_does_not_fit_the_preset(tmp_path):
    np.savez(tmp_path / "big.npz", images=np.zeros((4, 16, 16, 1), np.uint8))
    with pytest.raises(ValueError, match=r"big\.npz: images of shape \(16, 16, 1\).*\(8, 8, 1\)"):
        api.train(options(tmp_path, data=str(tmp_path / "big.npz")))


def test_learned_variance_and_importance_sampling_train(tmp_path):
    summary = api.train(options(tmp_path, steps=3, loss="hybrid", variance="learned_range",
                                timestep_sampler="loss-second-moment", dropout=0.1,
                                random_flip=True))
    assert np.isfinite(summary["final_loss"])
    info = read_run_json(tmp_path / "run")
    assert info["variance"] == "learned_range" and info["unet"]["out_channels"] == 2


def test_schedule_weighting_and_width_reach_the_step_and_run_json(tmp_path, monkeypatch, capsys):
    from ddpm_core.app.cli import main
    from ddpm_core.app.run.rundir import make_schedule
    from ddpm_core.app.training.batches import loss_weight_table
    from ddpm_core.backends.torch.training import TorchTrainer
    from ddpm_core.models import TrainConfig

    seen = []
    step = TorchTrainer.train_step
    monkeypatch.setattr(TorchTrainer, "train_step",
                        lambda self, i, batch: seen.append(batch) or step(self, i, batch))
    run = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--out", str(run), "--steps", "2", "--quiet",
            "--schedule", "cosine", "--loss-weighting", "min-snr", "--min-snr-gamma", "2",
            "--ch", "32", "--num-res-blocks", "2", "--sample-n", "1"]
    assert main(argv) == 0
    info = read_run_json(run)
    assert (info["train"]["schedule"], info["schedule"]["name"]) == ("cosine", "cosine")
    assert (info["train"]["weighting"], info["train"]["min_snr_gamma"]) == ("min_snr", 2.0)
    assert (info["unet"]["ch"], info["unet"]["num_res_blocks"]) == (32, 2)
    table = loss_weight_table(make_schedule(info["schedule"]), TrainConfig.from_dict(info["train"]))
    assert len(seen) == 2 and table.min() < 0.01
    for batch in seen:
        np.testing.assert_array_equal(batch.weights, table[batch.t].astype(np.float32))
    assert main([*argv[:5], "--steps", "3", "--resume", "--ch", "16"]) == 2
    assert "--ch cannot change on --resume: the run has 32, got 16" in capsys.readouterr().err
    assert main([*argv[:5], "--steps", "3", "--resume", "--quiet"]) == 0  # stored options
    assert read_run_json(run)["step"] == 3
