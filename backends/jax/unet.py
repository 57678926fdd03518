"""The paper's U-Net in Flax (linen): the same network as the PyTorch one.

Built from the same :func:`ddpm_core.models.unet_plan`, with the same parameter count
for every preset and the same maths (see :mod:`ddpm_core.backends.torch.unet`):
GroupNorm eps ``config.norm_eps`` with two-pass variance, the embedding frequencies of
:func:`ddpm_core.models.timestep_frequencies`, attention scaled by ``C ** -0.5``,
nearest-neighbour upsampling, and stride-2 convolutions padded ``((0, 1), (0, 1))``
(identical to the PyTorch model's ``F.pad(x, (0, 1, 0, 1))`` + ``padding=0``).

Layout: the public call takes and returns NCHW like the PyTorch model; the network
runs in NHWC inside. The parameter tree mirrors the PyTorch ``state_dict``
(``down.0.block.1.conv1.weight`` <-> ``params["down_0"]["block_1"]["conv1"]["kernel"]``);
:mod:`ddpm_core.interop.convert` maps one to the other. A class-conditional config
(``num_classes = K > 0``) adds ``params["label_emb"]["embedding"]`` (K + 1, 4ch), the same
array as the PyTorch ``label_emb.weight``; without it the network is the unconditional one.

Examples
--------
>>> import jax, jax.numpy as jnp
>>> net = build_unet("tiny")
>>> params = init_params(net, jax.random.key(0))
>>> net.apply({"params": params}, jnp.zeros((2, 1, 8, 8)), jnp.array([0, 999])).shape
(2, 1, 8, 8)
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ddpm_core.models import (
    BlockSpec,
    LevelSpec,
    Preset,
    UNetConfig,
    check_conditioning,
    check_input_shape,
    timestep_frequencies,
    unet_config,
    unet_plan,
)

__all__ = ["Encoder", "GroupNorm", "UNet", "build_unet", "init_params", "timestep_embedding"]

_XAVIER = nn.initializers.xavier_uniform()
_ZEROS = nn.initializers.zeros_init()


def timestep_embedding(t: jax.Array, dim: int, dtype: Any = jnp.float32) -> jax.Array:
    """Sinusoidal embedding of the timestep indices ``t`` (B,) -> (B, dim).

    float32 (the frequencies of :func:`~ddpm_core.models.timestep_frequencies`), or
    float64 with the frequencies and sines in float64 when ``dtype`` is float64.
    """
    if dtype == jnp.float64:
        half = dim // 2
        freqs = jnp.asarray(np.exp(-math.log(10000.0) / max(half - 1, 1) * np.arange(half)))
        work = jnp.float64
    else:
        freqs, work = jnp.asarray(timestep_frequencies(dim)), jnp.float32
    args = t.astype(work)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


def _group_mean(v: jax.Array, groups: int) -> jax.Array:
    """Mean of ``v`` (B, ..., C) over its spatial axes and each group of C / groups channels,
    broadcast back to (B, 1, ..., 1, C).

    Sums each channel first (a reduction over the leading axes, contiguous in NHWC) and
    only then the groups' channels: XLA's CPU code runs this twice as fast as one
    reduction over the (spatial, C / groups) axes of a (B, ..., groups, C / groups) view.
    """
    b, c = v.shape[0], v.shape[-1]
    per_channel = jnp.sum(v, axis=tuple(range(1, v.ndim - 1)))  # (B, C)
    n = math.prod(v.shape[1:-1]) * (c // groups)
    means = per_channel.reshape(b, groups, c // groups).sum(axis=-1) / n  # (B, groups)
    return jnp.repeat(means, c // groups, axis=-1).reshape((b,) + (1,) * (v.ndim - 2) + (c,))


class GroupNorm(nn.Module):
    """GroupNorm over the channels-last axis (Wu & He 2018): ``flax.linen.GroupNorm``
    with ``use_fast_variance=False``, the same parameters (``scale``, ``bias``; (C,),
    float32) and the same maths, computed faster on a CPU.

    y = (x - mean_g) / sqrt(var_g + epsilon) * scale + bias, with the two-pass variance
    var_g = mean_g((x - mean_g)^2) (no E[x^2] - E[x]^2 cancellation), the statistics in
    float32 at least (float64 stays float64), the output in ``dtype`` (or x's dtype
    promoted with the parameters'). x: (B, ..., C), C divisible by ``num_groups``.
    """

    num_groups: int
    epsilon: float = 1e-6
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        if c % self.num_groups:
            raise ValueError(f"GroupNorm: channels {c} must be divisible by num_groups="
                             f"{self.num_groups}")
        scale = self.param("scale", nn.initializers.ones_init(), (c,), jnp.float32)
        bias = self.param("bias", _ZEROS, (c,), jnp.float32)
        work = jnp.promote_types(x.dtype, jnp.float32)
        v = x.astype(work)
        d = v - _group_mean(v, self.num_groups)
        y = d * jax.lax.rsqrt(_group_mean(d * d, self.num_groups) + self.epsilon)
        y = y * scale + bias
        return y.astype(self.dtype or jnp.result_type(x, scale, bias))


class _Layers(nn.Module):
    """Shared factory for layers with the U-Net's initialisers and dtypes."""

    config: UNetConfig
    dtype: Any = jnp.float32

    def conv(self, features: int, k: int, name: str, *, zero: bool = False,
             stride: int = 1, padding: Any = None) -> nn.Conv:
        pad = ((k // 2, k // 2), (k // 2, k // 2)) if padding is None else padding
        return nn.Conv(features, (k, k), strides=(stride, stride), padding=pad,
                       kernel_init=_ZEROS if zero else _XAVIER, bias_init=_ZEROS,
                       dtype=self.dtype, name=name)

    def dense(self, features: int, name: str) -> nn.Dense:
        return nn.Dense(features, kernel_init=_XAVIER, bias_init=_ZEROS, dtype=self.dtype,
                        name=name)

    def norm(self, name: str) -> GroupNorm:
        return GroupNorm(num_groups=self.config.num_groups, epsilon=self.config.norm_eps,
                         dtype=self.dtype, name=name)


class TimeEmbedding(_Layers):
    """``Dense(4ch) . SiLU . Dense(4ch)`` of the sinusoidal embedding."""

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        c = self.config
        h = self.dense(c.temb_channels, "dense_0")(timestep_embedding(t, c.ch, self.dtype))
        return self.dense(c.temb_channels, "dense_1")(nn.silu(h))


class ResBlock(_Layers):
    """GroupNorm, SiLU, conv3x3, + Dense(SiLU(temb)), GroupNorm, SiLU, dropout, conv3x3."""

    spec: BlockSpec = BlockSpec(1, 1, False)

    @nn.compact
    def __call__(self, x: jax.Array, temb: jax.Array, train: bool) -> jax.Array:
        out = self.spec.out_ch
        h = self.conv(out, 3, "conv1")(nn.silu(self.norm("norm1")(x)))
        h = h + self.dense(out, "temb_proj")(temb)[:, None, None, :]
        h = nn.silu(self.norm("norm2")(h))
        h = nn.Dropout(self.config.dropout, deterministic=not train)(h)
        h = self.conv(out, 3, "conv2", zero=True)(h)
        if self.spec.in_ch != out:
            x = self.conv(out, 1, "nin_shortcut")(x)
        return x + h


class AttnBlock(_Layers):
    """Single-head self-attention over the H*W positions, with a residual connection."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, hgt, wid, c = x.shape
        h = self.norm("norm")(x)
        q, k, v = (self.conv(c, 1, n)(h).reshape(b, hgt * wid, c) for n in ("q", "k", "v"))
        # logits in float32 at least (float64 stays float64)
        w = jnp.einsum("bic,bjc->bij", q, k).astype(jnp.promote_types(q.dtype, jnp.float32)) * (c ** -0.5)
        w = jax.nn.softmax(w, axis=-1).astype(v.dtype)
        a = jnp.einsum("bij,bjc->bic", w, v).reshape(b, hgt, wid, c)
        return x + self.conv(c, 1, "proj_out", zero=True)(a)


class Resample(_Layers):
    """Downsample (stride-2 conv padded (0, 1), or 2x2 average pool) or Upsample
    (nearest x2, then a 3x3 conv)."""

    ch: int = 1
    down: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        with_conv = self.config.resamp_with_conv
        if self.down:
            if not with_conv:
                return nn.avg_pool(x, (2, 2), strides=(2, 2))
            return self.conv(self.ch, 3, "conv", stride=2, padding=((0, 1), (0, 1)))(x)
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(self.ch, 3, "conv")(x) if with_conv else x


class Level(_Layers):
    """One resolution level; ``__call__`` runs the down path (returns every output)."""

    spec: LevelSpec = LevelSpec(0, 1, (), False)
    down: bool = True

    def setup(self) -> None:
        kw = {"config": self.config, "dtype": self.dtype}
        self.blocks = [ResBlock(spec=b, name=f"block_{j}", **kw)
                       for j, b in enumerate(self.spec.blocks)]
        self.attns = [AttnBlock(name=f"attn_{j}", **kw) if b.attn else None
                      for j, b in enumerate(self.spec.blocks)]
        name = "downsample" if self.down else "upsample"
        self.resample = (Resample(ch=self.spec.blocks[-1].out_ch, down=self.down, name=name, **kw)
                         if self.spec.resample else None)

    def _block(self, j: int, h: jax.Array, temb: jax.Array, train: bool) -> jax.Array:
        h = self.blocks[j](h, temb, train)
        attn = self.attns[j]
        return h if attn is None else attn(h)

    def __call__(self, h: jax.Array, temb: jax.Array, train: bool) -> list[jax.Array]:
        outs = []
        for j in range(len(self.blocks)):
            h = self._block(j, h, temb, train)
            outs.append(h)
        if self.resample is not None:
            outs.append(self.resample(h))
        return outs

    def up(self, h: jax.Array, hs: list[jax.Array], temb: jax.Array,
           train: bool) -> jax.Array:
        """Up path: each block eats ``concat(h, hs.pop())`` (channels last)."""
        for j in range(len(self.blocks)):
            h = self._block(j, jnp.concatenate([h, hs.pop()], axis=-1), temb, train)
        return h if self.resample is None else self.resample(h)


class Middle(_Layers):
    """ResBlock, AttnBlock, ResBlock at the lowest resolution."""

    ch: int = 1

    @nn.compact
    def __call__(self, h: jax.Array, temb: jax.Array, train: bool) -> jax.Array:
        kw = {"config": self.config, "dtype": self.dtype}
        spec = BlockSpec(self.ch, self.ch, True)
        h = ResBlock(spec=spec, name="block_1", **kw)(h, temb, train)
        h = AttnBlock(name="attn_1", **kw)(h)
        return ResBlock(spec=spec, name="block_2", **kw)(h, temb, train)


class LabelEmbedding(_Layers):
    """Row y of a (K + 1, 4ch) table, N(0, 1) init as PyTorch's ``nn.Embedding``; row K is
    the null label. A label outside [0, K] (only possible under ``jit``, where the values
    cannot be checked) gives a NaN row, never another class's row."""

    @nn.compact
    def __call__(self, y: jax.Array) -> jax.Array:
        k, width = self.config.num_classes, self.config.temb_channels
        table = self.param("embedding", nn.initializers.normal(1.0), (k + 1, width), jnp.float32)
        y = jnp.where(y < 0, k + 1, y)  # jnp.take would wrap a negative index
        return jnp.take(table, y, axis=0, mode="fill", fill_value=jnp.nan).astype(self.dtype)


class Encoder(_Layers):
    """The U-Net's encoder half, shared with the classifier under the same names:
    ``temb`` (and ``label_emb``), ``conv_in``, the down levels and ``mid``."""

    def embed(self, t: jax.Array, y: jax.Array | None) -> jax.Array:
        """SiLU(time embedding [+ label embedding]) (B, 4ch): what every block receives."""
        kw = {"config": self.config, "dtype": self.dtype}
        emb = TimeEmbedding(name="temb", **kw)(t)
        if y is not None:
            emb = emb + LabelEmbedding(name="label_emb", **kw)(y)
        return nn.silu(emb)

    def encode(self, x: jax.Array, temb: jax.Array,
               train: bool) -> tuple[jax.Array, list[jax.Array]]:
        """(the middle block's output, the skips), channels last, from NCHW ``x``."""
        c = self.config
        plan, kw = unet_plan(c), {"config": c, "dtype": self.dtype}
        hs = [self.conv(c.ch, 3, "conv_in")(jnp.transpose(x, (0, 2, 3, 1)))]
        for spec in plan.down:
            hs += Level(spec=spec, down=True, name=f"down_{spec.index}", **kw)(hs[-1], temb, train)
        return Middle(ch=plan.mid_ch, name="mid", **kw)(hs[-1], temb, train), hs

    def _check_inputs(self, x: jax.Array, t: jax.Array | int) -> jax.Array:
        check_input_shape(self.config, x.shape)
        return _per_sample("t", t, x)

    def _check_labels(self, y: jax.Array | int | None, x: jax.Array) -> jax.Array | None:
        k = self.config.num_classes
        check_conditioning(k, y is not None, x.shape[0])
        if y is None:
            return None
        check_labels(y, k, f" ({k} is the null label)")
        return _per_sample("y", y, x)


def _per_sample(name: str, v: jax.Array | int, x: jax.Array) -> jax.Array:
    """``v`` as a (B,) array (a scalar broadcasts)."""
    v = jnp.asarray(v)
    if v.ndim == 0:
        v = jnp.broadcast_to(v, (x.shape[0],))
    if v.shape != (x.shape[0],):
        raise ValueError(f"{name} must have shape ({x.shape[0]},) or be a scalar, "
                         f"got {name}.shape={v.shape}")
    return v


def check_labels(y: jax.Array | np.ndarray | int, hi: int, note: str = "") -> None:
    """Integer labels in [0, hi]; the values are checked when concrete (not traced), in
    NumPy, so a concrete label array closed over by a jitted function is checked too."""
    dtype = y.dtype if hasattr(y, "dtype") else np.asarray(y).dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"y must hold integer class labels, got dtype {dtype}")
    if not isinstance(y, jax.core.Tracer):
        values = np.asarray(y)
        lo, top = int(values.min()), int(values.max())
        if lo < 0 or top > hi:
            raise ValueError(f"y must lie in [0, {hi}]{note}, got values in [{lo}, {top}]")


class UNet(Encoder):
    """The paper's U-Net: ``apply({"params": p}, x, t, y=None, train=False, rngs=...)``.

    Attributes
    ----------
    config : UNetConfig
        The network's shape.
    dtype : jax dtype
        Compute dtype (parameters stay float32); e.g. ``jnp.bfloat16`` on accelerators.

    Notes
    -----
    ``x`` float (B, in_channels, S, S) NCHW; ``t`` (B,) integer 0-based timestep indices
    (a scalar broadcasts), embedded as given; ``y`` (B,) integer class labels in [0, K] for
    a class-conditional config (K = ``config.num_classes``, K itself the null label), and
    None (required) for an unconditional one. Returns (B, out_channels, S, S).
    With ``train=True`` and dropout > 0, pass ``rngs={"dropout": key}``.
    """

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array | int, y: jax.Array | int | None = None,
                 train: bool = False) -> jax.Array:
        c = self.config
        t = self._check_inputs(x, t)
        temb = self.embed(t, self._check_labels(y, x))
        h, hs = self.encode(x, temb, train)
        kw = {"config": c, "dtype": self.dtype}
        for spec in reversed(unet_plan(c).up):
            h = Level(spec=spec, down=False, name=f"up_{spec.index}", **kw).up(h, hs, temb, train)
        h = nn.silu(self.norm("norm_out")(h))
        h = self.conv(c.out_channels, 3, "conv_out", zero=True)(h)
        return jnp.transpose(h, (0, 3, 1, 2))


def build_unet(preset_or_config: Preset | UNetConfig | str, prediction: str = "eps",
               variance: str = "fixed_small", dtype: Any = jnp.float32) -> UNet:
    """A :class:`UNet` module with the output head for the parameterisation: the arguments
    of the PyTorch ``build_unet`` (a preset, its name or a U-Net config; ``prediction`` and
    ``variance`` set the output channels, 2C for a learned variance), and ``dtype``, the
    compute dtype (parameters stay float32)."""
    config = unet_config(preset_or_config, prediction=prediction, variance=variance)
    return UNet(config=config, dtype=dtype)


def _dummy_inputs(config: UNetConfig) -> tuple[jax.Array, ...]:
    s = config.image_size
    x, t = jnp.zeros((1, config.in_channels, s, s), jnp.float32), jnp.zeros((1,), jnp.int32)
    return (x, t, t) if config.num_classes else (x, t)


def init_params(model: UNet, key: jax.Array) -> dict[str, Any]:
    """Freshly initialised parameters (the ``"params"`` collection) of ``model``.

    Compiled with ``jax.jit`` (much faster than Flax's op-by-op ``init``).
    """
    return jax.jit(model.init)(key, *_dummy_inputs(model.config))["params"]


def param_shapes(model: UNet) -> dict[str, Any]:
    """The parameter tree as ``jax.ShapeDtypeStruct`` leaves, without allocating it."""
    return jax.eval_shape(model.init, jax.random.key(0), *_dummy_inputs(model.config))["params"]
