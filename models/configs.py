"""The U-Net's shape and the training defaults, framework-neutral (no framework imports).

:class:`UNetConfig` describes the paper's U-Net and :class:`TrainConfig` its training
setup; both backends build the *same* network from a config. The named configs are in
:mod:`ddpm_core.models.presets`. The vocabulary (predictions, variances, schedules, losses,
weightings) is the core's: ``ddpm_core.parameterization``, ``ddpm_core.schedules``,
``ddpm_core.losses``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from ddpm_core.checks import check_choice, check_int
from ddpm_core.losses import LOSSES
from ddpm_core.losses import WEIGHTINGS as _CORE_WEIGHTINGS
from ddpm_core.parameterization import LEARNED_VARIANCES, PREDICTIONS, VARIANCES
from ddpm_core.schedules import SCHEDULES

__all__ = [
    "PREDICTIONS",
    "SCHEDULES",
    "VARIANCES",
    "WEIGHTINGS",
    "TrainConfig",
    "UNetConfig",
    "output_channels",
    "with_head",
]

WEIGHTINGS = ("none", *_CORE_WEIGHTINGS)  # L_simple as in the paper, or the core's weightings


def output_channels(channels: int, *, prediction: str = "eps",
                    variance: str = "fixed_small") -> int:
    """Channels of the U-Net's output head for a parameterisation.

    Parameters
    ----------
    channels : int
        Image channels C.
    prediction : {"eps", "x0", "v", "mean"}
        What the first C output channels predict (all need C channels).
    variance : {"fixed_small", "fixed_large", "learned", "learned_range"}
        ``"learned"`` / ``"learned_range"`` add C channels for the (log-)variance.

    Returns
    -------
    int
        C for a fixed variance, 2C for a learned one.

    Examples
    --------
    >>> output_channels(3, variance="learned_range")
    6
    """
    check_int("channels", channels, 1)
    check_choice("prediction", prediction, PREDICTIONS)
    check_choice("variance", variance, VARIANCES)
    return 2 * channels if variance in LEARNED_VARIANCES else channels


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the paper's U-Net (PixelCNN++ backbone, Ho et al. 2020, Appendix B).

    Attributes
    ----------
    image_size : int
        Height = width of the input; must be divisible by ``2 ** (len(ch_mult) - 1)``.
    in_channels, out_channels : int
        Image channels C and output channels (C, or 2C for a learned variance; see
        :func:`output_channels` and :func:`with_head`).
    ch : int
        Base width; the time embedding has ``4 * ch`` features.
    ch_mult : tuple of int
        Width multiplier per resolution level (one level per entry).
    num_res_blocks : int
        Residual blocks per level on the way down (the way up has one more).
    attn_resolutions : tuple of int
        Resolutions (feature-map sizes) that get a self-attention block after each
        residual block. Each must be one of the U-Net's resolutions.
    dropout : float
        Dropout rate in [0, 1) inside the residual blocks.
    resamp_with_conv : bool
        Strided 3x3 convolution to downsample and nearest + 3x3 convolution to upsample
        (True), or average pooling / plain nearest upsampling (False).
    num_groups : int
        GroupNorm groups; must divide ``ch`` and every ``ch * m``.
    norm_eps : float
        GroupNorm epsilon (1e-6, as TensorFlow's ``group_norm`` in the official code).
    num_classes : int
        K >= 1 for a class-conditional U-Net, 0 (the default) for an unconditional one.
        A conditional U-Net embeds its label y in [0, K] with a table of K + 1 rows
        (``label_emb``, 4 ch wide) added to the time embedding; row K is the null label
        ("no label") of classifier-free guidance. A run.json written before this field
        existed has no key for it and reads as 0.
    """

    image_size: int
    in_channels: int
    out_channels: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    dropout: float = 0.0
    resamp_with_conv: bool = True
    num_groups: int = 32
    norm_eps: float = 1e-6
    num_classes: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))
        for name in ("image_size", "in_channels", "out_channels", "ch",
                     "num_res_blocks", "num_groups"):
            check_int(name, getattr(self, name), 1)
        if not self.ch_mult:
            raise ValueError("ch_mult must have at least one level, got ch_mult=()")
        for m in self.ch_mult:
            check_int("ch_mult[i]", m, 1)
        self._check_resolutions()
        for width in (self.ch, *(self.ch * m for m in self.ch_mult)):
            if width % self.num_groups:
                raise ValueError(
                    f"num_groups must divide ch and every ch * ch_mult[i], got "
                    f"num_groups={self.num_groups} for width {width}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got dropout={self.dropout!r}")
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps must be > 0, got norm_eps={self.norm_eps!r}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0 (0: unconditional), got "
                             f"num_classes={self.num_classes!r}")

    def _check_resolutions(self) -> None:
        factor = 2 ** (len(self.ch_mult) - 1)
        if self.image_size % factor:
            raise ValueError(
                f"image_size must be divisible by 2**(len(ch_mult) - 1) = {factor}, got "
                f"image_size={self.image_size} with ch_mult={self.ch_mult}")
        for r in self.attn_resolutions:
            if r not in self.resolutions:
                raise ValueError(
                    f"attn_resolutions must be among the U-Net's resolutions "
                    f"{self.resolutions}, got attn_resolutions={self.attn_resolutions}")

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Feature-map size of each level, e.g. (32, 16, 8, 4) for cifar10."""
        return tuple(self.image_size // 2**i for i in range(len(self.ch_mult)))

    @property
    def temb_channels(self) -> int:
        """Width of the time-embedding MLP, ``4 * ch``."""
        return 4 * self.ch

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, a missing
        ``num_classes`` (a file from before conditional models) means 0."""
        return cls(**_known_fields(cls, d))


