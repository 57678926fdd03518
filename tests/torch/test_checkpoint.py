"""Checkpoints: safetensors only, atomic, exact resume, SIGKILL while writing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from safetensors.torch import load_file  # noqa: E402

from ddpm_core.app.run.options import TrainOptions  # noqa: E402
from ddpm_core.app.run.rundir import read_run_json  # noqa: E402
from ddpm_core.backends.torch import api, checkpoint  # noqa: E402

# every source of randomness on: dropout, flips, importance-sampled t, a learned variance
RANDOM = dict(preset="tiny", log_every=1, progress=False, sample_n=2, dropout=0.1,
              random_flip=True, timestep_sampler="loss-second-moment", loss="hybrid",
              variance="learned_range", batch_size=8, warmup=2)


def _state(run):
    return load_file(str(checkpoint.state_path(run)))


def _assert_same_state(a, b):
    a, b = _state(a), _state(b)
    assert a.keys() == b.keys()
    for k in a:
        if k != "rng/torch":
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_resume_continues_exactly(tmp_path):
    steps = 6
    api.train(TrainOptions(out=str(tmp_path / "full"), steps=steps, **RANDOM))
    api.train(TrainOptions(out=str(tmp_path / "part"), steps=2, **RANDOM))
    api.train(TrainOptions(out=str(tmp_path / "part"), steps=steps, resume=True, **RANDOM))
    _assert_same_state(tmp_path / "full", tmp_path / "part")
    for name in ("model.safetensors", "ema.safetensors"):
        for k, v in load_file(str(tmp_path / "full" / name)).items():
            torch.testing.assert_close(load_file(str(tmp_path / "part" / name))[k], v,
                                       rtol=0, atol=0)
    log = (tmp_path / "part" / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in log[1:]] == [str(s) for s in range(1, steps + 1)]


def test_weights_are_safetensors_in_state_dict_naming(tmp_path):
    api.train(TrainOptions(preset="tiny", out=str(tmp_path / "r"), steps=1, progress=False,
                           sample_n=2))
    from ddpm_core.models import get_preset, parameter_shapes

    weights = checkpoint.load_weights(tmp_path / "r" / "ema.safetensors")
    shapes = parameter_shapes(get_preset("tiny").unet)
    assert {k: tuple(v.shape) for k, v in weights.items()} == shapes
    state = _state(tmp_path / "r")
    assert state["rng/torch"].dtype == torch.uint8
    assert any(k.startswith("opt/") for k in state)
    with open(checkpoint.state_path(tmp_path / "r"), "rb") as f:
        assert b"\x80\x04\x95" not in f.read(64)  # not a pickle


def test_corrupt_files_fail_naming_the_file(tmp_path):
    api.train(TrainOptions(preset="tiny", out=str(tmp_path / "r"), steps=1, progress=False,
                           sample_n=2))
    path = checkpoint.state_path(tmp_path / "r")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="state-torch.safetensors"):
        api.train(TrainOptions(preset="tiny", out=str(tmp_path / "r"), steps=2, resume=True,
                               progress=False))
    (tmp_path / "r" / "ema.safetensors").write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"ema\.safetensors: not a readable safetensors"):
        api.sample(tmp_path / "r", n=1, sampler="ddim", steps=2)


_CHILD = """
import sys, torch
torch.set_num_threads(1)
from ddpm_core.app.run.options import TrainOptions
from ddpm_core.backends.torch import api
opts = dict({opts!r})
api.train(TrainOptions(out=sys.argv[1], steps=int(sys.argv[2]), ckpt_every=1, **opts))
"""


def test_sigkill_while_checkpointing_then_resume(tmp_path):
    """Kill a run that writes a checkpoint every step; resuming loses nothing but steps
    since the last checkpoint and ends with the uninterrupted run's exact weights."""
    steps = 14
    opts = {**RANDOM, "sample_n": 1}
    run = tmp_path / "killed"
    child = subprocess.Popen([sys.executable, "-c", _CHILD.format(opts=opts), str(run),
                              str(steps)], cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        try:
            if read_run_json(run)["step"] >= 3:
                break
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.02)
    assert child.poll() is None, child.stderr.read().decode()
    time.sleep(float(np.random.default_rng().uniform(0.0, 0.2)))  # mid-write, often
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stderr.close()
    killed_at = read_run_json(run)["step"]
    assert 3 <= killed_at < steps
    summary = api.train(TrainOptions(out=str(run), steps=steps, ckpt_every=1, resume=True,
                                     **opts))
    assert summary["steps_run"] <= steps - killed_at + 1
    assert not list(run.glob(".*.tmp"))
    api.train(TrainOptions(out=str(tmp_path / "clean"), steps=steps, ckpt_every=1, **opts))
    _assert_same_state(run, tmp_path / "clean")
