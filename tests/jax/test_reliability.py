"""Reliability of a JAX run directory on the tiny preset (issue 12): the shared loop's
clean-up of stale temporaries, the hashes and the resumed options hold for JAX too."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("jax")

from ddpm_core.app import cli  # noqa: E402
from ddpm_core.app.run.options import TrainOptions  # noqa: E402
from ddpm_core.backends.jax import api  # noqa: E402


def test_jax_run_hashes_stale_temporaries_and_resume(tmp_path):
    out = tmp_path / "run"
    train = ["train", "--backend", "jax", "--preset", "tiny", "--data", "digits", "--quiet",
             "--sample-n", "1", "--seed", "2", "--out", str(out)]
    assert cli.main([*train, "--steps", "1"]) == 0
    info = json.loads((out / "run.json").read_text())
    assert set(info["files"]) == {"state-jax.safetensors", "model.safetensors",
                                  "ema.safetensors"}
    stale = out / ".state-jax.safetensors.0123abcd.tmp"  # as a write killed mid-way leaves
    stale.write_bytes(b"\0" * 1024)
    with pytest.raises(ValueError, match="--seed cannot change on --resume"):
        api.train(TrainOptions(preset="tiny", out=str(out), backend="jax", resume=True,
                               steps=2, seed=0))
    assert cli.main(["train", "--out", str(out), "--preset", "tiny", "--resume", "--steps",
                     "2", "--quiet"]) == 0  # --backend and --seed come from run.json
    assert not stale.exists()
    assert json.loads((out / "run.json").read_text())["seed"] == 2
    (out / "ema.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="ema.safetensors: changed since run.json was written"):
        api.load_run(out)