def with_head(config: UNetConfig, *, prediction: str = "eps",
              variance: str = "fixed_small") -> UNetConfig:
    """Copy of ``config`` whose output head fits ``prediction`` and ``variance``.

    Examples
    --------
    >>> from ddpm_core.models import get_preset
    >>> with_head(get_preset("cifar10").unet, variance="learned").out_channels
    6
    """
    out = output_channels(config.in_channels, prediction=prediction, variance=variance)
    return dataclasses.replace(config, out_channels=out)


@dataclass(frozen=True)
class TrainConfig:
    """Training defaults (docs/equations.md, "The paper's CIFAR10 setup").

    Attributes
    ----------
    lr : float
        Adam learning rate after warm-up.
    warmup_steps : int
        Linear learning-rate warm-up from 0 (0 disables it).
    batch_size : int
        Global batch size.
    grad_clip : float or None
        Clip the gradients' global norm at this value (None: no clipping).
    ema_decay : float
        Decay of the exponential moving average of the weights, in [0, 1).
    random_flip : bool
        Random horizontal flips of the training images (never for digits).
    num_steps : int
        Default length of a training run.
    schedule : str
        Beta schedule name (``ddpm_core.Schedule`` constructor).
    num_timesteps, beta_start, beta_end
        Schedule parameters: T = 1000, linear 1e-4 .. 0.02 as in the paper.
    loss, prediction, variance : str
        Default objective and parameterisation (paper: L_simple, eps, sigma^2 = beta).
    weighting : {"none", "min_snr"}
        Per-timestep weights of L_simple: none (the paper's), or min-SNR-gamma (Hang et
        al. 2023, ``ddpm_core.loss_weights``) with ``min_snr_gamma``.
    min_snr_gamma : float
        gamma of the min-SNR weighting (> 0; used only with ``weighting="min_snr"``).
    """

    lr: float = 2e-4
    warmup_steps: int = 5000
    batch_size: int = 128
    grad_clip: float | None = 1.0
    ema_decay: float = 0.9999
    random_flip: bool = True
    num_steps: int = 800_000
    schedule: str = "linear"
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    loss: str = "simple"
    prediction: str = "eps"
    variance: str = "fixed_large"
    weighting: str = "none"
    min_snr_gamma: float = 5.0

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_steps", "num_timesteps"):
            check_int(name, getattr(self, name), 1)
        check_int("warmup_steps", self.warmup_steps, 0)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got lr={self.lr!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got grad_clip={self.grad_clip!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got ema_decay={self.ema_decay!r}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got "
                             f"beta_start={self.beta_start!r}, beta_end={self.beta_end!r}")
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("loss", self.loss, LOSSES)
        check_choice("prediction", self.prediction, PREDICTIONS)
        check_choice("variance", self.variance, VARIANCES)
        check_choice("weighting", self.weighting, WEIGHTINGS)
        if not (math.isfinite(self.min_snr_gamma) and self.min_snr_gamma > 0):
            raise ValueError(f"min_snr_gamma must be a finite number > 0, got "
                             f"min_snr_gamma={self.min_snr_gamma!r}")
        if self.weighting != "none" and self.loss != "simple":
            raise ValueError(f"weighting={self.weighting!r} weights L_simple; it needs "
                             f"loss='simple', got loss={self.loss!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; missing keys take the defaults."""
        return cls(**_known_fields(cls, d))


def _known_fields(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; allowed: {sorted(names)}")
    return dict(d)
