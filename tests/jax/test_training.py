"""The JAX training loop on the tiny preset (CPU, float32): loss falls, exact resume, NaN guard."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")
pytest.importorskip("sklearn")

from ddpm_core.app.run.options import TrainOptions  # noqa: E402
from ddpm_core.app.run.rundir import read_run_json  # noqa: E402
from ddpm_core.backends.jax import api, checkpoint, training  # noqa: E402
from ddpm_core.backends.jax.training import NonFiniteLossError  # noqa: E402

STEPS = 24


def options(out, **kw):
    base = dict(preset="tiny", out=str(out), backend="jax", steps=STEPS, log_every=4,
                ckpt_every=0, progress=False, sample_n=4)
    base.update(kw)
    return TrainOptions(**base)


def _state(run_dir):
    from ddpm_core.interop.convert import load_safetensors

    return load_safetensors(checkpoint.state_path(run_dir))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """STEPS steps in one go (the reference for the resume test)."""
    out = tmp_path_factory.mktemp("jax") / "full"
    summary = api.train(options(out))
    return out, summary


def test_loss_falls_and_files_written(full_run):
    out, summary = full_run
    assert summary["steps"] == STEPS and summary["steps_run"] == STEPS
    assert summary["images_per_s"] > 0 and np.isfinite(summary["final_loss"])
    rows = (out / "log.csv").read_text().splitlines()
    losses = [float(r.split(",")[1]) for r in rows[1:]]
    assert len(losses) == STEPS // 4
    assert losses[-1] < 0.7 * losses[0], losses
    info = read_run_json(out)
    assert info["backend"] == "jax" and info["step"] == STEPS
    for name in ("model.safetensors", "ema.safetensors", "state-jax.safetensors",
                 f"samples/step-{STEPS:06d}.png"):
        assert (out / name).is_file(), name


def test_exact_resume(full_run, tmp_path):
    out, _ = full_run
    k = STEPS // 2
    first = api.train(options(tmp_path / "r", steps=k))
    assert first["steps"] == k
    second = api.train(options(tmp_path / "r", steps=STEPS, resume=True))
    assert second["steps"] == STEPS and second["steps_run"] == STEPS - k
    a, b = _state(out), _state(tmp_path / "r")
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    rows = (tmp_path / "r" / "log.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(4, STEPS + 1, 4))


def test_refuses_existing_run_without_resume(full_run):
    out, _ = full_run
    with pytest.raises(FileExistsError, match="--resume"):
        api.train(options(out))


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="run.json"):
        api.train(options(tmp_path / "none", resume=True))


def test_nan_guard_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = training.device_batch
    calls = {"n": 0}

    def poisoned(batch, sharding):
        calls["n"] += 1  # call n is step n - 1
        x0, t, w = real(batch, sharding)
        return (x0 * np.nan if calls["n"] >= 7 else x0), t, w

    monkeypatch.setattr(training, "device_batch", poisoned)
    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match=r"step 7.*\(step 4\)"):
        api.train(options(out, ckpt_every=4, log_every=4, steps=12))
    info = read_run_json(out)
    assert info["step"] == 4
    state = _state(out)
    assert all(np.isfinite(v).all() for k, v in state.items() if v.dtype.kind == "f")


def test_rejects_other_backend_and_bad_batch(tmp_path):
    with pytest.raises(ValueError, match="backend must be 'jax'"):
        training.train(options(tmp_path / "x", backend="torch"))
    with pytest.raises(ValueError, match="device must be one of"):
        training.pick_devices("quantum")


def test_warmup_matches_torch_rule():
    from ddpm_core.models import get_preset

    tc = get_preset("tiny").train  # lr 1e-3, warm-up 10
    tx = training.make_optimizer(tc)
    assert training.lr_at(tc, 0) == pytest.approx(1e-4)
    assert training.lr_at(tc, 9) == pytest.approx(1e-3)
    params = {"w": jax.numpy.ones(3)}
    state = tx.init(params)
    grads = {"w": jax.numpy.full(3, 0.5)}
    upd, _ = tx.update(grads, state, params)
    # Adam's first step is -lr * sign(g) (up to eps): lr / warmup at step 0.
    np.testing.assert_allclose(np.asarray(upd["w"]), -1e-4, rtol=1e-5)


def test_loss_second_moment_sampler_state_is_checkpointed(tmp_path):
    out = tmp_path / "lsm"
    api.train(options(out, steps=3, timestep_sampler="loss-second-moment"))
    state = _state(out)
    counts = state["tsampler/counts"]
    assert counts.shape == (1000,) and 0 < counts.sum() <= 3 * 16
    api.train(options(out, steps=4, timestep_sampler="loss-second-moment", resume=True))
    assert _state(out)["tsampler/counts"].sum() > counts.sum()


def test_init_starts_from_another_runs_weights(full_run, tmp_path):
    """--init: the JAX backend starts from a run's canonical weights (lr 1e-12: they stay)."""
    from ddpm_core.interop.convert import load_safetensors

    src, _ = full_run
    out = tmp_path / "tuned"
    api.train(options(out, steps=1, lr=1e-12, warmup=0, init=str(src)))
    a, b = load_safetensors(src / "model.safetensors"), load_safetensors(out / "model.safetensors")
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=1e-6, err_msg=k)
    with pytest.raises(ValueError, match="its U-Net differs from this run's"):
        api.train(options(tmp_path / "x", preset="digits", steps=1, init=str(src)))


def test_a_run_trained_with_the_bound_logs_its_loss_parts(tmp_path):
    """Hybrid only (PyTorch's tests take vlb too): each loss compiles its own step."""
    from loss_parts import check_loss_parts

    out = tmp_path / "hybrid"
    api.train(options(out, steps=4, log_every=2, loss="hybrid", variance="learned_range"))
    parts = check_loss_parts(out, "hybrid")
    assert parts["loss_vlb"].shape == (2,)


def test_a_plain_run_logs_no_loss_parts(full_run):
    from loss_parts import check_loss_parts

    check_loss_parts(full_run[0], "simple")
