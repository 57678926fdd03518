"""The U-Net's structure, written once for every backend (NumPy only).

Both backends build their layers from :func:`unet_plan`, and the canonical weight
layout (the PyTorch ``state_dict`` names and shapes) comes from
:func:`parameter_shapes`, so the PyTorch and Flax networks cannot drift apart.

The network (Ho et al. 2020, Appendix B; the official ``diffusion_utils/models/unet.py``)::

    temb = Dense(4ch) . SiLU . Dense(4ch) (sinusoid(t, ch))
         [+ label_emb[y]]                              # class-conditional: K + 1 rows
    h = conv_in(x)                                     # hs = [h]
    for level i:  num_res_blocks x (ResBlock [+ Attn])  # each output pushed to hs
                  Downsample (not on the last level)   # pushed to hs
    mid: ResBlock, Attn, ResBlock
    for level i reversed: (num_res_blocks + 1) x (ResBlock(concat(h, hs.pop())) [+ Attn])
                  Upsample (not on level 0)
    out = conv_out(SiLU(GroupNorm(h)))

The noise-aware classifier of Dhariwal & Nichol 2021 (:class:`ClassifierConfig`) is the
encoder half of the same network, with the same names: ``temb``, ``conv_in``, the down
levels and ``mid``, then ``logits = head(mean_HW(SiLU(GroupNorm(h))))``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ddpm_core.models.configs import UNetConfig
from ddpm_core.models.presets import Preset, unet_config

__all__ = [
    "BlockSpec",
    "ClassifierConfig",
    "LevelSpec",
    "UNetPlan",
    "check_conditioning",
    "classifier_config",
    "count_parameters",
    "parameter_shapes",
    "timestep_frequencies",
    "unet_plan",
]


@dataclass(frozen=True)
class BlockSpec:
    """One residual block: input/output widths and whether attention follows it."""

    in_ch: int
    out_ch: int
    attn: bool


@dataclass(frozen=True)
class LevelSpec:
    """One resolution level of the down or up path.

    ``resample`` is True where a Downsample (down path) or Upsample (up path) follows.
    """

    index: int
    resolution: int
    blocks: tuple[BlockSpec, ...]
    resample: bool


@dataclass(frozen=True)
class UNetPlan:
    """Channel plan of the whole U-Net; ``up`` is indexed by level (0 = full size)."""

    down: tuple[LevelSpec, ...]
    mid_ch: int
    up: tuple[LevelSpec, ...]


@dataclass(frozen=True)
class ClassifierConfig:
    """The noise-aware classifier p(y | x_t, t) of Dhariwal & Nichol 2021 (section 4.1).

    The encoder half of the U-Net ``unet`` (its time embedding, time-conditioned residual
    blocks, downsampling and attention where ``unet`` has them, and the middle block),
    then a pooling head: GroupNorm, SiLU, global average pool, Dense to ``num_classes``
    logits. Trained on noised inputs ``q_sample(x0, t, eps)`` at uniform t.

    Attributes
    ----------
    unet : UNetConfig
        The backbone; unconditional (``num_classes == 0``: the classifier is not given a
        label). Its ``out_channels`` is not used.
    num_classes : int
        K >= 2 classes, the width of the logits.
    """

    unet: UNetConfig
    num_classes: int

    def __post_init__(self) -> None:
        if not isinstance(self.unet, UNetConfig):
            raise TypeError(f"unet must be a UNetConfig, got {type(self.unet).__name__}")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) \
                or self.num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got num_classes={self.num_classes!r}")
        if self.unet.num_classes:
            raise ValueError(f"the classifier's backbone must be unconditional, got "
                             f"unet.num_classes={self.unet.num_classes}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict ``{"unet": {...}, "num_classes": K}``."""
        return {"unet": self.unet.to_dict(), "num_classes": self.num_classes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = sorted(set(d) - {"unet", "num_classes"})
        if unknown:
            raise ValueError(f"unknown ClassifierConfig keys {unknown}; allowed: ['num_classes', 'unet']")
        return cls(UNetConfig.from_dict(d["unet"]), d["num_classes"])


def classifier_config(preset_or_config: ClassifierConfig | Preset | UNetConfig | str,
                      num_classes: int | None = None) -> ClassifierConfig:
    """The classifier on the encoder of a preset's (a preset name's, a config's) U-Net.

    The backbone is made unconditional and its head neutral (``out_channels`` =
    ``in_channels``), so the classifier of a preset does not depend on how the diffusion
    model of that preset is conditioned or parameterised. A ``ClassifierConfig`` is
    returned as it is (then ``num_classes`` must not be given).

    Examples
    --------
    >>> classifier_config("mnist", 10).unet.attn_resolutions
    (7,)
    """
    if isinstance(preset_or_config, ClassifierConfig):
        if num_classes is not None:
            raise ValueError("num_classes comes from the ClassifierConfig; do not pass it too")
        return preset_or_config
    if num_classes is None:
        raise ValueError("num_classes is required for a classifier of a preset or U-Net config")
    return ClassifierConfig(dataclasses.replace(unet_config(preset_or_config), num_classes=0), num_classes)


def check_conditioning(num_classes: int, has_labels: bool, batch: int) -> None:
    """The error for a class-conditional network called without labels, or an
    unconditional one called with labels (never ignore labels silently)."""
    if not num_classes and has_labels:
        raise ValueError("this network is unconditional (num_classes=0) and takes no labels, "
                         "got y; build it with num_classes=K to condition on y")
    if num_classes and not has_labels:
        raise ValueError(f"this network is class-conditional (num_classes={num_classes}): pass "
                         f"labels y of shape ({batch},) in [0, {num_classes}] ({num_classes} is "
                         f"the null label)")


def check_input_shape(config: UNetConfig, shape: tuple[int, ...]) -> None:
    """The error for an input x whose shape is not (B, C, H, W) of ``config``."""
    ch, s = config.in_channels, config.image_size
    if len(shape) != 4 or tuple(shape[1:]) != (ch, s, s):
        raise ValueError(f"x must have shape (B, {ch}, {s}, {s}), got x.shape={tuple(shape)}")


def unet_plan(config: UNetConfig) -> UNetPlan:
    """Widths of every block, derived from ``config`` exactly as the official code does.

    Examples
    --------
    >>> from ddpm_core.models import get_preset
    >>> plan = unet_plan(get_preset("cifar10").unet)
    >>> plan.up[0].blocks[-1]
    BlockSpec(in_ch=256, out_ch=128, attn=False)
    """
    down, skips, ch = [], [config.ch], config.ch
    last = len(config.ch_mult) - 1
    for i, (mult, res) in enumerate(zip(config.ch_mult, config.resolutions, strict=True)):
        blocks = []
        for _ in range(config.num_res_blocks):
            blocks.append(BlockSpec(ch, config.ch * mult, res in config.attn_resolutions))
            ch = config.ch * mult
            skips.append(ch)
        if i != last:
            skips.append(ch)
        down.append(LevelSpec(i, res, tuple(blocks), i != last))
    mid_ch, up = ch, []
    for i in reversed(range(len(config.ch_mult))):
        res, blocks = config.resolutions[i], []
        for _ in range(config.num_res_blocks + 1):
            out = config.ch * config.ch_mult[i]
            blocks.append(BlockSpec(ch + skips.pop(), out, res in config.attn_resolutions))
            ch = out
        up.append(LevelSpec(i, res, tuple(blocks), i != 0))
    return UNetPlan(tuple(down), mid_ch, tuple(reversed(up)))


def _conv(name: str, out_ch: int, in_ch: int, k: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (out_ch, in_ch, k, k), f"{name}.bias": (out_ch,)}


def _linear(name: str, out_f: int, in_f: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (out_f, in_f), f"{name}.bias": (out_f,)}


def _norm(name: str, ch: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (ch,), f"{name}.bias": (ch,)}


def _resblock(name: str, b: BlockSpec, temb_ch: int) -> dict[str, tuple[int, ...]]:
    shapes = {**_norm(f"{name}.norm1", b.in_ch), **_conv(f"{name}.conv1", b.out_ch, b.in_ch, 3),
              **_linear(f"{name}.temb_proj", b.out_ch, temb_ch),
              **_norm(f"{name}.norm2", b.out_ch), **_conv(f"{name}.conv2", b.out_ch, b.out_ch, 3)}
    if b.in_ch != b.out_ch:
        shapes.update(_conv(f"{name}.nin_shortcut", b.out_ch, b.in_ch, 1))
    return shapes


def _attn(name: str, ch: int) -> dict[str, tuple[int, ...]]:
    shapes = _norm(f"{name}.norm", ch)
    for part in ("q", "k", "v", "proj_out"):
        shapes.update(_conv(f"{name}.{part}", ch, ch, 1))
    return shapes


def _level(prefix: str, level: LevelSpec, temb_ch: int, resample: str,
           with_conv: bool) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for j, b in enumerate(level.blocks):
        shapes.update(_resblock(f"{prefix}.block.{j}", b, temb_ch))
    for j, b in enumerate(level.blocks):
        if b.attn:
            shapes.update(_attn(f"{prefix}.attn.{j}", b.out_ch))
    if level.resample and with_conv:
        ch = level.blocks[-1].out_ch
        shapes.update(_conv(f"{prefix}.{resample}.conv", ch, ch, 3))
    return shapes


def _encoder_shapes(config: UNetConfig) -> dict[str, tuple[int, ...]]:
    """The time (and label) embedding, ``conv_in``, the down levels and ``mid``: the part
    of the U-Net that the classifier shares, under the same names."""
    plan, ch, temb_ch = unet_plan(config), config.ch, config.temb_channels
    shapes = {**_linear("temb.dense.0", temb_ch, ch), **_linear("temb.dense.1", temb_ch, temb_ch)}
    if config.num_classes:
        shapes["label_emb.weight"] = (config.num_classes + 1, temb_ch)  # row K: the null label
    shapes.update(_conv("conv_in", ch, config.in_channels, 3))
    for level in plan.down:
        shapes.update(_level(f"down.{level.index}", level, temb_ch, "downsample",
                             config.resamp_with_conv))
    mid = BlockSpec(plan.mid_ch, plan.mid_ch, True)
    shapes.update({**_resblock("mid.block_1", mid, temb_ch), **_attn("mid.attn_1", plan.mid_ch),
                   **_resblock("mid.block_2", mid, temb_ch)})
    return shapes


def parameter_shapes(config: UNetConfig | ClassifierConfig) -> dict[str, tuple[int, ...]]:
    """Canonical parameter names and shapes: the PyTorch U-Net's (or classifier's)
    ``state_dict``.

    Convolutions are ``(out, in, kh, kw)``, linear layers ``(out, in)``, GroupNorm
    ``weight``/``bias`` ``(C,)``, the label embedding ``(K + 1, 4 ch)``. The order is the
    ``state_dict`` order.

    Examples
    --------
    >>> from ddpm_core.models import get_preset
    >>> parameter_shapes(get_preset("tiny").unet)["conv_in.weight"]
    (16, 1, 3, 3)
    >>> parameter_shapes(classifier_config("tiny", 10))["head.weight"]
    (10, 32)
    """
    if isinstance(config, ClassifierConfig):
        return _classifier_shapes(config)
    plan, temb_ch = unet_plan(config), config.temb_channels
    shapes = _encoder_shapes(config)
    for level in plan.up:
        shapes.update(_level(f"up.{level.index}", level, temb_ch, "upsample",
                             config.resamp_with_conv))
    out_ch = plan.up[0].blocks[-1].out_ch
    shapes.update(_norm("norm_out", out_ch))
    shapes.update(_conv("conv_out", config.out_channels, out_ch, 3))
    return shapes


def _classifier_shapes(config: ClassifierConfig) -> dict[str, tuple[int, ...]]:
    mid_ch = unet_plan(config.unet).mid_ch
    return {**_encoder_shapes(config.unet), **_norm("norm_out", mid_ch),
            **_linear("head", config.num_classes, mid_ch)}


def count_parameters(config: UNetConfig | ClassifierConfig) -> int:
    """Number of trainable parameters of the U-Net (35,746,307 for ``cifar10``) or of
    the classifier."""
    return sum(math.prod(s) for s in parameter_shapes(config).values())


def timestep_frequencies(dim: int) -> np.ndarray:
    """Frequencies of the sinusoidal timestep embedding, float32 ``(dim // 2,)``.

    .. math:: \\omega_k = \\exp(-k \\log(10000) / (d/2 - 1)), \\quad k = 0..d/2-1

    The embedding of ``t`` is ``concat(sin(t * omega), cos(t * omega))`` (zero-padded to
    ``dim`` if odd), as in the official code and Transformer positional encodings.
    Computed in float64 and rounded once, so every backend uses identical numbers.
    """
    half = dim // 2
    scale = math.log(10000.0) / max(half - 1, 1)
    return np.exp(-scale * np.arange(half, dtype=np.float64)).astype(np.float32)
