"""The options of a resumed run: every training option comes from the run's run.json.

Only the options in :data:`SAFE_ON_RESUME` may be given again with a new value (the step
count upwards, the cadence of logs, checkpoints and grids, the grid size, the device, the
progress line, compilation, the TensorBoard events). Any other option given with a value
that differs from the stored one is refused, naming the option and both values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ddpm_core.app.run.options import RUN_DEFAULTS, TrainOptions, with_defaults

__all__ = ["SAFE_ON_RESUME", "resume_options", "stored_option", "stored_options"]

SAFE_ON_RESUME = ("steps", "log_every", "sample_every", "ckpt_every", "sample_n", "device",
                  "progress", "compile", "tensorboard")

# option -> its stored value in a run.json (format 1 keeps them in "train" and "unet")
_STORED: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "preset": lambda i: i["preset"],
    "backend": lambda i: i["backend"],
    "data": lambda i: i["data"],
    "seed": lambda i: i.get("seed", RUN_DEFAULTS["seed"]),
    "timestep_sampler": lambda i: i.get("timestep_sampler", RUN_DEFAULTS["timestep_sampler"]),
    "batch_size": lambda i: i["train"]["batch_size"],
    "lr": lambda i: i["train"]["lr"],
    "warmup": lambda i: i["train"]["warmup_steps"],
    "grad_clip": lambda i: i["train"]["grad_clip"],
    "ema_decay": lambda i: i["train"]["ema_decay"],
    "random_flip": lambda i: i["train"]["random_flip"],
    "loss": lambda i: i["train"]["loss"],
    "prediction": lambda i: i["train"]["prediction"],
    "variance": lambda i: i["train"]["variance"],
    "schedule": lambda i: i["train"]["schedule"],
    "weighting": lambda i: i["train"].get("weighting", "none"),
    "min_snr_gamma": lambda i: i["train"].get("min_snr_gamma", 5.0),
    "dropout": lambda i: i["unet"]["dropout"],
    "ch": lambda i: i["unet"]["ch"],
    "num_res_blocks": lambda i: i["unet"]["num_res_blocks"],
    "class_conditional": lambda i: bool(i["unet"].get("num_classes", 0)),
    "label_dropout": lambda i: i.get("options", {}).get("label_dropout"),
}

_FLAGS = {"random_flip": "flip", "weighting": "loss-weighting"}  # option -> its ddpm train flag


def stored_option(info: Mapping[str, Any], name: str) -> Any:
    """One training option as a run.json records it (e.g. ``"label_dropout"``)."""
    return _STORED[name](info)


def stored_options(info: Mapping[str, Any]) -> dict[str, Any]:
    """The training options a run.json records (fixed for the life of the run)."""
    return {name: get(info) for name, get in _STORED.items()}


def resume_options(options: TrainOptions, info: Mapping[str, Any],
                   path: str | Path = "run.json",
                   stored: Mapping[str, Any] | None = None) -> TrainOptions:
    """``options`` completed from the run's ``info`` (run.json); refuses a changed option.

    ``stored``: the run's fixed options (default :func:`stored_options` of a diffusion
    run's ``info``; a classifier run passes its own).

    Raises
    ------
    ValueError
        If an option outside :data:`SAFE_ON_RESUME` is given with a value other than the
        stored one, or ``steps`` is below the run's current step.
    """
    stored = stored_options(info) if stored is None else stored
    for name, value in stored.items():
        given = getattr(options, name)
        if name == "preset" and given != value:
            raise ValueError(f"{path}: the run was trained with preset {value!r}; cannot "
                             f"resume it with preset {given!r} (--preset cannot change on "
                             "--resume)")
        if given is not None and _differs(given, value):
            flag = _FLAGS.get(name, name.replace("_", "-"))
            raise ValueError(f"{path}: --{flag} cannot change on --resume: "
                             f"the run has {value!r}, got {given!r} (only "
                             f"{', '.join(SAFE_ON_RESUME)} may change)")
    step = int(info["step"])
    if options.steps is not None and options.steps < step:
        raise ValueError(f"{path}: --steps {options.steps} is below the run's current step "
                         f"{step}; --steps is the total step count, give at least {step}")
    cadence = info.get("options", {})
    unset = {k: cadence[k] for k in SAFE_ON_RESUME
             if getattr(options, k) is None and k in cadence and k != "steps"}
    steps = options.steps if options.steps is not None else info["train"]["num_steps"]
    return with_defaults(options.replace(**stored, **unset, steps=steps))


def _differs(given: Any, stored: Any) -> bool:
    if isinstance(given, float) or isinstance(stored, float):
        try:
            return float(given) != float(stored)
        except (TypeError, ValueError):
            return True
    return str(given) != str(stored) if isinstance(stored, str) else given != stored
