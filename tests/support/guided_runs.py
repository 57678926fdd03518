"""Run directories with random weights for guided-sampling tests (no training needed).

A class-conditional (or unconditional) diffusion run of the tiny preset and a classifier
run, both with canonical safetensors weights drawn in NumPy: every tensor non-zero (the
zero-initialised output heads too), fan-in scaled so activations stay of order 1.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from ddpm_core.app.run.classifier_run import write_classifier_run
from ddpm_core.app.run.rundir import RunPaths, schedule_dict, write_run_json
from ddpm_core.interop.convert import save_safetensors
from ddpm_core.models import classifier_config, get_preset, parameter_shapes, with_head

T = 20  # the chain of the test runs


def random_state(config, seed=0):
    """Canonical weights of ``config`` (UNetConfig or ClassifierConfig), all non-zero."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, shape in parameter_shapes(config).items():
        noise = rng.standard_normal(shape).astype(np.float32)
        if name.endswith("label_emb.weight"):
            state[name] = noise
        elif len(shape) == 1:
            state[name] = ((1.0 if name.endswith(".weight") else 0.0) + 0.1 * noise).astype(np.float32)
        else:
            state[name] = (noise / math.sqrt(math.prod(shape[1:]))).astype(np.float32)
    return state


def unet_config(num_classes=3, variance="fixed_small"):
    return dataclasses.replace(with_head(get_preset("tiny").unet, variance=variance),
                               num_classes=num_classes)


def write_model_run(run_dir, *, num_classes=3, variance="fixed_small", seed=0, backend="torch"):
    """A tiny diffusion run (``num_classes = 0``: unconditional); returns its UNetConfig."""
    config = unet_config(num_classes, variance)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    save_safetensors(RunPaths.of(run_dir).ema, random_state(config, seed))
    train = dataclasses.replace(get_preset("tiny").train, num_timesteps=T, variance=variance)
    extra = {"classes": {"num_classes": num_classes,
                         "names": [str(k) for k in range(num_classes)]}} if num_classes else {}
    write_run_json(run_dir, backend=backend, preset="tiny", unet=config, train=train,
                   schedule={**schedule_dict(train), "num_timesteps": T}, prediction="eps",
                   variance=variance, data="digits", step=0, **extra)
    return config


def write_clf_run(run_dir, *, num_classes=3, seed=1, num_timesteps=T, preset="tiny"):
    """A classifier run on the tiny preset's encoder; returns its ClassifierConfig."""
    config = classifier_config(preset, num_classes)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    save_safetensors(RunPaths.of(run_dir).model, random_state(config, seed))
    train = get_preset("tiny").train
    write_classifier_run(run_dir, backend="torch", config=config,
                         schedule={**schedule_dict(train), "num_timesteps": num_timesteps},
                         class_names=[str(k) for k in range(num_classes)], data="digits",
                         step=0)
    return config


def write_test_runs(root, num_classes=3):
    """``root/cond`` (K classes), ``root/uncond`` and ``root/clf`` (K classes); returns root."""
    write_model_run(Path(root) / "cond", num_classes=num_classes)
    write_model_run(Path(root) / "uncond", num_classes=0, seed=2)
    write_clf_run(Path(root) / "clf", num_classes=num_classes)
    return Path(root)
