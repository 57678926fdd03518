"""Class-conditional training with JAX (tiny preset, CPU): the labels reach the jitted step."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")
pytest.importorskip("sklearn")

from ddpm_core.app.run.options import TrainOptions  # noqa: E402
from ddpm_core.app.run.rundir import read_run_json  # noqa: E402
from ddpm_core.backends.jax import api  # noqa: E402
from ddpm_core.interop.convert import load_safetensors  # noqa: E402


def test_conditional_run_trains_and_the_labels_matter(tmp_path):
    kw = dict(preset="tiny", backend="jax", steps=3, log_every=1, ckpt_every=0, progress=False,
              sample_n=2, class_conditional=True, seed=2)
    summary = api.train(TrainOptions(out=str(tmp_path / "a"), label_dropout=0.5, **kw))
    assert np.isfinite(summary["final_loss"]) and summary["steps"] == 3
    info = read_run_json(tmp_path / "a")
    assert info["unet"]["num_classes"] == 10 and info["classes"]["num_classes"] == 10
    a = load_safetensors(tmp_path / "a" / "model.safetensors")
    assert a["label_emb.weight"].shape == (11, 64)
    # another dropout rate changes only which rows of the label table are trained
    api.train(TrainOptions(out=str(tmp_path / "b"), label_dropout=0.0, **kw))
    b = load_safetensors(tmp_path / "b" / "model.safetensors")
    assert not np.array_equal(a["label_emb.weight"][10], b["label_emb.weight"][10])
    assert (tmp_path / "a" / "samples" / "step-000003.png").is_file()
