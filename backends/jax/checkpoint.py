"""Checkpoints of the JAX backend: safetensors only (nothing pickled), written atomically.

The run directory's files (the state file ``state-jax.safetensors``, the weight exports
``model.safetensors`` and ``ema.safetensors`` in the canonical PyTorch layout, so that the
PyTorch backend samples a JAX run and vice versa) are described in docs/run-directory.md;
the state file's format is :mod:`ddpm_core.app.run.state_file`, which this module feeds with the
Flax parameter trees, the optax state and the base PRNG key as NumPy arrays
(:func:`flatten_tree`) and reads back into trees (:func:`unflatten_like`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ddpm_core.app.run import state_file
from ddpm_core.app.run.rundir import RunPaths
from ddpm_core.app.run.state_file import STATE_FORMAT, STATE_KEY
from ddpm_core.interop.convert import (
    flax_to_torch,
    load_safetensors,
    save_safetensors,
    torch_to_flax,
)
from ddpm_core.models import UNetConfig

__all__ = ["STATE_FORMAT", "STATE_KEY", "flatten_tree", "load_state", "load_weights", "save_state",
           "save_weights", "state_path", "unflatten_like"]


def state_path(run_dir: str | os.PathLike) -> Path:
    """``run_dir/state-jax.safetensors``."""
    return state_file.state_path(run_dir, "jax")


def _host(x: Any) -> np.ndarray:
    """A host copy of a (replicated) array; on multi-host runs, this process's replica."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def _entry(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    raise TypeError(f"unsupported pytree key {k!r}")


def flatten_tree(tree: Any, prefix: str) -> dict[str, np.ndarray]:
    """``{prefix + "a/b/c": host array}`` for every leaf of ``tree`` (dicts, tuples, optax
    states)."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_name(path, prefix): _host(leaf) for path, leaf in leaves}


def _name(path: Any, prefix: str) -> str:
    return prefix + "/".join(_entry(k) for k in path)


def unflatten_like(template: Any, arrays: Mapping[str, np.ndarray], prefix: str,
                   source: Path | str = "checkpoint") -> Any:
    """``template``'s structure with each leaf read from ``arrays`` (names as written by
    :func:`flatten_tree`); shapes and dtypes must match the template exactly."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, leaf in paths:
        name = _name(path, prefix)
        if name not in arrays:
            raise ValueError(f"{source}: missing tensor {name!r}; the checkpoint does not "
                             "match this model/optimizer")
        a = arrays[name]
        if a.shape == (1,) and tuple(leaf.shape) == ():
            a = a.reshape(())  # safetensors writers may store scalars as (1,)
        if a.shape != tuple(leaf.shape) or a.dtype != np.dtype(leaf.dtype):
            raise ValueError(f"{source}: tensor {name!r} is {a.dtype}{list(a.shape)}, "
                             f"expected {np.dtype(leaf.dtype)}{list(leaf.shape)}")
        leaves.append(a)
    return jax.tree_util.tree_unflatten(treedef, leaves)


def save_weights(path: str | os.PathLike, params: Any, config: UNetConfig, *,
                 step: int | None = None) -> Path:
    """Write Flax ``params`` as canonical (PyTorch layout) safetensors, atomically."""
    meta = {} if step is None else {"step": str(int(step))}
    host = jax.tree.map(_host, params)
    save_safetensors(path, flax_to_torch(host, config), metadata=meta)
    return Path(path)


def load_weights(path: str | os.PathLike, config: UNetConfig) -> dict[str, Any]:
    """Read canonical safetensors weights (either backend's) as a Flax ``params`` tree."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file")
    try:
        state = load_safetensors(path)
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    try:
        return torch_to_flax(state, config)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def save_state(run_dir: str | os.PathLike, *, config: UNetConfig, params: Any, ema: Any,
               opt_state: Any, key: jax.Array, step: int,
               scalars: Mapping[str, Any] | None = None,
               arrays: Mapping[str, np.ndarray] | None = None,
               export_weights: bool = True) -> Path:
    """Write the resumable state atomically, then (optionally) the weight exports.

    Parameters
    ----------
    config : UNetConfig
        The network (for the canonical exports).
    params, ema : pytree
        Raw and EMA Flax parameter trees.
    opt_state : pytree
        The optax state.
    key : PRNG key
        The run's base key (stored as raw ``uint32`` data).
    step : int
        Number of optimizer steps taken so far.
    scalars : mapping, optional
        JSON-able values stored in the metadata.
    arrays : mapping of str to ndarray, optional
        Extra tensors (names must not start with model/, ema/, opt/, rng/).
    export_weights : bool
        Also write ``model.safetensors`` and ``ema.safetensors`` (canonical layout).
    """
    tensors = state_file.state_tensors(
        model=flatten_tree(params, ""), ema=flatten_tree(ema, ""), opt=flatten_tree(opt_state, ""),
        rng={"key": np.asarray(jax.random.key_data(key))}, arrays=arrays)
    # stored as the JAX writer always has: contiguous, scalars as (1,) (unflatten_like reads them)
    tensors = {k: np.ascontiguousarray(np.asarray(v)) for k, v in tensors.items()}
    header = state_file.state_header(step, scalars, key_impl=str(jax.random.key_impl(key)))
    path = state_file.write_state(state_path(run_dir), tensors, header)
    if export_weights:
        paths = RunPaths.of(run_dir)
        save_weights(paths.model, params, config, step=step)
        save_weights(paths.ema, ema, config, step=step)
    return path


def load_state(run_dir: str | os.PathLike, *, params: Any, ema: Any, opt_state: Any
               ) -> dict[str, Any]:
    """Read ``state-jax.safetensors`` into trees shaped like the given templates.

    Returns
    -------
    dict
        ``{"step": int, "params", "ema", "opt_state" (NumPy leaves), "key": uint32 data,
        "scalars": dict, "arrays": {name: ndarray}}`` (``arrays`` holds the extra tensors
        passed to :func:`save_state`).
    """
    state = state_file.read_state(run_dir, "jax", "JAX")
    tensors, path = state.tensors, state.path
    return {"step": state.step, "scalars": state.scalars,
            "params": unflatten_like(params, tensors, "model/", path),
            "ema": unflatten_like(ema, tensors, "ema/", path),
            "opt_state": unflatten_like(opt_state, tensors, "opt/", path),
            "key": tensors["rng/key"], "arrays": state.extra}
