r"""diffusers' ``DDPMScheduler`` configuration <-> ddpm-core schedules and sampler settings.

NumPy and the standard library only: diffusers itself is never imported. A
``scheduler_config.json`` (a plain dict) maps to

- a *schedule entry*, the ``"schedule"`` dict of a run's run.json
  (:mod:`ddpm_core.schedule_entry`);
- the sampler settings: ``prediction``, ``variance`` and ``clip`` (the x0 clipping range
  c, clipping to [-c, c], or None).

=========================== ============================ ==============================
diffusers field             ddpm-core                    note
=========================== ============================ ==============================
beta_schedule               schedule entry ``name``      linear, scaled_linear (ours:
                                                         quadratic), sigmoid,
                                                         squaredcos_cap_v2 (cosine)
trained_betas               ``{"name": "betas"}``        kept in float64
rescale_betas_zero_snr      rescale_zero_terminal_snr
prediction_type             prediction                   epsilon/sample/v_prediction ->
                                                         eps/x0/v
variance_type               variance                     fixed_small_log samples as
                                                         fixed_small
clip_sample(_range)         clip                         c or None
thresholding                (refused)                    s has an upper bound
                                                         (sample_max_value) in diffusers
timestep_spacing,           not stored                   how diffusers picks a shorter
steps_offset                                             inference chain, not the model
=========================== ============================ ==============================

diffusers computes every table in float32; ddpm-core computes them in float64 from the
same formula, so the two agree to float32 rounding (see the tests).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ddpm_core.respacing import SPACINGS
from ddpm_core.schedule_entry import entry_value, schedule_entry, schedule_from_entry
from ddpm_core.schedules import SCHEDULE_ENTRIES, Schedule

__all__ = [
    "SCHEDULER_DEFAULTS",
    "SchedulerSettings",
    "merged_config",
    "read_scheduler_config",
    "schedule_from_diffusers_config",
    "schedule_to_diffusers_config",
    "write_scheduler_config",
]

# DDPMScheduler.__init__'s defaults (diffusers 0.42): a field absent from a
# scheduler_config.json takes these values in diffusers, so it does here.
SCHEDULER_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "variance_type": "fixed_small",
    "clip_sample": True,
    "prediction_type": "epsilon",
    "thresholding": False,
    "dynamic_thresholding_ratio": 0.995,
    "clip_sample_range": 1.0,
    "sample_max_value": 1.0,
    "timestep_spacing": "leading",
    "steps_offset": 0,
    "rescale_betas_zero_snr": False,
}
# Fields diffusers itself ignores (written by early versions); "_..." keys are metadata.
_IGNORED = ("tensor_format",)

_FROM_BETA_SCHEDULE = {"linear": "linear", "scaled_linear": "scaled_linear",
                       "squaredcos_cap_v2": "cosine", "sigmoid": "sigmoid"}
_TO_BETA_SCHEDULE = {"linear": "linear", "scaled_linear": "scaled_linear",
                     "quadratic": "scaled_linear", "cosine": "squaredcos_cap_v2",
                     "sigmoid": "sigmoid"}
_FROM_PREDICTION = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
_TO_PREDICTION = {v: k for k, v in _FROM_PREDICTION.items()}
# fixed_small_log: diffusers' step draws sqrt(beta~) * z either way.
_FROM_VARIANCE = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small",
                  "fixed_large": "fixed_large", "learned_range": "learned_range"}
_TO_VARIANCE = {"fixed_small": "fixed_small", "fixed_large": "fixed_large",
                "learned_range": "learned_range"}
_REFUSED_VARIANCE = {
    "learned": "diffusers reads the model's extra channels as the variance itself, "
               "ddpm-core's 'learned' as its logarithm",
    "fixed_large_log": "diffusers' DDPM step takes the square root of log(beta_t) (NaN)",
}
ENTRY_NAMES = SCHEDULE_ENTRIES  # what write_scheduler_config may name


@dataclass(frozen=True)
class SchedulerSettings:
    """What a ``DDPMScheduler`` config means for ddpm-core.

    Attributes
    ----------
    schedule : dict
        The run.json schedule entry (see the module docstring).
    prediction : {"eps", "x0", "v"}
    variance : {"fixed_small", "fixed_large", "learned_range"}
    clip : float or None
        x0_hat is clipped to [-clip, clip] before the mean is formed; None: not clipped.
    """

    schedule: dict[str, Any]
    prediction: str
    variance: str
    clip: float | None


# --------------------------------------------------------------------------- checks

def _fail(field: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"scheduler config field {field}={value!r} cannot be represented: {allowed}")


def _number(field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(field, value, "expected a finite number")
    return float(value)


def _flag(field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(field, value, "expected true or false")
    return value


def _count(field: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(field, value, f"expected an integer >= {low}")
    return value


def _choice(field: str, value: Any, table: Mapping[str, str]) -> str:
    if value not in table:
        raise _fail(field, value, f"allowed values are {sorted(table)}")
    return table[value]


def merged_config(config: Mapping[str, Any], class_name: str, defaults: Mapping[str, Any], *,
                  ignored: tuple[str, ...] = ()) -> dict[str, Any]:
    """A diffusers config (``config.json``) with the class's defaults filled in.

    ``_class_name`` must be ``class_name`` (when present); ``_...`` metadata and the
    ``ignored`` fields are dropped; any other field the class does not know is an error.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a mapping (a {class_name} config), got {type(config).__name__}")
    cls = config.get("_class_name", class_name)
    if cls != class_name:
        raise ValueError(f"{class_name} config field _class_name={cls!r} cannot be represented: "
                         f"only {class_name} configs are read")
    unknown = sorted(k for k in config if not k.startswith("_") and k not in defaults and k not in ignored)
    if unknown:
        raise ValueError(f"{class_name} config has fields that {class_name} does not know: {unknown}")
    return {**defaults, **{k: v for k, v in config.items() if k in defaults}}


