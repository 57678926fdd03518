"""The paper's U-Net in PyTorch (Ho et al. 2020, Appendix B; PixelCNN++ backbone).

Layer by layer the same network as the official TensorFlow code
(``diffusion_utils/models/unet.py``) and as :mod:`ddpm_core.backends.jax.unet`; the
structure comes from :func:`ddpm_core.models.unet_plan`, and the ``state_dict`` names
and shapes are :func:`ddpm_core.models.parameter_shapes` (the canonical weight layout).

Details that must match the Flax model bit for bit:

- GroupNorm with ``config.norm_eps`` (1e-6), groups of contiguous channels;
- timestep embedding ``concat(sin(t w), cos(t w))`` with
  :func:`~ddpm_core.models.timestep_frequencies`;
- attention scaled by ``C ** -0.5`` (one head of width C);
- stride-2 3x3 downsampling convolutions pad one row/column at the bottom/right only
  (TensorFlow's ``"SAME"``), upsampling is nearest-neighbour then a 3x3 convolution;
- weights Xavier-uniform (TF ``variance_scaling(1, "fan_avg", "uniform")``), biases zero,
  and the last convolution of every residual branch and the output convolution zero;
- a class-conditional U-Net (``config.num_classes = K > 0``) adds row y of a (K + 1, 4ch)
  label embedding (N(0, 1) init, as ``nn.Embedding``; row K is the null label) to the
  time MLP's output, before the SiLU that every residual block applies to it. With
  ``num_classes = 0`` no such module exists and the network is the unconditional one,
  bit for bit.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from ddpm_core.models import BlockSpec, LevelSpec, Preset, UNetConfig, unet_config, unet_plan
from ddpm_core.models.architecture import check_conditioning, check_input_shape

__all__ = ["Encoder", "GroupNorm", "UNet", "build_unet", "timestep_embedding"]


def timestep_embedding(t: torch.Tensor, dim: int,
                       dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embedding of the timestep indices ``t`` (B,) -> (B, dim) in ``dtype``.

    ``t`` is embedded as given (the 0-based index). See
    :func:`ddpm_core.models.timestep_frequencies`. float64 computes the frequencies and
    the sines in float64; every other dtype computes them in float32 and casts the result.
    """
    half = dim // 2
    scale = math.log(10000.0) / max(half - 1, 1)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    # float64 then one rounding: the same float32 numbers as timestep_frequencies().
    k = torch.arange(half, device=t.device, dtype=torch.float64)
    freqs = torch.exp(-scale * k).to(work)
    args = t.to(work)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, dim % 2)).to(dtype)


