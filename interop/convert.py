"""Weights across backends: the canonical layout and safetensors files (NumPy only).

The canonical weights are the PyTorch U-Net's ``state_dict`` as NumPy arrays (names and
shapes from :func:`ddpm_core.models.parameter_shapes`). The Flax U-Net's parameter tree
holds the same numbers in Flax's layouts:

- ``down.0.block.1.conv1.weight`` (O, I, kh, kw) <-> ``down_0/block_1/conv1/kernel``
  (kh, kw, I, O);
- ``temb.dense.0.weight`` (out, in) <-> ``temb/dense_0/kernel`` (in, out);
- ``mid.attn_1.norm.weight`` <-> ``mid/attn_1/norm/scale`` (GroupNorm);
- ``label_emb.weight`` (K + 1, 4ch) <-> ``label_emb/embedding`` (K + 1, 4ch), unchanged
  (the class-conditional U-Net's label embedding);
- ``*.bias`` <-> ``*/bias`` unchanged

(a path segment that is a number joins the one before it with ``_``). The noise-aware
classifier follows the same rules (its ``config`` is a ``ClassifierConfig``). Neither
torch nor jax is imported here, so any run directory can be read by either backend.

Examples
--------
>>> import numpy as np
>>> from ddpm_core.models import get_preset, parameter_shapes
>>> cfg = get_preset("tiny").unet
>>> state = {k: np.zeros(s, np.float32) for k, s in parameter_shapes(cfg).items()}
>>> flax_to_torch(torch_to_flax(state, cfg), cfg).keys() == state.keys()
True
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ddpm_core.models import ClassifierConfig, UNetConfig, parameter_shapes

__all__ = [
    "check_state",
    "flax_path",
    "flax_to_torch",
    "load_safetensors",
    "save_safetensors",
    "torch_to_flax",
]


def flax_path(name: str) -> tuple[str, ...]:
    """Flax parameter path of a canonical (PyTorch) name.

    Numeric segments join the one before (``down.0`` -> ``down_0``); a leaf ``weight``
    becomes ``scale`` in a GroupNorm (modules ``norm*``), ``embedding`` in the label
    embedding (``label_emb``) and ``kernel`` elsewhere.

    Examples
    --------
    >>> flax_path("down.0.block.1.conv1.weight")
    ('down_0', 'block_1', 'conv1', 'kernel')
    >>> flax_path("mid.attn_1.norm.weight")
    ('mid', 'attn_1', 'norm', 'scale')
    >>> flax_path("label_emb.weight")
    ('label_emb', 'embedding')
    """
    *modules, leaf = name.split(".")
    path: list[str] = []
    for seg in modules:
        if seg.isdigit() and path:
            path[-1] = f"{path[-1]}_{seg}"
        else:
            path.append(seg)
    if leaf == "weight":
        leaf = "scale" if path[-1].startswith("norm") else _WEIGHT_LEAF.get(path[-1], "kernel")
    return (*path, leaf)


_WEIGHT_LEAF = {"label_emb": "embedding"}


def _to_flax_layout(a: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and a.ndim == 4:  # conv (O, I, kh, kw) -> (kh, kw, I, O)
        return np.ascontiguousarray(a.transpose(2, 3, 1, 0))
    if leaf == "kernel" and a.ndim == 2:  # linear (out, in) -> (in, out)
        return np.ascontiguousarray(a.T)
    return np.array(a)


def _to_torch_layout(a: np.ndarray, leaf: str) -> np.ndarray:
    if leaf == "kernel" and a.ndim == 4:  # (kh, kw, I, O) -> (O, I, kh, kw)
        return np.ascontiguousarray(a.transpose(3, 2, 0, 1))
    if leaf == "kernel" and a.ndim == 2:
        return np.ascontiguousarray(a.T)
    return np.array(a)


Config = UNetConfig | ClassifierConfig


def check_state(state: Mapping[str, Any], config: Config) -> None:
    """Raise ``ValueError`` unless ``state`` has exactly the canonical names and shapes.

    The message names the missing, unexpected or mis-shaped entries (at most 5 each).
    """
    shapes = parameter_shapes(config)
    missing = [k for k in shapes if k not in state]
    unexpected = [k for k in state if k not in shapes]
    wrong = [f"{k}: {tuple(np.shape(state[k]))} != {shapes[k]}" for k in shapes
             if k in state and tuple(np.shape(state[k])) != shapes[k]]
    if missing or unexpected or wrong:
        raise ValueError(
            f"state does not match the {type(config).__name__}: missing={missing[:5]} "
            f"({len(missing)}), unexpected={unexpected[:5]} ({len(unexpected)}), "
            f"wrong shapes={wrong[:5]} ({len(wrong)})")


def torch_to_flax(state: Mapping[str, Any], config: Config) -> dict[str, Any]:
    """Canonical (PyTorch ``state_dict``) weights -> the Flax U-Net's (or classifier's)
    ``"params"`` tree.

    Parameters
    ----------
    state : mapping of str to array
        Canonical names to arrays (NumPy, or anything ``np.asarray`` accepts).
    config : UNetConfig or ClassifierConfig
        The network both sides were built from.

    Returns
    -------
    dict
        Nested dict of NumPy arrays, to use as ``model.apply({"params": tree}, ...)``.
        Dtypes are kept.
    """
    check_state(state, config)
    tree: dict[str, Any] = {}
    for name in parameter_shapes(config):
        *path, leaf = flax_path(name)
        node = tree
        for seg in path:
            node = node.setdefault(seg, {})
        node[leaf] = _to_flax_layout(np.asarray(state[name]), leaf)
    return tree


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple, Any]:
    out: dict[tuple, Any] = {}
    for k, v in tree.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, (*prefix, k)))
        else:
            out[(*prefix, k)] = v
    return out


def flax_to_torch(params: Mapping[str, Any], config: Config) -> dict[str, np.ndarray]:
    """The Flax U-Net's (or classifier's) parameter tree -> canonical (PyTorch
    ``state_dict``) NumPy arrays.

    ``params`` is the ``"params"`` collection (a ``{"params": ...}`` wrapper is accepted);
    leaves may be JAX or NumPy arrays. Dtypes are kept.
    """
    if set(params) == {"params"}:
        params = params["params"]
    flat = _flatten(params)
    shapes = parameter_shapes(config)
    paths = {flax_path(name): name for name in shapes}
    missing = [paths[p] for p in paths if p not in flat]
    unexpected = ["/".join(p) for p in flat if p not in paths]
    if missing or unexpected:
        raise ValueError(f"params do not match the {type(config).__name__}: missing={missing[:5]} "
                         f"({len(missing)}), unexpected={unexpected[:5]} ({len(unexpected)})")
    state = {name: _to_torch_layout(np.asarray(flat[p]), p[-1]) for p, name in paths.items()}
    check_state(state, config)
    return {name: state[name] for name in shapes}


def save_safetensors(path: str | os.PathLike, state: Mapping[str, Any],
                     metadata: dict[str, str] | None = None) -> None:
    """Write ``state`` (name -> array) to a safetensors file, atomically.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the
    file is renamed over ``path`` (``os.replace``): a reader sees the old file or the new
    one, never a partial one.
    """
    from safetensors.numpy import save

    from ddpm_core.runs import atomic_write_bytes

    arrays = {k: np.ascontiguousarray(np.asarray(v)) for k, v in state.items()}
    data = save(arrays, metadata=metadata)
    atomic_write_bytes(path, data)


def load_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a safetensors file into NumPy arrays (no pickle, no framework)."""
    from safetensors.numpy import load_file

    return dict(load_file(os.fspath(path)))