def _merged(config: Mapping[str, Any]) -> dict[str, Any]:
    merged = merged_config(config, "DDPMScheduler", SCHEDULER_DEFAULTS, ignored=(*_IGNORED, "predict_epsilon"))
    legacy = config.get("predict_epsilon", True)
    if legacy is not True:  # diffusers < 0.10 spelled prediction_type="sample" like this
        raise _fail("predict_epsilon", legacy, "write prediction_type='sample' instead")
    return merged


# --------------------------------------------------------------------------- diffusers -> ours

def _read_entry(c: Mapping[str, Any]) -> dict[str, Any]:
    T = _count("num_train_timesteps", c["num_train_timesteps"], 1)
    if c["trained_betas"] is not None:
        betas = c["trained_betas"]
        if not isinstance(betas, (list, tuple)) or len(betas) != T:
            size = len(betas) if isinstance(betas, (list, tuple)) else type(betas).__name__
            raise ValueError(f"scheduler config field trained_betas must be a list of "
                             f"num_train_timesteps={T} numbers, got {size}")
        entry: dict[str, Any] = {"name": "betas", "num_timesteps": T,
                                 "betas": [_number("trained_betas[i]", b) for b in betas]}
    else:
        name = _choice("beta_schedule", c["beta_schedule"], _FROM_BETA_SCHEDULE)
        entry = {"name": name, "num_timesteps": T,
                 "beta_start": _number("beta_start", c["beta_start"]),
                 "beta_end": _number("beta_end", c["beta_end"])}
    if _flag("rescale_betas_zero_snr", c["rescale_betas_zero_snr"]):
        entry["rescale_zero_terminal_snr"] = True
    return entry


def _read_clip(c: Mapping[str, Any]) -> float | None:
    if _flag("thresholding", c["thresholding"]):
        raise _fail("thresholding", True, "diffusers bounds the dynamic threshold by "
                    "sample_max_value and ddpm-core's threshold= has no bound; use clip_sample")
    rng = _number("clip_sample_range", c["clip_sample_range"])
    if not rng > 0:
        raise _fail("clip_sample_range", rng, "expected a number > 0")
    return rng if _flag("clip_sample", c["clip_sample"]) else None


def _check_inference_fields(c: Mapping[str, Any]) -> None:
    """Fields that only choose diffusers' inference chain: checked, not stored."""
    if c["timestep_spacing"] not in SPACINGS:
        raise _fail("timestep_spacing", c["timestep_spacing"], f"allowed values are {list(SPACINGS)}")
    _count("steps_offset", c["steps_offset"], 0)
    _number("dynamic_thresholding_ratio", c["dynamic_thresholding_ratio"])
    _number("sample_max_value", c["sample_max_value"])


def read_scheduler_config(config: Mapping[str, Any]) -> SchedulerSettings:
    """Check a ``DDPMScheduler`` config and translate it.

    Parameters
    ----------
    config : mapping
        The contents of ``scheduler/scheduler_config.json``; absent fields take
        diffusers' defaults (:data:`SCHEDULER_DEFAULTS`).

    Returns
    -------
    SchedulerSettings

    Raises
    ------
    ValueError
        Naming the first field that cannot be represented (unknown fields, an unknown
        ``beta_schedule``, ``variance_type="learned"`` or ``"fixed_large_log"``,
        ``thresholding=True``, a ``trained_betas`` of the wrong length, ...).

    Examples
    --------
    >>> s = read_scheduler_config({"beta_schedule": "linear", "variance_type": "fixed_large"})
    >>> s.schedule, s.prediction, s.variance, s.clip
    ({'name': 'linear', 'num_timesteps': 1000, 'beta_start': 0.0001, 'beta_end': 0.02}, 'eps', 'fixed_large', 1.0)
    """
    c = _merged(config)
    variance = c["variance_type"]
    if variance in _REFUSED_VARIANCE:
        raise _fail("variance_type", variance, _REFUSED_VARIANCE[variance])
    settings = SchedulerSettings(
        schedule=_read_entry(c),
        prediction=_choice("prediction_type", c["prediction_type"], _FROM_PREDICTION),
        variance=_choice("variance_type", variance, _FROM_VARIANCE),
        clip=_read_clip(c))
    _check_inference_fields(c)
    schedule_from_entry(settings.schedule)  # the betas themselves must be valid
    return settings


