"""Framework-neutral model presets: the U-Net shape and the training defaults.

A :class:`Preset` is a frozen value read by both backends (PyTorch and JAX), so the
two build the *same* network from it. Nothing here imports a framework.

The paper's presets (Ho et al. 2020, Appendix B and the official code):

=========== ===== ============ ===== ===== ======= ====== ===== ===========
preset      size  ch_mult      ch    attn  dropout lr     batch parameters
=========== ===== ============ ===== ===== ======= ====== ===== ===========
cifar10     32    1,2,2,2      128   16    0.1     2e-4   128   35,746,307
celebahq256 256   1,1,2,2,4,4  128   16    0.0     2e-5   64    113,673,219
lsun256     256   1,1,2,2,4,4  128   16    0.0     2e-5   64    113,673,219
=========== ===== ============ ===== ===== ======= ====== ===== ===========

plus small presets that train on a CPU (``mnist``, ``digits``) and a ``tiny`` one for tests.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PREDICTIONS",
    "SCHEDULES",
    "VARIANCES",
    "WEIGHTINGS",
    "Preset",
    "TrainConfig",
    "UNetConfig",
    "get_preset",
    "list_presets",
    "output_channels",
    "unet_config",
    "with_head",
]

PREDICTIONS = ("eps", "x0", "v", "mean")
VARIANCES = ("fixed_small", "fixed_large", "learned", "learned_range")
SCHEDULES = ("linear", "quadratic", "sigmoid", "scaled_linear", "cosine")
WEIGHTINGS = ("none", "min_snr")  # L_simple as in the paper, or min-SNR-gamma


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {name}={value!r}")


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {name}={value!r}")


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
    _check_positive_int("channels", channels)
    _check_choice("prediction", prediction, PREDICTIONS)
    _check_choice("variance", variance, VARIANCES)
    return 2 * channels if variance in ("learned", "learned_range") else channels


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
            _check_positive_int(name, getattr(self, name))
        if not self.ch_mult:
            raise ValueError("ch_mult must have at least one level, got ch_mult=()")
        for m in self.ch_mult:
            _check_positive_int("ch_mult[i]", m)
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
    >>> with_head(get_preset("cifar10").unet, variance="learned").out_channels
    6
    """
    out = output_channels(config.in_channels, prediction=prediction, variance=variance)
    return dataclasses.replace(config, out_channels=out)


def unet_config(preset_or_config: Preset | UNetConfig | str, *, prediction: str = "eps",
                variance: str = "fixed_small") -> UNetConfig:
    """The U-Net config of a preset, a preset name or a config, with the head for the
    parameterisation (what both backends' ``build_unet`` build).

    Examples
    --------
    >>> unet_config("tiny", variance="learned_range").out_channels
    2
    """
    if isinstance(preset_or_config, str):
        preset_or_config = get_preset(preset_or_config)
    config = preset_or_config.unet if isinstance(preset_or_config, Preset) else preset_or_config
    if not isinstance(config, UNetConfig):
        raise TypeError(f"preset_or_config must be a Preset, UNetConfig or preset name, "
                        f"got {type(preset_or_config).__name__}")
    return with_head(config, prediction=prediction, variance=variance)


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
            _check_positive_int(name, getattr(self, name))
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) \
                or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be an int >= 0, got "
                             f"warmup_steps={self.warmup_steps!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got lr={self.lr!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0 or None, got grad_clip={self.grad_clip!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got ema_decay={self.ema_decay!r}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got "
                             f"beta_start={self.beta_start!r}, beta_end={self.beta_end!r}")
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("loss", self.loss, ("simple", "vlb", "hybrid"))
        _check_choice("prediction", self.prediction, PREDICTIONS)
        _check_choice("variance", self.variance, VARIANCES)
        _check_choice("weighting", self.weighting, WEIGHTINGS)
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


