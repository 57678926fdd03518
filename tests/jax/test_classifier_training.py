"""``ddpm train-classifier`` with JAX: a few steps on digits through the shared loop."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")
pytest.importorskip("sklearn")

from ddpm_core.app.run.classifier_run import read_classifier_run  # noqa: E402
from ddpm_core.app.run.options import TrainOptions  # noqa: E402
from ddpm_core.backends.jax.classifier_training import train_classifier  # noqa: E402
from ddpm_core.interop.convert import load_safetensors  # noqa: E402
from ddpm_core.models import classifier_config, parameter_shapes  # noqa: E402


def test_jax_classifier_trains_and_writes_a_classifier_run(tmp_path):
    s = train_classifier(TrainOptions(preset="tiny", data="digits", out=str(tmp_path),
                                      backend="jax", steps=4, log_every=2, ckpt_every=0,
                                      progress=False))
    assert s["steps"] == 4 and np.isfinite(s["final_loss"]) and s["heldout_n"] == 180
    config, info = read_classifier_run(tmp_path)
    assert config == classifier_config("tiny", 10) and info["backend"] == "jax"
    weights = load_safetensors(tmp_path / "model.safetensors")
    assert {k: v.shape for k, v in weights.items()} == parameter_shapes(config)
    assert set(info["files"]) == {"model.safetensors", "state-jax.safetensors"}
