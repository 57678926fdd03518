"""The schema of run.json (formats 1 and 2), checked field by field on every read.

Every error names the file, the field (``unet.ch_mult``) and what is allowed. Format 2 adds
``files`` (sha256 of each weight and state file, :mod:`ddpm_core.app.run.integrity`), ``pending``
(a checkpoint being written) and ``options`` (the resolved run options); format 1 files
are read as they are. A class-conditional run records its ``classes``
(``{"num_classes": K, "names": [K names]}``, K = ``unet.num_classes``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from ddpm_core.app.run.options import (
    BACKENDS,
    DEVICES,
    LOSSES,
    PREDICTIONS,
    TIMESTEP_SAMPLERS,
    VARIANCES,
    WEIGHTINGS,
)
from ddpm_core.schedules import SCHEDULE_ENTRIES

__all__ = ["RUN_FORMATS", "validate_classes", "validate_run_json", "validate_schedule_entry"]

RUN_FORMATS = (1, 2)
SCHEDULE_NAMES = SCHEDULE_ENTRIES

Check = Callable[[Any], str | None]  # None if the value is allowed, else what is allowed


def _int(low: int) -> Check:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= low
        return None if ok else f"an integer >= {low}"
    return check


def _float(low: float, high: float, *, optional: bool = False) -> Check:
    def check(v: Any) -> str | None:
        if v is None and optional:
            return None
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
            and low <= v <= high
        return None if ok else f"a number in [{low}, {high}]" + (" or null" if optional else "")
    return check


def _choice(allowed: tuple[Any, ...]) -> Check:
    def check(v: Any) -> str | None:
        ok = any(type(v) is type(a) and v == a for a in allowed)
        return None if ok else "one of " + ", ".join(map(repr, allowed))
    return check


def _str(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "a non-empty string"


def _any_str(v: Any) -> str | None:  # "data" is "" for a model imported without a data set
    return None if isinstance(v, str) else "a string"


def _ints(low: int) -> Check:
    def check(v: Any) -> str | None:
        ok = isinstance(v, list) and all(_int(low)(x) is None for x in v)
        return None if ok else f"a list of integers >= {low}"
    return check


def _sha256(v: Any) -> str | None:
    return None if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) else \
        "a sha256 hex digest (64 characters 0-9a-f)"


_BOOL = _choice((True, False))


def _betas(v: Any) -> str | None:
    ok = isinstance(v, list) and all(_float(0.0, 1.0)(x) is None and x > 0 for x in v)
    return None if ok else "a list of numbers in (0, 1)"

UNET: dict[str, Check] = {
    "image_size": _int(1), "in_channels": _int(1), "out_channels": _int(1), "ch": _int(1),
    "ch_mult": _ints(1), "num_res_blocks": _int(1), "attn_resolutions": _ints(1),
    "dropout": _float(0.0, 0.999999), "resamp_with_conv": _BOOL, "num_groups": _int(1),
    "norm_eps": _float(1e-30, 1.0), "num_classes": _int(0)}
TRAIN: dict[str, Check] = {
    "lr": _float(1e-30, 1.0), "warmup_steps": _int(0), "batch_size": _int(1),
    "grad_clip": _float(1e-30, math.inf, optional=True), "ema_decay": _float(0.0, 0.999999999),
    "random_flip": _BOOL, "num_steps": _int(1), "schedule": _choice(SCHEDULE_NAMES),
    "num_timesteps": _int(1), "beta_start": _float(0.0, 1.0), "beta_end": _float(0.0, 1.0),
    "loss": _choice(LOSSES), "prediction": _choice(PREDICTIONS), "variance": _choice(VARIANCES),
    "weighting": _choice(WEIGHTINGS), "min_snr_gamma": _float(1e-30, math.inf)}
SCHEDULE: dict[str, Check] = {
    "name": _choice(SCHEDULE_NAMES), "num_timesteps": _int(1)}
SCHEDULE_OPTIONAL: dict[str, Check] = {
    "beta_start": _float(0.0, 1.0, optional=True), "beta_end": _float(0.0, 1.0, optional=True),
    "betas": _betas, "rescale_zero_terminal_snr": _BOOL}
TOP: dict[str, Check] = {
    "format": _choice(RUN_FORMATS), "backend": _choice(BACKENDS), "preset": _str,
    "prediction": _choice(PREDICTIONS), "variance": _choice(VARIANCES), "data": _any_str,
    "step": _int(0)}
OPTIONAL: dict[str, Check] = {"seed": _int(0), "timestep_sampler": _choice(TIMESTEP_SAMPLERS),
                              "clip": _float(1e-30, math.inf, optional=True), "imported_from": _str}
OPTIONS: dict[str, Check] = {
    "log_every": _int(0), "sample_every": _int(0), "ckpt_every": _int(0), "sample_n": _int(1),
    "device": _choice(DEVICES), "compile": _BOOL, "progress": _BOOL}
SECTIONS = {"unet": UNET, "train": TRAIN, "schedule": SCHEDULE}


def _fail(path: Any, field: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{path}: field {field!r} is {value!r}; allowed: {allowed}")


def _check_fields(path: Any, prefix: str, section: Mapping[str, Any],
                  checks: Mapping[str, Check], *, required: bool) -> None:
    for name, check in checks.items():
        if name not in section:
            if required:
                raise ValueError(f"{path}: field {prefix + name!r} is missing")
            continue
        allowed = check(section[name])
        if allowed is not None:
            raise _fail(path, prefix + name, section[name], allowed)


def validate_run_json(info: Any, path: str | os.PathLike = "run.json") -> dict[str, Any]:
    """Check a parsed run.json against the schema of its format; returns it.

    Raises
    ------
    ValueError
        Naming ``path``, the field and the allowed values: a wrong type or value, a
        missing field, an unknown U-Net key, or sections that disagree (``prediction``,
        ``variance``, ``num_timesteps``, the schedule).
    """
    if not isinstance(info, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(info).__name__}")
    if info.get("format") not in RUN_FORMATS:
        raise _fail(path, "format", info.get("format"),
                    f"one of {', '.join(map(str, RUN_FORMATS))} (this version's formats)")
    _check_fields(path, "", info, TOP, required=True)
    for name, checks in SECTIONS.items():
        section = info.get(name, None)
        if not isinstance(section, dict):
            raise _fail(path, name, section, "a JSON object with keys " + ", ".join(checks))
        _check_fields(path, name + ".", section, checks, required=name != "train")
    validate_schedule_entry(info["schedule"], path)
    unknown = sorted(set(info["unet"]) - set(UNET))
    if unknown:
        raise _fail(path, "unet." + unknown[0], info["unet"][unknown[0]],
                    "keys " + ", ".join(UNET))
    _check_fields(path, "", info, OPTIONAL, required=False)
    _check_extras(info, path)
    _check_agreement(info, path)
    return info


def _check_extras(info: Mapping[str, Any], path: Any) -> None:
    for key in ("options", "files", "pending"):
        if key in info and not isinstance(info[key], dict):
            raise _fail(path, key, info[key], "a JSON object")
    _check_fields(path, "options.", info.get("options", {}), OPTIONS, required=False)
    for name, digest in info.get("files", {}).items():
        if "/" in name or "\\" in name or _sha256(digest) is not None:
            raise _fail(path, f"files.{name}", digest, "file names in the run directory "
                        "mapped to " + str(_sha256("")))
    if "pending" in info:
        _check_fields(path, "pending.", info["pending"], {"step": _int(0)}, required=True)
    k = info["unet"].get("num_classes", 0)
    if "classes" in info or k:
        validate_classes(info.get("classes"), path)
        if info["classes"]["num_classes"] != k:
            raise ValueError(f"{path}: field 'classes.num_classes' is "
                             f"{info['classes']['num_classes']!r} but 'unet.num_classes' is "
                             f"{k!r}; they must agree")


def validate_classes(classes: Any, path: str | os.PathLike = "run.json") -> None:
    """Check a ``classes`` entry: ``{"num_classes": K >= 2, "names": [K distinct strings]}``."""
    names = classes.get("names") if isinstance(classes, dict) else None
    ok = (isinstance(classes, dict) and _int(2)(classes.get("num_classes")) is None
          and isinstance(names, list) and all(isinstance(n, str) for n in names)
          and len(names) == classes["num_classes"] and len(set(names)) == len(names))
    if not ok:
        raise _fail(path, "classes", classes, "{'num_classes': K >= 2, 'names': [K distinct "
                    "strings]}")


def _check_agreement(info: Mapping[str, Any], path: Any) -> None:
    train, schedule = info["train"], info["schedule"]
    pairs = [("prediction", info["prediction"], "train.prediction", train.get("prediction")),
             ("variance", info["variance"], "train.variance", train.get("variance")),
             ("schedule.num_timesteps", schedule["num_timesteps"], "train.num_timesteps",
              train.get("num_timesteps")),
             # given betas (an imported schedule) have no TrainConfig name to agree with
             ("schedule.name", schedule["name"], "train.schedule",
              None if schedule["name"] == "betas" else train.get("schedule"))]
    for a, va, b, vb in pairs:
        if vb is not None and va != vb:
            raise ValueError(f"{path}: field {a!r} is {va!r} but {b!r} is {vb!r}; they must "
                             "agree")


def validate_schedule_entry(schedule: Any, path: str | os.PathLike = "run.json") -> None:
    """Check a run.json ``schedule`` entry: its fields, the betas of a given-betas entry and
    the range of a named one; errors name ``path`` and the field."""
    if not isinstance(schedule, dict):
        raise _fail(path, "schedule", schedule, "a JSON object with keys " + ", ".join(SCHEDULE))
    _check_fields(path, "schedule.", schedule, SCHEDULE, required=True)
    _check_fields(path, "schedule.", schedule, SCHEDULE_OPTIONAL, required=False)
    if schedule["name"] == "betas" and len(schedule.get("betas") or ()) != schedule["num_timesteps"]:
        raise _fail(path, "schedule.betas", schedule.get("betas"),
                    f"a list of num_timesteps = {schedule['num_timesteps']} numbers in (0, 1)")
    if schedule["name"] not in ("cosine", "betas"):
        for key in ("beta_start", "beta_end"):
            if schedule.get(key) is None:
                raise _fail(path, f"schedule.{key}", schedule.get(key), "a number in [0.0, 1.0]")