@dataclass(frozen=True)
class Preset:
    """A named model: U-Net shape, training defaults and default dataset.

    ``image_size`` and ``channels`` are read from ``unet``.
    """

    name: str
    unet: UNetConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    data: str = ""

    @property
    def image_size(self) -> int:
        return self.unet.image_size

    @property
    def channels(self) -> int:
        return self.unet.in_channels

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict: ``{"name", "data", "image_size", "channels", "unet", "train"}``."""
        return {"name": self.name, "data": self.data, "image_size": self.image_size,
                "channels": self.channels, "unet": self.unet.to_dict(),
                "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preset:
        """Inverse of :meth:`to_dict` (``image_size``/``channels`` are checked)."""
        unet = UNetConfig.from_dict(d["unet"])
        for key, value in (("image_size", unet.image_size), ("channels", unet.in_channels)):
            if key in d and d[key] != value:
                raise ValueError(f"{key}={d[key]!r} disagrees with the unet config ({value})")
        return cls(name=d["name"], unet=unet, train=TrainConfig.from_dict(d.get("train", {})),
                   data=d.get("data", ""))


def _known_fields(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}; allowed: {sorted(names)}")
    return dict(d)


def _paper_256(name: str, data: str, num_steps: int) -> Preset:
    unet = UNetConfig(image_size=256, in_channels=3, out_channels=3, ch=128,
                      ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, attn_resolutions=(16,),
                      dropout=0.0)
    train = TrainConfig(lr=2e-5, batch_size=64, num_steps=num_steps)
    return Preset(name, unet, train, data)


_PRESETS: dict[str, Preset] = {
    # Paper, CIFAR10: 35.7M parameters, 800k steps, FID 3.17.
    "cifar10": Preset(
        "cifar10",
        UNetConfig(image_size=32, in_channels=3, out_channels=3, ch=128,
                   ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                   dropout=0.1),
        TrainConfig(),
        "cifar10"),
    # Paper, CelebA-HQ 256: 0.5M steps; LSUN 256 (church: 1.2M steps).
    "celebahq256": _paper_256("celebahq256", "celebahq256", 500_000),
    "lsun256": _paper_256("lsun256", "lsun256", 1_200_000),
    # Small enough to train on a 2-core CPU in minutes (~0.3 s per step of 64): 28 -> 14 -> 7.
    # EMA 0.995 (a 200-step window) because a CPU run is only a few thousand steps long;
    # lr 2e-3 because at 2,000 steps it beat 1e-3 on every paired seed, on both backends
    # (benchmarks/quality.py; README, "Sample quality per CPU minute").
    "mnist": Preset(
        "mnist",
        UNetConfig(image_size=28, in_channels=1, out_channels=1, ch=16, ch_mult=(1, 2, 4),
                   num_res_blocks=1, attn_resolutions=(7,), dropout=0.0, num_groups=8),
        TrainConfig(lr=2e-3, warmup_steps=100, batch_size=64, ema_decay=0.995,
                    random_flip=False, num_steps=2000, variance="fixed_small"),
        "mnist"),
    # scikit-learn's 8x8 digits: 8 -> 4. mnist's recipe.
    "digits": Preset(
        "digits",
        UNetConfig(image_size=8, in_channels=1, out_channels=1, ch=32, ch_mult=(1, 2),
                   num_res_blocks=1, attn_resolutions=(4,), dropout=0.0, num_groups=8),
        TrainConfig(lr=2e-3, warmup_steps=100, batch_size=128, ema_decay=0.995,
                    random_flip=False, num_steps=3000, variance="fixed_small"),
        "digits"),
    # For tests: every kind of block (shortcut, attention, both resamplers), 177k params.
    "tiny": Preset(
        "tiny",
        UNetConfig(image_size=8, in_channels=1, out_channels=1, ch=16, ch_mult=(1, 2),
                   num_res_blocks=1, attn_resolutions=(4,), dropout=0.0, num_groups=8),
        TrainConfig(lr=1e-3, warmup_steps=10, batch_size=16, ema_decay=0.9,
                    random_flip=False, num_steps=100, variance="fixed_small"),
        "digits"),
}


def list_presets() -> list[str]:
    """Names of the built-in presets.

    Examples
    --------
    >>> list_presets()
    ['cifar10', 'celebahq256', 'lsun256', 'mnist', 'digits', 'tiny']
    """
    return list(_PRESETS)


def get_preset(name: str) -> Preset:
    """The built-in preset called ``name``.

    Raises
    ------
    ValueError
        If ``name`` is not one of :func:`list_presets`.

    Examples
    --------
    >>> get_preset("cifar10").unet.ch_mult
    (1, 2, 2, 2)
    """
    try:
        return _PRESETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown preset name={name!r}; valid names: {list_presets()}") \
            from None
