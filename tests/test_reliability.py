"""Reliability of the run directory without a framework: the run.json schema, resumed
options, output paths, the run lock and the file hashes (issue 12)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from ddpm_core.app.run import integrity, outputs, rundir
from ddpm_core.app.run.lock import RunLockedError, run_lock
from ddpm_core.app.run.options import TrainOptions
from ddpm_core.app.run.resume import resume_options
from ddpm_core.models import get_preset


def _info(**changes):
    preset = get_preset("tiny")
    info = {"format": 2, "backend": "torch", "preset": "tiny",
            "unet": json.loads(json.dumps(rundir.plain_json(preset.unet))),
            "train": rundir.plain_json(preset.train), "schedule": rundir.schedule_dict(preset.train),
            "prediction": preset.train.prediction, "variance": preset.train.variance,
            "data": "digits", "step": 20, "seed": 5, "timestep_sampler": "uniform",
            "options": {"log_every": 5, "ckpt_every": 10, "sample_every": 0, "sample_n": 4,
                        "device": "auto", "compile": False, "progress": True}}
    info["train"]["num_steps"] = 40
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            info[section][field] = value
        else:
            info[section] = value
    return info


# --------------------------------------------------------------------------- schema (12.6)

@pytest.mark.parametrize(("changes", "words"), [
    ({"unet": "abc"}, "field 'unet' is 'abc'; allowed: a JSON object"),
    ({"backend": "tensorflow"}, "field 'backend' is 'tensorflow'; allowed: one of 'torch', 'jax'"),
    ({"unet__ch_mult": 2}, "field 'unet.ch_mult' is 2; allowed: a list of integers >= 1"),
    ({"unet__colour": 1}, "field 'unet.colour' is 1; allowed: keys image_size"),
    ({"unet__dropout": "0.1"}, "field 'unet.dropout' is '0.1'"),
    ({"schedule": None}, "field 'schedule' is None; allowed: a JSON object"),
    ({"schedule__num_timesteps": 10.7}, "field 'schedule.num_timesteps' is 10.7; allowed: an "
                                        "integer >= 1"),
    ({"schedule__name": "cubic"}, "field 'schedule.name' is 'cubic'; allowed: one of 'linear'"),
    ({"schedule__beta_end": float("nan")}, "field 'schedule.beta_end' is nan"),
    ({"train__batch_size": True}, "field 'train.batch_size' is True"),
    ({"train__random_flip": 1}, "field 'train.random_flip' is 1; allowed: one of True, False"),
    ({"prediction": "x0"}, "field 'prediction' is 'x0' but 'train.prediction' is 'eps'"),
    ({"schedule__num_timesteps": 500}, "'schedule.num_timesteps' is 500 but "
                                       "'train.num_timesteps' is 1000"),
    ({"step": -1}, "field 'step' is -1; allowed: an integer >= 0"),
    ({"step": "5"}, "field 'step' is '5'"),
    ({"seed": 1.5}, "field 'seed' is 1.5"),
    ({"format": 3}, "field 'format' is 3; allowed: one of 1, 2"),
    ({"files": {"ema.safetensors": "abc"}}, "field 'files.ema.safetensors' is 'abc'"),
    ({"options__device": "quantum"}, "field 'options.device' is 'quantum'"),
    ({"data": 7}, "field 'data' is 7; allowed: a string"),
])
def test_run_json_schema_names_file_field_and_allowed_values(tmp_path, changes, words):
    (tmp_path / "run.json").write_text(json.dumps(_info(**changes)))
    with pytest.raises(ValueError, match="run.json: ") as e:
        rundir.read_run_json(tmp_path)
    assert words in str(e.value)


def test_format_1_run_json_is_still_read(tmp_path):
    info = _info(format=1)
    del info["options"]
    (tmp_path / "run.json").write_text(json.dumps(info))
    assert rundir.read_run_json(tmp_path)["step"] == 20


# --------------------------------------------------------------------------- resume (12.1)

def test_resume_takes_every_unset_option_from_run_json():
    o = resume_options(TrainOptions(preset="tiny", out="r", resume=True), _info())
    assert (o.seed, o.data, o.steps, o.ckpt_every, o.log_every, o.sample_n) == \
        (5, "digits", 40, 10, 5, 4)
    assert o.lr == get_preset("tiny").train.lr and o.random_flip is False


def test_resume_accepts_safe_changes_and_equal_values():
    o = resume_options(TrainOptions(preset="tiny", out="r", resume=True, steps=60, seed=5,
                                    ckpt_every=3, device="cpu", data="digits"), _info())
    assert (o.steps, o.ckpt_every, o.device, o.seed) == (60, 3, "cpu", 5)


@pytest.mark.parametrize(("given", "words"), [
    ({"seed": 0}, "--seed cannot change on --resume: the run has 5, got 0"),
    ({"lr": 0.5}, "--lr cannot change on --resume: the run has 0.001, got 0.5"),
    ({"batch_size": 3}, "--batch-size cannot change"),
    ({"data": "mnist"}, "--data cannot change on --resume: the run has 'digits', got 'mnist'"),
    ({"preset": "mnist"}, "--preset cannot change"),
    ({"backend": "jax"}, "--backend cannot change"),
    ({"random_flip": True}, "--flip cannot change"),
    ({"schedule": "cosine"}, "--schedule cannot change on --resume: the run has 'linear'"),
    ({"weighting": "min_snr"}, "--loss-weighting cannot change on --resume: the run has 'none'"),
    ({"min_snr_gamma": 1.0}, "--min-snr-gamma cannot change"),
    ({"ch": 32}, "--ch cannot change on --resume: the run has 16, got 32"),
    ({"num_res_blocks": 2}, "--num-res-blocks cannot change"),
    ({"timestep_sampler": "loss-second-moment"}, "--timestep-sampler cannot change"),
    ({"variance": "fixed_large"}, "--variance cannot change"),
    ({"dropout": 0.3}, "--dropout cannot change"),
    ({"steps": 19}, "--steps 19 is below the run's current step 20"),
])
def test_resume_refuses_changed_options(given, words):
    options = TrainOptions(**{"preset": "tiny", "out": "r", "resume": True, **given})
    with pytest.raises(ValueError, match="run.json: ") as e:
        resume_options(options, _info())
    assert words in str(e.value)


# --------------------------------------------------------------------------- outputs (12.3, 12.5)

@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps(_info()))
    return run


@pytest.mark.parametrize(("out", "error", "words"), [
    ("run/ema.safetensors", ValueError, "must end in .png"),
    ("run/samples.png", None, None),
    ("run/samples/step-000010.png", ValueError, "would replace a file of the run"),
    ("run/grid.npz.png", None, None),
    ("run", ValueError, "must end in .png"),
    ("dir.png", ValueError, "is a directory"),
    ("missing/grid.png", FileNotFoundError, "the folder"),
    ("grid", ValueError, "got 'no extension'"),
])
def test_check_output_grid(tmp_path, run_dir, out, error, words):
    (tmp_path / "dir.png").mkdir()
    path = tmp_path / out
    if error is None:
        assert outputs.check_output(path, "grid") == [path, path.with_suffix(".npz")]
        return
    with pytest.raises(error, match=words):
        outputs.check_output(path, "grid")


def test_check_output_prefix_protects_the_log(run_dir):
    with pytest.raises(ValueError, match=r"log\.csv: would replace a file of the run"):
        outputs.check_output(run_dir / "log", "prefix")
    with pytest.raises(ValueError, match=r"run\.json.*must end in \.png"):
        outputs.check_output(run_dir / "run.json", "grid")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_check_output_read_only_folder(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(PermissionError, match="is not writable"):
        outputs.check_output(tmp_path / "ro" / "a.png")


def test_check_train_out(tmp_path, run_dir):
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file, not a run directory"):
        outputs.check_train_out(tmp_path / "file", resume=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a run directory .*notes.txt"):
        outputs.check_train_out(tmp_path / "other", resume=False)
    outputs.check_train_out(run_dir, resume=True)
    outputs.check_train_out(tmp_path / "new" / "deeper", resume=False)


# --------------------------------------------------------------------------- lock (12.2)

_HOLD = ("import sys, time; from ddpm_core.app.run.lock import run_lock\n"
         "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n")


def test_run_lock_second_writer_fails_fast_naming_the_pid(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], cwd=tmp_path,
                              stdout=subprocess.PIPE, text=True)  # cwd: not the source tree
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.perf_counter()
        with pytest.raises(RunLockedError, match=f"in use by process {holder.pid} "):
            with run_lock(tmp_path):
                pass
        assert time.perf_counter() - start < 1.0
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        with run_lock(tmp_path) as path:  # released by the kernel with the holder
            assert path.read_text().strip() == str(os.getpid())
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()


def test_run_lock_disabled_off_the_main_process(tmp_path):
    with run_lock(tmp_path / "r"), run_lock(tmp_path / "r", enabled=False) as held:
        assert held is None


# --------------------------------------------------------------------------- hashes (12.4)

def test_verify_file_and_state_step(tmp_path):
    f = tmp_path / "ema.safetensors"
    f.write_bytes(b"weights")
    info = {"step": 4, "files": integrity.file_hashes([f])}
    integrity.verify_file(info, f)
    f.write_bytes(b"weightz")
    with pytest.raises(ValueError, match=r"ema\.safetensors: changed since run.json was written"):
        integrity.verify_file(info, f)
    integrity.verify_file({**info, "pending": {"step": 6}}, f)  # crash inside a checkpoint
    integrity.verify_file({"step": 4}, f)  # format 1: no hashes, no check
    integrity.check_state_step(info, 4, f)
    integrity.check_state_step({**info, "pending": {"step": 6}}, 6, f)
    with pytest.raises(ValueError, match="state is at step 1000000 but run.json records step 4"):
        integrity.check_state_step(info, 10**6, f)


def test_non_finite_weights_and_samples_are_errors():
    with pytest.raises(ValueError, match=r"w\.st: tensor 'conv.weight' has 1 non-finite"):
        integrity.check_finite("w.st", {"conv.bias": np.zeros(2),
                                        "conv.weight": np.array([1.0, np.nan])})
    with pytest.raises(FloatingPointError, match="sampling produced 2 non-finite"):
        integrity.check_finite_samples(np.array([[np.inf, 0.0, -np.inf]]))