def _conv(in_ch: int, out_ch: int, k: int, *, zero: bool = False, stride: int = 1,
          padding: int | None = None) -> nn.Conv2d:
    conv = nn.Conv2d(in_ch, out_ch, k, stride=stride,
                     padding=k // 2 if padding is None else padding)
    _init(conv, zero)
    return conv


def _linear(in_f: int, out_f: int) -> nn.Linear:
    lin = nn.Linear(in_f, out_f)
    _init(lin, False)
    return lin


def _init(layer: nn.Conv2d | nn.Linear, zero: bool) -> None:
    if zero:
        nn.init.zeros_(layer.weight)
    else:
        nn.init.xavier_uniform_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


def _norm(config: UNetConfig, ch: int) -> nn.GroupNorm:
    return GroupNorm(config.num_groups, ch, eps=config.norm_eps)


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that keeps autocast's dtype: (B, C, H, W) bf16 in, bf16 out.

    Autocast runs ``group_norm`` in float32, so every normalisation of a bf16 activation
    costs a cast in, a float32 output and a cast back before the next convolution: the
    U-Net is memory-bound on those passes. Here a low-precision input under autocast is
    normalised in its own dtype (the kernel accumulates the statistics in float32), as the
    Flax model does with ``dtype=bfloat16``. Without autocast, or with a float32 input, this
    is ``nn.GroupNorm`` exactly; the parameters stay float32.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 or not torch.is_autocast_enabled(x.device.type):
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return F.group_norm(x, self.num_groups, self.weight.to(x.dtype),
                                self.bias.to(x.dtype), self.eps)


class TimeEmbedding(nn.Module):
    """``Dense(4ch) . SiLU . Dense(4ch)`` of the sinusoidal embedding."""

    def __init__(self, ch: int, temb_ch: int) -> None:
        super().__init__()
        self.ch = ch
        self.dense = nn.ModuleList([_linear(ch, temb_ch), _linear(temb_ch, temb_ch)])

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = self.dense[0](timestep_embedding(t, self.ch, self.dense[0].weight.dtype))
        return self.dense[1](F.silu(h))


class ResBlock(nn.Module):
    """GroupNorm, SiLU, conv3x3, + Dense(SiLU(temb)), GroupNorm, SiLU, dropout, conv3x3."""

    def __init__(self, config: UNetConfig, spec: BlockSpec) -> None:
        super().__init__()
        self.norm1 = _norm(config, spec.in_ch)
        self.conv1 = _conv(spec.in_ch, spec.out_ch, 3)
        self.temb_proj = _linear(config.temb_channels, spec.out_ch)
        self.norm2 = _norm(config, spec.out_ch)
        self.dropout = nn.Dropout(config.dropout)
        self.conv2 = _conv(spec.out_ch, spec.out_ch, 3, zero=True)
        self.nin_shortcut = (_conv(spec.in_ch, spec.out_ch, 1)
                             if spec.in_ch != spec.out_ch else None)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """``x`` (B, C_in, H, W), ``temb`` = SiLU(time embedding) (B, 4ch)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(temb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        if self.nin_shortcut is not None:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, config: UNetConfig, ch: int) -> None:
        super().__init__()
        self.norm = _norm(config, ch)
        self.q, self.k, self.v = (_conv(ch, ch, 1) for _ in range(3))
        self.proj_out = _conv(ch, ch, 1, zero=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = self.norm(x)

        def tokens(y: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 1, HW, C)
            return y.reshape(b, c, hgt * wid).transpose(1, 2).unsqueeze(1)

        # softmax(q k^T / sqrt(C)) v: SDPA's default scale is C ** -0.5.
        a = F.scaled_dot_product_attention(tokens(self.q(h)), tokens(self.k(h)),
                                           tokens(self.v(h)))
        a = a.squeeze(1).transpose(1, 2).reshape(b, c, hgt, wid)
        return x + self.proj_out(a)


class Downsample(nn.Module):
    """3x3 stride-2 convolution padded (0, 1) like TF ``"SAME"``, or 2x2 average pooling."""

    def __init__(self, ch: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = _conv(ch, ch, 3, stride=2, padding=0) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv is None:
            return F.avg_pool2d(x, 2)
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then (optionally) a 3x3 convolution."""

    def __init__(self, ch: int, with_conv: bool) -> None:
        super().__init__()
        self.conv = _conv(ch, ch, 3) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return x if self.conv is None else self.conv(x)


class Level(nn.Module):
    """One resolution level: residual blocks, their attention blocks, a resampler."""

    def __init__(self, config: UNetConfig, spec: LevelSpec, resampler: type) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResBlock(config, b) for b in spec.blocks)
        self.attn = nn.ModuleList(AttnBlock(config, b.out_ch) for b in spec.blocks if b.attn)
        self.has_attn = any(b.attn for b in spec.blocks)
        self.resample_name = "downsample" if resampler is Downsample else "upsample"
        if spec.resample:
            self.add_module(self.resample_name,
                            resampler(spec.blocks[-1].out_ch, config.resamp_with_conv))

    def _block(self, j: int, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.block[j](h, temb)
        return self.attn[j](h) if self.has_attn else h

    def _resample(self, h: torch.Tensor) -> torch.Tensor:
        resample = getattr(self, self.resample_name, None)
        return h if resample is None else resample(h)

    def down_path(self, h: torch.Tensor, temb: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output, then the downsampled one (these are the skips)."""
        outs = []
        for j in range(len(self.block)):
            h = self._block(j, h, temb)
            outs.append(h)
        if hasattr(self, "downsample"):
            outs.append(self._resample(h))
        return outs

    def up_path(self, h: torch.Tensor, hs: list[torch.Tensor],
                temb: torch.Tensor) -> torch.Tensor:
        """Each block eats ``concat(h, hs.pop())`` on the channel axis; then upsample."""
        for j in range(len(self.block)):
            h = self._block(j, torch.cat([h, hs.pop()], dim=1), temb)
        return self._resample(h)


class Middle(nn.Module):
    """ResBlock, AttnBlock, ResBlock at the lowest resolution."""

    def __init__(self, config: UNetConfig, ch: int) -> None:
        super().__init__()
        spec = BlockSpec(ch, ch, True)
        self.block_1 = ResBlock(config, spec)
        self.attn_1 = AttnBlock(config, ch)
        self.block_2 = ResBlock(config, spec)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(h, temb)), temb)


class Encoder(nn.Module):
    """The U-Net's encoder half, shared with the classifier under the same names.

    ``temb`` (and ``label_emb`` for a class-conditional config), ``conv_in``, the down
    levels and ``mid``; :meth:`embed` and :meth:`encode` run them. ``backbone`` is the
    U-Net config they are built from.
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise TypeError(f"config must be a UNetConfig, got {type(config).__name__}")
        self.backbone = config
        plan = unet_plan(config)
        self.temb = TimeEmbedding(config.ch, config.temb_channels)
        if config.num_classes:
            self.label_emb = nn.Embedding(config.num_classes + 1, config.temb_channels)
        self.conv_in = _conv(config.in_channels, config.ch, 3)
        self.down = nn.ModuleList(Level(config, s, Downsample) for s in plan.down)
        self.mid = Middle(config, plan.mid_ch)

    def _check_labels(self, y: torch.Tensor | int | None, x: torch.Tensor) -> torch.Tensor | None:
        k = self.backbone.num_classes
        check_conditioning(k, y is not None, x.shape[0])
        if y is None:
            return None
        y = _per_sample("y", y, x)
        if y.dtype.is_floating_point or y.dtype == torch.bool:
            raise TypeError(f"y must hold integer class labels, got dtype {y.dtype}")
        _check_label_range(y, k, f" ({k} is the null label)")
        return y

    def _check_inputs(self, x: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        check_input_shape(self.backbone, x.shape)
        return _per_sample("t", t, x)

    def embed(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """SiLU(time embedding [+ label embedding]) (B, 4ch): what every block receives."""
        emb = self.temb(t)
        if y is not None:
            emb = emb + self.label_emb(y)
        return F.silu(emb)

    def encode(self, x: torch.Tensor, temb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(the middle block's output, the skips of the down path)."""
        hs = [self.conv_in(x)]
        for level in _levels(self.down):
            hs += level.down_path(hs[-1], temb)
        return self.mid(hs[-1], temb), hs


def _levels(levels: nn.ModuleList) -> list[Level]:
    return [cast(Level, level) for level in levels]


def _per_sample(name: str, v: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
    """``v`` as a (B,) tensor on ``x``'s device (a scalar broadcasts)."""
    v = torch.as_tensor(v, device=x.device)
    if v.ndim == 0:
        v = v.expand(x.shape[0])
    if v.shape != (x.shape[0],):
        raise ValueError(f"{name} must have shape ({x.shape[0]},) or be a scalar, "
                         f"got {name}.shape={tuple(v.shape)}")
    return v


def _check_label_range(y: torch.Tensor, hi: int, note: str = "") -> None:
    """Labels in [0, hi]: a ValueError on the CPU, a device-side assert elsewhere (no sync)."""
    if y.device.type == "cpu" and not torch.compiler.is_compiling():
        lo, top = int(y.min()), int(y.max())
        if lo < 0 or top > hi:
            raise ValueError(f"y must lie in [0, {hi}]{note}, got values in [{lo}, {top}]")
        return
    torch._assert_async(((y >= 0) & (y <= hi)).all(), f"y must lie in [0, {hi}]{note}")


class UNet(Encoder):
    """The paper's U-Net: ``forward(x, t, y=None) -> output``.

    Parameters
    ----------
    config : UNetConfig
        The network's shape (see :func:`ddpm_core.models.get_preset`).

    Notes
    -----
    ``forward(x, t, y=None)``: ``x`` float (B, in_channels, S, S) with S =
    ``config.image_size``; ``t`` (B,) integer 0-based timestep indices (a Python int or
    0-d tensor broadcasts), embedded as given; ``y`` (B,) integer class labels in [0, K]
    for a class-conditional config (K = ``config.num_classes``, K itself the null label),
    and None (required) for an unconditional one. Returns (B, out_channels, S, S) in the
    compute dtype.

    Examples
    --------
    >>> import torch
    >>> from ddpm_core.models import get_preset
    >>> net = UNet(get_preset("tiny").unet)
    >>> net(torch.zeros(2, 1, 8, 8), torch.tensor([0, 999])).shape
    torch.Size([2, 1, 8, 8])
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__(config)
        self.config = config
        plan = unet_plan(config)
        self.up = nn.ModuleList(Level(config, s, Upsample) for s in plan.up)
        out_ch = plan.up[0].blocks[-1].out_ch
        self.norm_out = _norm(config, out_ch)
        self.conv_out = _conv(out_ch, config.out_channels, 3, zero=True)

    def forward(self, x: torch.Tensor, t: torch.Tensor | int,
                y: torch.Tensor | int | None = None) -> torch.Tensor:
        """The network's output for ``x`` (B, C, H, W) at 0-based steps ``t`` (B,) or an int,
        with class labels ``y`` (B,) or an int for a class-conditional U-Net (the null label
        ``num_classes`` for classifier-free guidance's unconditional pass); (B, C_out, H, W),
        C_out = 2C for a learned variance."""
        t = self._check_inputs(x, t)
        temb = self.embed(t, self._check_labels(y, x))
        h, hs = self.encode(x, temb)
        for level in reversed(_levels(self.up)):
            h = level.up_path(h, hs, temb)
        return self.conv_out(F.silu(self.norm_out(h)))


def build_unet(preset_or_config: Preset | UNetConfig | str, prediction: str = "eps",
               variance: str = "fixed_small") -> UNet:
    """A freshly initialised :class:`UNet` with the output head for the parameterisation.

    Parameters
    ----------
    preset_or_config : Preset, UNetConfig or str
        A preset, its name, or a U-Net config.
    prediction, variance : str
        See :func:`ddpm_core.models.output_channels` (2C outputs for a learned variance).

    Examples
    --------
    >>> build_unet("tiny", variance="learned_range").config.out_channels
    2
    """
    return UNet(unet_config(preset_or_config, prediction=prediction, variance=variance))
