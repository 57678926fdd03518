"""diffusers' DDPMScheduler config <-> Schedule and sampler settings (ddpm_core.interop.diffusers_config).

The comparisons with diffusers need diffusers and torch (the torch session); the mapping,
round trips and errors are NumPy only. diffusers builds its tables in float32 and ours are
float64, so the tolerances are float32 rounding bounds:

- betas: a few float32 roundings per value (linspace, sqrt, square, sigmoid): rtol 4 eps32;
- alphas_cumprod: a float32 cumulative product of T factors, each rounded once, drifts like
  a random walk of T half-ulp steps: atol sqrt(T) / 2 eps32 (abar <= 1);
- given betas are rounded to float32 once: rtol eps32 / 2.

A wrong formula (wrong endpoints, linear instead of quadratic, an off-by-one in t) is
off by 1e-3 or more, four orders of magnitude above these bounds.
"""

from __future__ import annotations

import doctest
import inspect
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import ddpm_core.interop.diffusers_config as dc_config
from ddpm_core.interop.diffusers_config import (
    SCHEDULER_DEFAULTS,
    read_scheduler_config,
    schedule_from_diffusers_config,
    schedule_to_diffusers_config,
    write_scheduler_config,
)
from ddpm_core.schedule_entry import schedule_entry, schedule_from_entry
from ddpm_core.schedules import Schedule

EPS32 = float(np.finfo(np.float32).eps)

CONFIGS = [
    {"beta_schedule": "linear"},
    {"beta_schedule": "linear", "num_train_timesteps": 4000, "beta_start": 1e-4, "beta_end": 0.01},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "sigmoid", "beta_start": 1e-4, "beta_end": 0.02},
    {"beta_schedule": "linear", "rescale_betas_zero_snr": True},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "rescale_betas_zero_snr": True},
    {"beta_schedule": "squaredcos_cap_v2", "rescale_betas_zero_snr": True},
    {"trained_betas": np.linspace(1e-3, 0.05, 200).tolist(), "num_train_timesteps": 200},
]


def _ids(configs):
    return ["-".join(f"{k}={v}" for k, v in c.items() if k != "trained_betas") or "given"
            for c in configs]


def _diffusers():
    pytest.importorskip("torch")
    return pytest.importorskip("diffusers")


# --------------------------------------------------------------------------- against diffusers

@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
def test_tables_match_diffusers(config):
    diffusers = _diffusers()
    theirs = diffusers.DDPMScheduler(**config)
    ours = schedule_from_diffusers_config(config)
    T = ours.num_timesteps
    abar = theirs.alphas_cumprod.double().numpy()
    assert abar.shape == (T,)
    np.testing.assert_allclose(abar, ours.alphas_cumprod, rtol=0, atol=math.sqrt(T) / 2 * EPS32)
    if config.get("rescale_betas_zero_snr"):
        # beta = 1 - abar_t / abar_{t-1} of two float32 numbers near 0 is ill-conditioned at
        # the end of the chain; SNR(T) = 0 is exact in both.
        assert abar[-1] == ours.alphas_cumprod[-1] == 0.0 and ours.betas[-1] == 1.0
    else:
        rtol = EPS32 / 2 if "trained_betas" in config else 4 * EPS32
        np.testing.assert_allclose(theirs.betas.double().numpy(), ours.betas, rtol=rtol, atol=0)


def test_defaults_are_diffusers_defaults():
    diffusers = _diffusers()
    params = inspect.signature(diffusers.DDPMScheduler.__init__).parameters
    theirs = {k: p.default for k, p in params.items() if k != "self"}
    assert theirs == SCHEDULER_DEFAULTS


def test_written_config_loads_in_diffusers_and_means_the_same():
    diffusers = _diffusers()
    schedule = Schedule.quadratic(300, 1e-3, 0.03).rescale_zero_terminal_snr()
    config = schedule_to_diffusers_config(schedule, prediction="v", variance="learned_range", clip=None)
    theirs = diffusers.DDPMScheduler.from_config(json.loads(json.dumps(config)))
    assert theirs.config.prediction_type == "v_prediction" and theirs.config.clip_sample is False
    assert theirs.config.variance_type == "learned_range"
    np.testing.assert_allclose(theirs.alphas_cumprod.double().numpy(), schedule.alphas_cumprod,
                               rtol=0, atol=math.sqrt(300) / 2 * EPS32)


