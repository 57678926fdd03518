"""Training options: ``TrainOptions``, their validation, and their resolution against a preset.

``TrainOptions`` holds what a user asks for (``None`` = the preset's default);
:func:`resolve_options` turns it into the ``(preset, unet, train)`` configs that both
backends build from.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import numpy as np

from ddpm_core.checks import check_choice, check_int
from ddpm_core.losses import LOSSES
from ddpm_core.models import SCHEDULES, WEIGHTINGS
from ddpm_core.parameterization import LEARNED_VARIANCES, PREDICTIONS, VARIANCES

__all__ = [
    "BACKENDS",
    "DEFAULT_LABEL_DROPOUT",
    "DEVICES",
    "LOSSES",
    "PREDICTIONS",
    "RUN_DEFAULTS",
    "SCHEDULES",
    "TIMESTEP_SAMPLERS",
    "VARIANCES",
    "WEIGHTINGS",
    "TrainOptions",
    "check_loss_variance",
    "resolve_options",
    "with_defaults",
]

BACKENDS = ("torch", "jax")
TIMESTEP_SAMPLERS = ("uniform", "loss-second-moment")
DEVICES = ("auto", "cpu", "cuda", "gpu", "tpu")
# What an unset (None) run option means for a new run; a resumed run takes the stored value.
RUN_DEFAULTS: dict[str, Any] = {"seed": 0, "timestep_sampler": "uniform", "log_every": 50,
                                "sample_every": 0, "ckpt_every": 1000, "sample_n": 64,
                                "compile": False, "device": "auto", "progress": True,
                                "tensorboard": False, "class_conditional": False}
# The label dropout of a class-conditional run when --label-dropout is not given (Ho &
# Salimans 2022 train with 0.1 or 0.2); an unconditional run has none.
DEFAULT_LABEL_DROPOUT = 0.1


def _check_float(name: str, value: Any, low: float, high: float, *, optional: bool = True,
                 low_open: bool = True, high_open: bool = False) -> None:
    if value is None and optional:
        return
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value))
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must be a number in {lo}{low}, {high}{hi}; got {value!r}")


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """Everything ``ddpm train`` needs; ``None`` means "unset".

    An unset option takes the preset's default (training settings) or ``RUN_DEFAULTS``
    (seed, cadence, device, ...) on a new run, and the run's stored value on a resumed
    one (:func:`ddpm_core.app.run.resume.resume_options`). :func:`with_defaults` fills them.

    Parameters
    ----------
    preset : str
        Model preset name (``ddpm_core.models.list_presets()``).
    out : str
        Run directory (created; with ``resume`` it must hold a run of the same preset).
    backend : {"torch", "jax"}
    steps : int, optional
        Total optimizer steps (absolute, also when resuming).
    resume : bool
        Continue from the checkpoint in ``out``.
    seed : int
        Seeds the initial weights, data order, flips, timesteps and noise.
    batch_size, lr, warmup, grad_clip, ema_decay, dropout, random_flip : optional
        Overrides of the preset's training defaults (docs/equations.md, "The paper's
        CIFAR10 setup": 128, 2e-4, 5000, 1.0, 0.9999, 0.1, True). ``batch_size`` is the
        global batch.
    loss : {"simple", "vlb", "hybrid"}, optional
        L_simple (eq. 14), the bound (eq. 5) or L_simple + lambda * L_vlb.
    prediction : {"eps", "x0", "v", "mean"}, optional
    variance : {"fixed_small", "fixed_large", "learned", "learned_range"}, optional
    timestep_sampler : {"uniform", "loss-second-moment"}
    data : str, optional
        Dataset name or path (``ddpm_core.data.load_dataset``); default the preset's.
    init : str, optional
        A run directory (trained or imported) whose ``model.safetensors`` and
        ``ema.safetensors`` start this new run (fine-tuning); its U-Net must be this
        run's. Only for a new run (not with ``resume``).
    log_every, sample_every, ckpt_every : int
        Intervals in steps; 0 disables (a checkpoint is always written at the end).
    sample_n : int
        Images in each EMA sample grid.
    compile : bool
        ``torch.compile`` / ``jax.jit`` extras on accelerators.
    device : {"auto", "cpu", "cuda", "gpu", "tpu"}
    progress : bool
        Print a progress line to stderr.
    tensorboard : bool
        Write TensorBoard event files under ``out/tensorboard`` (needs tensorboardX, the
        ``tensorboard`` extra; ``ddpm_core.app.training.tensorboard``); only the main process
        of a distributed run writes them.
    schedule : str, optional
        Beta schedule (``ddpm_core.Schedule`` names: linear, cosine, ...).
    weighting : {"none", "min_snr"}, optional
        Per-timestep weights of L_simple (``ddpm_core.loss_weights``): none (the paper's),
        or min-SNR-gamma (Hang et al. 2023) with ``min_snr_gamma`` (default 5).
    min_snr_gamma : float > 0, optional
    ch, num_res_blocks : int, optional
        Overrides of the preset U-Net's base width and residual blocks per level.
    class_conditional : bool
        Train a class-conditional U-Net on the data's labels (``num_classes`` = K of the
        data, ``ddpm_core.data.load_labeled_dataset``). Fixed for the life of the run.
    label_dropout : float in [0, 1), optional
        Class-conditional runs only: the probability that a label is replaced by the null
        label K (classifier-free guidance, Ho & Salimans 2022); default
        ``DEFAULT_LABEL_DROPOUT`` (0.1). Fixed for the life of the run.
    """

    preset: str
    out: str
    backend: str = "torch"
    steps: int | None = None
    resume: bool = False
    seed: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    warmup: int | None = None
    grad_clip: float | None = None
    ema_decay: float | None = None
    dropout: float | None = None
    random_flip: bool | None = None
    loss: str | None = None
    prediction: str | None = None
    variance: str | None = None
    timestep_sampler: str | None = None
    data: str | None = None
    init: str | None = None
    log_every: int | None = None
    sample_every: int | None = None
    ckpt_every: int | None = None
    sample_n: int | None = None
    compile: bool | None = None
    device: str | None = None
    progress: bool | None = None
    tensorboard: bool | None = None
    class_conditional: bool | None = None
    label_dropout: float | None = None
    schedule: str | None = None
    weighting: str | None = None
    min_snr_gamma: float | None = None
    ch: int | None = None
    num_res_blocks: int | None = None

    def __post_init__(self) -> None:
        if self.init is not None and (not isinstance(self.init, (str, os.PathLike))
                                      or not str(self.init)):
            raise ValueError(f"init must be a run directory path; got {self.init!r}")
        if self.init is not None and self.resume:
            raise ValueError("init starts a new run from another run's weights; it cannot be "
                             f"combined with resume (got init={str(self.init)!r})")
        if not isinstance(self.preset, str) or not self.preset:
            raise ValueError(f"preset must be a non-empty preset name; got {self.preset!r}")
        if not isinstance(self.out, (str, os.PathLike)) or not str(self.out):
            raise ValueError(f"out must be a directory path; got {self.out!r}")
        check_choice("backend", self.backend, BACKENDS)
        for name, allowed in (("loss", LOSSES), ("prediction", PREDICTIONS),
                              ("variance", VARIANCES)):
            if getattr(self, name) is not None:
                check_choice(name, getattr(self, name), allowed)
        for name, allowed in (("timestep_sampler", TIMESTEP_SAMPLERS), ("device", DEVICES),
                              ("schedule", SCHEDULES), ("weighting", WEIGHTINGS)):
            if getattr(self, name) is not None:
                check_choice(name, getattr(self, name), allowed)
        for name in ("resume", "random_flip", "compile", "progress", "tensorboard",
                     "class_conditional"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise ValueError(f"{name} must be True or False; got {value!r}")
        check_int("steps", self.steps, 1, optional=True)
        check_int("seed", self.seed, 0, optional=True)
        check_int("batch_size", self.batch_size, 1, optional=True)
        check_int("warmup", self.warmup, 0, optional=True)
        for name in ("log_every", "sample_every", "ckpt_every"):
            check_int(name, getattr(self, name), 0, optional=True)
        check_int("sample_n", self.sample_n, 1, optional=True)
        check_int("ch", self.ch, 1, optional=True)
        check_int("num_res_blocks", self.num_res_blocks, 1, optional=True)
        _check_float("min_snr_gamma", self.min_snr_gamma, 0.0, math.inf, high_open=True)
        _check_float("lr", self.lr, 0.0, 1.0)
        _check_float("grad_clip", self.grad_clip, 0.0, math.inf, high_open=True)
        _check_float("ema_decay", self.ema_decay, 0.0, 1.0, low_open=False, high_open=True)
        _check_float("dropout", self.dropout, 0.0, 1.0, low_open=False, high_open=True)
        _check_float("label_dropout", self.label_dropout, 0.0, 1.0, low_open=False,
                     high_open=True)
        if self.label_dropout is not None and not self.class_conditional and not self.resume:
            raise ValueError("label_dropout is for class-conditional runs; add "
                             f"class_conditional=True (got label_dropout={self.label_dropout!r})")
        if self.loss is not None and self.variance is not None:
            check_loss_variance(self.loss, self.variance)

    def replace(self, **changes: Any) -> TrainOptions:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (paths as strings)."""
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        return d