# --------------------------------------------------------------------------- ours -> diffusers

def _clip_range(clip: Any) -> float | None:
    if clip is None or clip is False:
        return None
    if clip is True:
        return 1.0
    if isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0:
        return float(clip)
    raise ValueError(f"clip must be None, True or a number c > 0 (clip to [-c, c]) to be written "
                     f"as clip_sample_range; got clip={clip!r}")


def write_scheduler_config(schedule: Mapping[str, Any], *, prediction: str = "eps",
                           variance: str = "fixed_small", clip: Any = 1.0) -> dict[str, Any]:
    """The ``DDPMScheduler`` config (a JSON-able dict) of a schedule entry and sampler settings.

    Every field of :data:`SCHEDULER_DEFAULTS` is written, so the file means the same in any
    diffusers version. :func:`read_scheduler_config` inverts it exactly (up to the names
    ``quadratic`` -> ``scaled_linear``, which are the same schedule).

    Raises
    ------
    ValueError
        For what diffusers cannot express: ``prediction="mean"``, ``variance="learned"``,
        an unknown schedule name, a clip that is not a symmetric range.

    Examples
    --------
    >>> cfg = write_scheduler_config({"name": "cosine", "num_timesteps": 4000}, variance="learned_range")
    >>> cfg["beta_schedule"], cfg["num_train_timesteps"], cfg["variance_type"]
    ('squaredcos_cap_v2', 4000, 'learned_range')
    """
    name = entry_value(schedule, "name")
    if name not in ENTRY_NAMES:
        raise ValueError(f"schedule name must be one of {ENTRY_NAMES} to be written for diffusers, "
                         f"got name={name!r}")
    if prediction not in _TO_PREDICTION:
        raise ValueError(f"prediction={prediction!r} has no diffusers prediction_type; "
                         f"allowed: {sorted(_TO_PREDICTION)}")
    if variance not in _TO_VARIANCE:
        why = f" ({_REFUSED_VARIANCE[variance]})" if variance in _REFUSED_VARIANCE else ""
        raise ValueError(f"variance={variance!r} has no diffusers variance_type{why}; "
                         f"allowed: {sorted(_TO_VARIANCE)}")
    rng = _clip_range(clip)
    config = dict(SCHEDULER_DEFAULTS, _class_name="DDPMScheduler",
                  num_train_timesteps=int(entry_value(schedule, "num_timesteps")),
                  prediction_type=_TO_PREDICTION[prediction], variance_type=_TO_VARIANCE[variance],
                  clip_sample=rng is not None, clip_sample_range=1.0 if rng is None else rng,
                  rescale_betas_zero_snr=bool(schedule.get("rescale_zero_terminal_snr", False)))
    if name == "betas":
        config["trained_betas"] = [float(b) for b in entry_value(schedule, "betas")]
    else:
        config["beta_schedule"] = _TO_BETA_SCHEDULE[name]
        for key in ("beta_start", "beta_end"):  # cosine ignores them; carried for the round trip
            config[key] = float(schedule.get(key, SCHEDULER_DEFAULTS[key]))
    schedule_from_entry(schedule)  # refuse to write a schedule that cannot be built
    return config


# --------------------------------------------------------------------------- Schedule <-> config

def schedule_from_diffusers_config(config: Any) -> Schedule:
    """The schedule of a diffusers ``DDPMScheduler`` config (``scheduler_config.json``).

    Covers ``beta_schedule`` linear, scaled_linear, squaredcos_cap_v2 and sigmoid, given
    ``trained_betas`` and ``rescale_betas_zero_snr``; the tables are computed in float64.
    Any field that cannot be represented raises ``ValueError`` naming it (see
    :func:`read_scheduler_config`, which also returns the prediction, variance and clipping).

    Examples
    --------
    >>> float(schedule_from_diffusers_config({"beta_schedule": "linear"}).betas[-1])
    0.02
    """
    return schedule_from_entry(read_scheduler_config(config).schedule)


def schedule_to_diffusers_config(schedule: Schedule, *, prediction: str = "eps", variance: str = "fixed_small",
                                 clip: Any = 1.0) -> dict[str, Any]:
    """A diffusers ``DDPMScheduler`` config (JSON-able dict) that reproduces ``schedule``.

    The linear and cosine schedules are written by name, any other as ``trained_betas``
    (diffusers rounds those to float32). ``prediction``, ``variance`` and ``clip`` (x0
    clipped to [-clip, clip], or None) become ``prediction_type``, ``variance_type`` and
    ``clip_sample``/``clip_sample_range``. A respaced schedule raises ``ValueError``.

    Examples
    --------
    >>> from ddpm_core.schedules import Schedule
    >>> schedule_to_diffusers_config(Schedule.linear(1000), variance="fixed_large")["beta_schedule"]
    'linear'
    """
    return write_scheduler_config(schedule_entry(schedule), prediction=prediction, variance=variance, clip=clip)