# --------------------------------------------------------------------------- mapping

def test_empty_config_is_the_papers_schedule_with_diffusers_defaults():
    s = read_scheduler_config({})
    assert s.schedule == {"name": "linear", "num_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02}
    assert (s.prediction, s.variance, s.clip) == ("eps", "fixed_small", 1.0)
    np.testing.assert_array_equal(schedule_from_diffusers_config({}).betas, Schedule.linear(1000).betas)


def test_released_cifar10_scheduler_config():
    """google/ddpm-cifar10-32's scheduler_config.json as published (diffusers 0.1 era)."""
    config = {"_class_name": "DDPMScheduler", "_diffusers_version": "0.1.1", "beta_end": 0.02,
              "beta_schedule": "linear", "beta_start": 0.0001, "clip_sample": True,
              "num_train_timesteps": 1000, "trained_betas": None, "variance_type": "fixed_large",
              "tensor_format": "pt"}
    s = read_scheduler_config(config)
    assert (s.schedule["name"], s.prediction, s.variance, s.clip) == ("linear", "eps", "fixed_large", 1.0)


@pytest.mark.parametrize(("field", "value", "ours"), [
    ("prediction_type", "epsilon", "eps"),
    ("prediction_type", "sample", "x0"),
    ("prediction_type", "v_prediction", "v"),
    ("variance_type", "fixed_small", "fixed_small"),
    ("variance_type", "fixed_small_log", "fixed_small"),
    ("variance_type", "fixed_large", "fixed_large"),
    ("variance_type", "learned_range", "learned_range"),
])
def test_prediction_and_variance_names(field, value, ours):
    s = read_scheduler_config({field: value})
    assert (s.prediction if field == "prediction_type" else s.variance) == ours


@pytest.mark.parametrize(("config", "clip"), [
    ({"clip_sample": True}, 1.0),
    ({"clip_sample": True, "clip_sample_range": 2.5}, 2.5),
    ({"clip_sample": False, "clip_sample_range": 2.5}, None),
])
def test_clip(config, clip):
    assert read_scheduler_config(config).clip == clip
    back = write_scheduler_config(read_scheduler_config(config).schedule, clip=clip)
    assert read_scheduler_config(back).clip == clip


@pytest.mark.parametrize("config", CONFIGS, ids=_ids(CONFIGS))
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_config_round_trip(config, prediction):
    s = read_scheduler_config(config)
    written = write_scheduler_config(s.schedule, prediction=prediction, variance="fixed_large", clip=1.5)
    again = read_scheduler_config(json.loads(json.dumps(written)))
    assert again.schedule == s.schedule
    assert (again.prediction, again.variance, again.clip) == (prediction, "fixed_large", 1.5)
    assert write_scheduler_config(again.schedule, prediction=prediction, variance="fixed_large",
                                  clip=1.5) == written


@pytest.mark.parametrize("schedule", [
    Schedule.linear(1000), Schedule.linear(10, 1e-3, 0.2), Schedule.cosine(1000),
    Schedule.quadratic(50, 1e-3, 0.05), Schedule.sigmoid(100), Schedule.linear(1000).rescale_zero_terminal_snr(),
    Schedule.from_betas([0.1, 0.3, 0.5]),
], ids=["linear", "linear10", "cosine", "quadratic", "sigmoid", "zero-snr", "given"])
def test_schedule_round_trip_is_exact(schedule):
    config = json.loads(json.dumps(schedule_to_diffusers_config(schedule)))
    np.testing.assert_array_equal(schedule_from_diffusers_config(config).betas, schedule.betas)


def test_linear_and_cosine_are_written_by_name():
    assert schedule_to_diffusers_config(Schedule.linear(1000))["beta_schedule"] == "linear"
    assert schedule_to_diffusers_config(Schedule.linear(1000))["trained_betas"] is None
    assert schedule_to_diffusers_config(Schedule.cosine(4000))["beta_schedule"] == "squaredcos_cap_v2"
    assert schedule_entry(Schedule.quadratic(50))["name"] == "betas"


@pytest.mark.parametrize("entry", [
    {"name": n, "num_timesteps": 100, "beta_start": 1e-3, "beta_end": 0.05}
    for n in ("linear", "quadratic", "scaled_linear", "sigmoid", "cosine")
], ids=lambda e: e["name"])
def test_schedule_from_entry_reads_what_training_writes(entry):
    expected = Schedule.cosine(100) if entry["name"] == "cosine" else getattr(Schedule, entry["name"])(100, 1e-3, 0.05)
    np.testing.assert_array_equal(schedule_from_entry(entry).betas, expected.betas)
    rescaled = schedule_from_entry({**entry, "rescale_zero_terminal_snr": True})
    np.testing.assert_array_equal(rescaled.betas, expected.rescale_zero_terminal_snr().betas)


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize(("config", "match"), [
    ({"beta_schedule": "laplace"}, "beta_schedule='laplace'"),
    ({"variance_type": "learned"}, "variance_type='learned'"),
    ({"variance_type": "fixed_large_log"}, "variance_type='fixed_large_log'"),
    ({"variance_type": "huge"}, "variance_type='huge'"),
    ({"prediction_type": "mean"}, "prediction_type='mean'"),
    ({"thresholding": True}, "thresholding=True"),
    ({"clip_sample_range": 0.0}, "clip_sample_range=0.0"),
    ({"clip_sample": "yes"}, "clip_sample='yes'"),
    ({"num_train_timesteps": 0}, "num_train_timesteps=0"),
    ({"num_train_timesteps": 10, "trained_betas": [0.1] * 9}, "trained_betas"),
    ({"trained_betas": [0.1, "x"], "num_train_timesteps": 2}, "trained_betas"),
    ({"trained_betas": [0.1, 1.5], "num_train_timesteps": 2}, "betas must lie in"),
    ({"beta_start": 2.0}, "beta_start"),
    ({"rescale_betas_zero_snr": 1}, "rescale_betas_zero_snr=1"),
    ({"timestep_spacing": "middle"}, "timestep_spacing='middle'"),
    ({"steps_offset": -1}, "steps_offset=-1"),
    ({"predict_epsilon": False}, "predict_epsilon=False"),
    ({"_class_name": "DDIMScheduler"}, "_class_name='DDIMScheduler'"),
    ({"set_alpha_to_one": True}, "set_alpha_to_one"),
])
def test_unsupported_fields_are_named(config, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")):
        read_scheduler_config(config)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"prediction": "mean"}, "prediction='mean'"),
    ({"variance": "learned"}, "variance='learned'.*logarithm"),
    ({"clip": (-1.0, 2.0)}, "clip="),
    ({"clip": -1.0}, "clip=-1.0"),
])
def test_unwritable_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        schedule_to_diffusers_config(Schedule.linear(10), **kwargs)


