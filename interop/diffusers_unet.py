"""The U-Net half of the diffusers mapping: ``UNet2DModel`` configs and state dicts.

NumPy only. The U-Net is the same network in both libraries when the diffusers config says
``freq_shift=1``, ``flip_sin_to_cos=False``, ``downsample_padding=0``, one attention head
(``attention_head_dim=None``), ``act_fn="silu"``, ``resnet_time_scale_shift="default"``,
``mid_block_scale_factor=1``, ... (:data:`UNET_REQUIRED`); diffusers' defaults
(:data:`UNET_DEFAULTS`) differ on several of these, and each changes the output, so every
field is checked and the first one that does not fit is named. The name table is in
:mod:`ddpm_core.interop.diffusers`, which reads and writes the folders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ddpm_core.interop.convert import check_state
from ddpm_core.interop.diffusers_config import merged_config
from ddpm_core.models import UNetConfig, parameter_shapes

__all__ = [
    "UNET_DEFAULTS",
    "UNET_REQUIRED",
    "diffusers_names",
    "state_from_diffusers",
    "state_to_diffusers",
    "unet_from_diffusers_config",
    "unet_to_diffusers_config",
]

# UNet2DModel.__init__'s defaults (diffusers 0.42): an absent field takes these in diffusers.
UNET_DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "time_embedding_dim": None, "freq_shift": 0,
    "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D",
    "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896], "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0,
    "act_fn": "silu", "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None,
    "norm_eps": 1e-5, "resnet_time_scale_shift": "default", "add_attention": True,
    "class_embed_type": None, "num_class_embeds": None, "num_train_timesteps": None,
}
# The values the one-to-one mapping needs (the paper's network, as the TF code builds it).
UNET_REQUIRED: dict[str, Any] = {
    "center_input_sample": False, "time_embedding_type": "positional", "freq_shift": 1,
    "flip_sin_to_cos": False, "mid_block_type": "UNetMidBlock2D", "mid_block_scale_factor": 1,
    "downsample_padding": 0, "downsample_type": "conv", "upsample_type": "conv", "act_fn": "silu",
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
}
_DOWN = {"DownBlock2D": False, "AttnDownBlock2D": True}
_UP = {"UpBlock2D": False, "AttnUpBlock2D": True}
_LEAF_NAMES = {"temb_proj": "time_emb_proj", "nin_shortcut": "conv_shortcut", "norm": "group_norm",
               "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_ATTENTION_1X1 = ("q", "k", "v", "proj_out")


def _fail(field: str, value: Any, why: str) -> ValueError:
    return ValueError(f"UNet2DModel config field {field}={value!r} cannot be represented: {why}")


def _same(value: Any, required: Any) -> bool:
    if isinstance(required, bool) or required is None:
        return value is required
    if isinstance(required, (int, float)):
        return not isinstance(value, bool) and isinstance(value, (int, float)) and value == required
    return value == required


def _positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(field, value, "expected a positive integer")
    return value


# --------------------------------------------------------------------------- U-Net config

def _merged_unet(config: Mapping[str, Any]) -> dict[str, Any]:
    merged = merged_config(config, "UNet2DModel", UNET_DEFAULTS)
    for field, required in UNET_REQUIRED.items():
        if not _same(merged[field], required):
            default = "" if field in config else " (diffusers' default; the field is absent)"
            raise _fail(field, merged[field], f"the paper's U-Net needs {field}={required!r}{default}")
    return merged


def _image_size(value: Any) -> int:
    if isinstance(value, (list, tuple)) and len(value) == 2 and value[0] == value[1]:
        value = value[0]
    return _positive_int("sample_size", value)


def _widths(c: Mapping[str, Any]) -> tuple[int, tuple[int, ...]]:
    widths = c["block_out_channels"]
    if not isinstance(widths, (list, tuple)) or not widths:
        raise _fail("block_out_channels", widths, "expected a non-empty list of widths")
    ch = _positive_int("block_out_channels[0]", widths[0])
    for w in widths:
        if _positive_int("block_out_channels[i]", w) % ch:
            raise _fail("block_out_channels", widths, f"every width must be a multiple of the first ({ch})")
    return ch, tuple(w // ch for w in widths)


def _attention_levels(c: Mapping[str, Any], levels: int) -> tuple[bool, ...]:
    down, up = c["down_block_types"], c["up_block_types"]
    for field, types, table in (("down_block_types", down, _DOWN), ("up_block_types", up, _UP)):
        if not isinstance(types, (list, tuple)) or len(types) != levels:
            raise _fail(field, types, f"expected {levels} block types, one per block_out_channels entry")
        bad = [t for t in types if t not in table]
        if bad:
            raise _fail(field, types, f"{bad[0]!r} is not one of {sorted(table)}")
    attn = tuple(_DOWN[t] for t in down)
    if tuple(_UP[t] for t in reversed(up)) != attn:
        raise _fail("up_block_types", up, f"attention must sit at the same levels as in "
                    f"down_block_types={list(down)} (up blocks run from the lowest resolution)")
    return attn


def _check_attention_width(c: Mapping[str, Any], widths: list[int]) -> None:
    """One head of width C everywhere: attention_head_dim None, or C at every attention."""
    head = c["attention_head_dim"]
    if head is not None and any(head != w for w in widths):
        raise _fail("attention_head_dim", head, f"ddpm-core's attention has one head as wide as its "
                    f"input (widths {sorted(set(widths))}); use attention_head_dim=None")
    groups = c["attn_norm_num_groups"]
    if groups is not None and groups != c["norm_num_groups"]:
        raise _fail("attn_norm_num_groups", groups, f"must be None or norm_num_groups={c['norm_num_groups']}")


def _class_fields(c: Mapping[str, Any]) -> None:
    """Hook for class-conditional U-Nets: ``num_class_embeds`` <-> ``UNetConfig.num_classes``.

    The mapping of a class embedding (and of ddpm-core's null label) is not written yet, so
    a diffusers class embedding is refused on import as a class-conditional run is on export.
    """
    if c["num_class_embeds"] is not None:
        raise _fail("num_class_embeds", c["num_class_embeds"], "ddpm-core's U-Net has no class embedding")


def unet_from_diffusers_config(config: Mapping[str, Any]) -> UNetConfig:
    """The :class:`~ddpm_core.models.UNetConfig` of a diffusers ``UNet2DModel`` config.

    Raises
    ------
    ValueError
        Naming the first field that does not fit (see :data:`UNET_REQUIRED`; absent fields
        take diffusers' defaults, several of which do not fit).

    Examples
    --------
    >>> from ddpm_core.models import get_preset
    >>> cfg = unet_to_diffusers_config(get_preset("cifar10").unet)
    >>> cfg["down_block_types"], cfg["freq_shift"], cfg["flip_sin_to_cos"]
    (['DownBlock2D', 'AttnDownBlock2D', 'DownBlock2D', 'DownBlock2D'], 1, False)
    >>> unet_from_diffusers_config(cfg) == get_preset("cifar10").unet
    True
    """
    c = _merged_unet(config)
    ch, mult = _widths(c)
    size = _image_size(c["sample_size"])
    attn = _attention_levels(c, len(mult))
    widths = [ch * m for m, a in zip(mult, attn, strict=True) if a] + [ch * mult[-1]]  # + mid block
    _check_attention_width(c, widths)
    if c["time_embedding_dim"] not in (None, 4 * ch):
        raise _fail("time_embedding_dim", c["time_embedding_dim"], f"must be None or 4 * {ch}")
    _class_fields(c)
    dropout = c["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
        raise _fail("dropout", dropout, "expected a number in [0, 1)")
    return UNetConfig(
        image_size=size, in_channels=_positive_int("in_channels", c["in_channels"]),
        out_channels=_positive_int("out_channels", c["out_channels"]), ch=ch, ch_mult=mult,
        num_res_blocks=_positive_int("layers_per_block", c["layers_per_block"]),
        attn_resolutions=tuple(size // 2**i for i, a in enumerate(attn) if a),
        dropout=float(dropout), resamp_with_conv=True,
        num_groups=_positive_int("norm_num_groups", c["norm_num_groups"]), norm_eps=float(c["norm_eps"]))


def unet_to_diffusers_config(config: UNetConfig) -> dict[str, Any]:
    """The ``UNet2DModel`` config (JSON-able, every field written) of a U-Net config.

    Raises
    ------
    ValueError
        For the two shapes diffusers cannot build: ``ch_mult[0] != 1`` (its first level
        is as wide as ``conv_in``) and ``resamp_with_conv=False`` (its blocks always
        resample with a convolution).
    """
    if config.ch_mult[0] != 1:
        raise ValueError(f"ch_mult[0]={config.ch_mult[0]} has no UNet2DModel config: diffusers' first "
                         "level is as wide as conv_in (block_out_channels[0])")
    if not config.resamp_with_conv:
        raise ValueError("resamp_with_conv=False has no UNet2DModel config: diffusers' blocks always "
                         "resample with a convolution")
    if config.num_classes:
        raise ValueError(f"num_classes={config.num_classes}: a class-conditional U-Net is not exported "
                         "(its label embedding and null label have no UNet2DModel mapping yet); export "
                         "an unconditional run")
    attn = [r in config.attn_resolutions for r in config.resolutions]
    return {
        **UNET_DEFAULTS, **UNET_REQUIRED, "_class_name": "UNet2DModel",
        "sample_size": config.image_size, "in_channels": config.in_channels,
        "out_channels": config.out_channels, "block_out_channels": [config.ch * m for m in config.ch_mult],
        "layers_per_block": config.num_res_blocks,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
        "dropout": config.dropout, "attention_head_dim": None, "norm_num_groups": config.num_groups,
        "norm_eps": config.norm_eps,
    }


# --------------------------------------------------------------------------- weights

def _diffusers_name(name: str, levels: int) -> str:
    """diffusers' name of a canonical parameter name (see the module's table)."""
    *mods, leaf = name.split(".")
    head: list[str]
    if mods[0] == "temb":
        head, mods = ["time_embedding", f"linear_{int(mods[2]) + 1}"], []
    elif mods[0] == "mid":
        kind, n = mods[1].split("_")
        head, mods = ["mid_block", "attentions" if kind == "attn" else "resnets",
                      str(int(n) - 1 if kind == "block" else 0)], mods[2:]
    elif mods[0] in ("down", "up"):  # up blocks run from the lowest resolution
        block = [f"{mods[0]}_blocks", str(int(mods[1]) if mods[0] == "down" else levels - 1 - int(mods[1]))]
        if mods[2] in ("downsample", "upsample"):  # down.i.downsample.conv -> ...downsamplers.0.conv
            head, mods = [*block, f"{mods[2]}rs", "0"], mods[3:]
        else:  # down.i.block.j / down.i.attn.j -> ...resnets.j / ...attentions.j
            head, mods = [*block, "resnets" if mods[2] == "block" else "attentions", mods[3]], mods[4:]
    else:  # conv_in, conv_out, norm_out
        head, mods = ["conv_norm_out" if mods[0] == "norm_out" else mods[0]], []
    return ".".join([*head, *(_LEAF_NAMES.get(m, m) for m in mods), leaf])


def diffusers_names(config: UNetConfig) -> dict[str, str]:
    """Canonical parameter name -> diffusers ``UNet2DModel`` name, in canonical order.

    Examples
    --------
    >>> from ddpm_core.models import get_preset
    >>> names = diffusers_names(get_preset("cifar10").unet)
    >>> names["up.1.attn.2.q.weight"], names["down.0.downsample.conv.bias"]
    ('up_blocks.2.attentions.2.to_q.weight', 'down_blocks.0.downsamplers.0.conv.bias')
    """
    levels = len(config.ch_mult)
    return {name: _diffusers_name(name, levels) for name in parameter_shapes(config)}


def _is_attention_1x1(name: str) -> bool:
    parts = name.split(".")
    return parts[-1] == "weight" and parts[-2] in _ATTENTION_1X1 and "attn" in name


def _modern_name(name: str) -> str:
    """Old diffusers attention names (query, key, value, proj_attn) -> today's."""
    parts = name.split(".")
    if "attentions" in parts and len(parts) >= 2 and parts[-2] in _LEGACY_ATTENTION:
        parts[-2] = _LEGACY_ATTENTION[parts[-2]]
    return ".".join(parts)


def state_from_diffusers(state: Mapping[str, Any], config: UNetConfig) -> dict[str, np.ndarray]:
    """diffusers ``UNet2DModel`` weights -> canonical (PyTorch ``state_dict``) NumPy arrays.

    Attention projections, linear ``(C, C)`` in diffusers, become 1x1 convolutions
    ``(C, C, 1, 1)``. Old attention names (``query``, ``key``, ``value``, ``proj_attn``)
    are accepted. Dtypes are kept.

    Raises
    ------
    ValueError
        Naming missing, unexpected and mis-shaped entries (at most 5 of each).
    """
    modern = {_modern_name(k): k for k in state}
    names = diffusers_names(config)
    missing = [d for d in names.values() if d not in modern]
    unexpected = sorted(set(modern) - set(names.values()))
    if missing or unexpected:
        raise ValueError(f"weights do not match the UNet2DModel config: missing={missing[:5]} "
                         f"({len(missing)}), unexpected={unexpected[:5]} ({len(unexpected)})")
    out = {}
    for ours, theirs in names.items():
        a = np.asarray(state[modern[theirs]])
        out[ours] = a.reshape(*a.shape, 1, 1) if _is_attention_1x1(ours) and a.ndim == 2 else a
    check_state(out, config)
    return out


def state_to_diffusers(state: Mapping[str, Any], config: UNetConfig) -> dict[str, np.ndarray]:
    """Canonical weights -> diffusers ``UNet2DModel`` names and layouts (the inverse)."""
    check_state(state, config)
    out = {}
    for ours, theirs in diffusers_names(config).items():
        a = np.asarray(state[ours])
        out[theirs] = a.reshape(a.shape[:2]) if _is_attention_1x1(ours) else a
    return out
