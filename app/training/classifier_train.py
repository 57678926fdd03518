"""``ddpm train-classifier``: the noise-aware classifier (Dhariwal & Nichol 2021) as a task
of the one training loop (:mod:`ddpm_core.app.training.trainer`).

Step ``s`` draws the batch, its labels and ``t ~ Uniform{0..T-1}`` exactly as a diffusion
run does (``ddpm_core.app.training.seeding``; no label dropout, flips only where the preset has
them, i.e. none for digits); the backend forms ``x_t = q_sample(x_0, t, eps)`` (eq. 4) and
minimises the cross-entropy of the classifier's logits for the images' classes. The run
directory is the classifier run of :mod:`ddpm_core.app.run.classifier_run` (its files:
docs/run-directory.md) with the same lock, atomic checkpoints, exact resume, progress line
and NaN guard as ``ddpm train``.
At the end the summary holds the held-out accuracy (:func:`heldout_accuracy`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_core.app.run.classifier_run import read_classifier_run, write_classifier_run
from ddpm_core.app.run.options import TrainOptions, resolve_options, with_defaults
from ddpm_core.app.run.resume import resume_options
from ddpm_core.app.run.rundir import RunPaths, plain_json, run_options_dict, schedule_dict
from ddpm_core.app.training.protocol import TrainData
from ddpm_core.app.training.tasks import check_image_shape

__all__ = ["ACCURACY_STREAM", "ClassifierTask", "heldout_accuracy", "stored_classifier_options"]

ACCURACY_STREAM = 0xACC  # default_rng([seed, ACCURACY_STREAM]): t and eps of the accuracy


def stored_classifier_options(info: dict[str, Any]) -> dict[str, Any]:
    """The options a classifier run.json fixes for the life of the run."""
    o, t = info.get("options", {}), info["train"]
    return {"preset": o["preset"], "backend": info["backend"], "data": info["data"],
            "seed": o["seed"], "batch_size": t["batch_size"], "lr": t["lr"],
            "warmup": t["warmup_steps"], "grad_clip": t["grad_clip"],
            "dropout": info["classifier"]["unet"]["dropout"]}


def _data_name(options: TrainOptions) -> str:
    from ddpm_core.models import get_preset

    return str(options.data or get_preset(options.preset).data)


class ClassifierTask:
    """The :class:`ddpm_core.app.training.trainer.RunTask` of ``ddpm train-classifier``."""

    grids = False

    def complete(self, options: TrainOptions) -> TrainOptions:
        if options.class_conditional:
            raise ValueError("class_conditional is an option of diffusion runs; the classifier "
                             "always trains on the labels")
        if not options.resume:
            return with_defaults(options)
        info = self.read_info(options.out)
        return resume_options(options, info, RunPaths.of(options.out).run_json,
                              stored_classifier_options(info))

    def load_data(self, options: TrainOptions) -> TrainData:
        from ddpm_core.data import load_labeled_dataset

        labeled = load_labeled_dataset(_data_name(options), "train")
        return TrainData(labeled.images, labeled.labels, tuple(labeled.class_names))

    def configs(self, options: TrainOptions, data: TrainData) -> tuple[Any, Any]:
        from ddpm_core.models import classifier_config

        _, unet, train = resolve_options(options)
        config = classifier_config(unet, data.num_classes)
        check_image_shape(options, data.images, config.unet)
        return config, train

    def label_dropout(self, options: TrainOptions) -> float | None:
        return 0.0

    def read_info(self, run_dir: str | Path) -> dict[str, Any]:
        return read_classifier_run(run_dir)[1]

    def check_resume(self, options: TrainOptions, info: dict[str, Any], model: Any) -> None:
        if info["classifier"] != json.loads(json.dumps(model.to_dict())):
            raise ValueError(f"{RunPaths.of(options.out).run_json}: the run's classifier "
                             f"differs from preset {options.preset!r}'s on this data; cannot "
                             "resume it")

    def write_info(self, options: TrainOptions, model: Any, train: Any, data: TrainData,
                   step: int, **extra: Any) -> None:
        write_classifier_run(options.out, backend=options.backend, config=model,
                             schedule=schedule_dict(train), class_names=data.class_names,
                             data=_data_name(options), step=step,
                             train=plain_json(dataclasses.asdict(train)),
                             options=run_options_dict(options), **extra)

    def weight_paths(self, paths: RunPaths) -> list[Path]:
        return [paths.model]

    def report(self, options: TrainOptions, backend: Any, data: TrainData) -> dict[str, Any]:
        from ddpm_core.data import load_labeled_dataset

        try:
            held = load_labeled_dataset(_data_name(options), "heldout")
        except ValueError:  # a user dataset: no held-out split
            return {}
        T = backend.schedule.num_timesteps
        return heldout_accuracy(backend.predict, held.images, held.labels, T, options.seed)


def heldout_accuracy(predict: Any, images: np.ndarray, labels: np.ndarray, num_timesteps: int,
                     seed: int, batch_size: int = 250) -> dict[str, Any]:
    """Accuracy of a noise-aware classifier on ``images`` at uniform t and at t = 0.

    ``predict(x0, t, eps) -> logits`` (n, K) with ``x0``/``eps`` float32 (n, C, H, W) and
    ``t`` int64 (n,); ``t`` and ``eps`` come from ``default_rng([seed, ACCURACY_STREAM])``
    (the same on every backend).

    Returns
    -------
    dict
        ``heldout_accuracy`` (t ~ Uniform{0..T-1}), ``heldout_accuracy_t0`` (t = 0, the
        least noise) and ``heldout_n``.
    """
    from ddpm_core.data import to_model_range

    rng = np.random.default_rng([int(seed), ACCURACY_STREAM])
    x0 = np.ascontiguousarray(to_model_range(images).transpose(0, 3, 1, 2))
    t = rng.integers(0, num_timesteps, size=x0.shape[0]).astype(np.int64)
    eps = rng.standard_normal(x0.shape, dtype=np.float32)
    right = {"heldout_accuracy": 0, "heldout_accuracy_t0": 0}
    for lo in range(0, x0.shape[0], batch_size):
        part = slice(lo, lo + batch_size)
        for key, tt in (("heldout_accuracy", t[part]), ("heldout_accuracy_t0",
                                                          np.zeros_like(t[part]))):
            logits = predict(x0[part], tt, eps[part])
            right[key] += int(np.sum(np.argmax(logits, axis=1) == labels[part]))
    n = int(x0.shape[0])
    return {**{k: v / n for k, v in right.items()}, "heldout_n": n}