def test_respaced_schedule_has_no_diffusers_config():
    with pytest.raises(ValueError, match="respaced"):
        schedule_to_diffusers_config(Schedule.linear(100).respace(10))


@pytest.mark.parametrize(("entry", "match"), [
    ({"name": "exp", "num_timesteps": 10}, "name='exp'"),
    ({"name": "linear", "num_timesteps": 0, "beta_start": 0.1, "beta_end": 0.2}, "num_timesteps=0"),
    ({"name": "linear", "num_timesteps": 10}, "no 'beta_start'"),
    ({"name": "betas", "num_timesteps": 3, "betas": [0.1, 0.2]}, "num_timesteps=3"),
    ({"name": "cosine", "num_timesteps": 10, "rescale_zero_terminal_snr": "yes"}, "rescale_zero_terminal_snr"),
])
def test_bad_schedule_entries_are_named(entry, match):
    with pytest.raises(ValueError, match=match):
        schedule_from_entry(entry)


def test_docstring_examples_run():
    result = doctest.testmod(dc_config, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_conversion_modules_import_no_framework():
    """The scheduler mapping and the folder conversion are NumPy only (fresh interpreter)."""
    code = ("import sys, ddpm_core.interop.diffusers_config, ddpm_core.interop.diffusers; "
            "print(sorted(m for m in ('torch', 'jax', 'flax', 'diffusers', 'safetensors') if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120, cwd=tempfile.gettempdir())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