def with_defaults(options: TrainOptions) -> TrainOptions:
    """``options`` with every unset run option (seed, cadence, device, ...) at ``RUN_DEFAULTS``
    and the label dropout of a class-conditional run at ``DEFAULT_LABEL_DROPOUT``."""
    options = options.replace(**{k: v for k, v in RUN_DEFAULTS.items()
                                 if getattr(options, k) is None})
    if options.label_dropout is None and options.class_conditional:
        options = options.replace(label_dropout=DEFAULT_LABEL_DROPOUT)
    return options


def check_loss_variance(loss: str, variance: str) -> None:
    """A learned variance needs a loss that trains it; "hybrid" needs a learned variance."""
    learned = variance in LEARNED_VARIANCES
    if loss == "hybrid" and not learned:
        raise ValueError("loss='hybrid' needs variance='learned' or 'learned_range'; "
                         f"got variance={variance!r}")
    if learned and loss == "simple":
        raise ValueError(f"variance={variance!r} is only trained by loss='vlb' or 'hybrid' "
                         "(L_simple gives the variance no gradient); got loss='simple'")


_TRAIN_OVERRIDES = {"steps": "num_steps", "warmup": "warmup_steps", "batch_size": "batch_size",
                    "lr": "lr", "grad_clip": "grad_clip", "ema_decay": "ema_decay",
                    "random_flip": "random_flip", "loss": "loss", "prediction": "prediction",
                    "variance": "variance", "schedule": "schedule", "weighting": "weighting",
                    "min_snr_gamma": "min_snr_gamma"}
_UNET_OVERRIDES = ("dropout", "ch", "num_res_blocks")


def resolve_options(options: TrainOptions, num_classes: int | None = None
                    ) -> tuple[Any, Any, Any]:
    """The preset with ``options``' overrides applied: ``(preset, unet, train)``.

    ``num_classes``: K of the training data, which a class-conditional run's U-Net takes
    (``unet.num_classes = K``); without it the U-Net of a class-conditional run is left
    unconditional (enough to validate the other options).

    ``train`` is the preset's ``TrainConfig`` with every non-``None`` override
    (steps -> num_steps, warmup -> warmup_steps, batch_size, lr, grad_clip, ema_decay,
    random_flip, loss, prediction, variance, schedule, weighting, min_snr_gamma); ``unet``
    has the output head for the prediction/variance and the ``dropout``, ``ch`` and
    ``num_res_blocks`` overrides. Both backends build from these.
    """
    from ddpm_core.models import get_preset, with_head

    preset = get_preset(options.preset)
    changes = {field: getattr(options, opt) for opt, field in _TRAIN_OVERRIDES.items()
               if getattr(options, opt) is not None}
    check_loss_variance(changes.get("loss", preset.train.loss),
                        changes.get("variance", preset.train.variance))
    train = dataclasses.replace(preset.train, **changes)
    unet = with_head(preset.unet, prediction=train.prediction, variance=train.variance)
    arch = {name: getattr(options, name) for name in _UNET_OVERRIDES
            if getattr(options, name) is not None}
    if "dropout" in arch:
        arch["dropout"] = float(arch["dropout"])
    if arch:
        try:
            unet = dataclasses.replace(unet, **arch)
        except ValueError as e:
            given = ", ".join(f"{k}={v!r}" for k, v in arch.items())
            raise ValueError(f"{given} does not fit preset {options.preset!r}: {e}") from None
    if options.class_conditional and num_classes is not None:
        check_int("num_classes", num_classes, 2)
        unet = dataclasses.replace(unet, num_classes=int(num_classes))
    return preset, unet, train
