"""Checkpoints of the PyTorch backend: safetensors only, written atomically.

The run directory's files (the state file ``state-torch.safetensors``, the weight exports
``model.safetensors`` and ``ema.safetensors``) are described in docs/run-directory.md; the
state file's format is :mod:`ddpm_core.app.run.state_file`, which this module feeds with the
networks, the Adam state and the CPU generator as NumPy arrays. Loading uses
``safetensors`` (no pickle, so no arbitrary code), never ``torch.load``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as _save_bytes

from ddpm_core.app.run import state_file
from ddpm_core.app.run.atomic import atomic_write_bytes
from ddpm_core.app.run.rundir import RunPaths
from ddpm_core.app.run.state_file import STATE_FORMAT, STATE_KEY

__all__ = ["STATE_FORMAT", "STATE_KEY", "load_state", "load_weights", "save_state", "save_weights",
           "state_path"]

def state_path(run_dir: str | os.PathLike) -> Path:
    """``run_dir/state-torch.safetensors``."""
    return state_file.state_path(run_dir, "torch")


def _plain(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def _numpy(tensors: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Host NumPy copies, shapes kept (a 0-d tensor stays 0-d)."""
    return {k: v.numpy() for k, v in _plain(tensors).items()}


def save_weights(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], *,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write a ``state_dict`` as safetensors atomically (contiguous CPU copies).

    Uses ``ddpm_core.interop.convert.save_safetensors`` (the canonical writer shared with
    the JAX backend) when it is available.
    """
    tensors = _plain(state_dict)
    writer = _convert_writer()
    if writer is not None:
        writer(path, tensors, metadata=dict(metadata or {}))
    else:
        atomic_write_bytes(path, _save_bytes(tensors, metadata=dict(metadata or {})))
    return Path(path)


def _convert_writer() -> Any:
    try:
        from ddpm_core.interop import convert
    except ImportError:
        return None
    return getattr(convert, "save_safetensors", None)


def load_weights(path: str | os.PathLike, *, device: str | torch.device = "cpu"
                 ) -> dict[str, torch.Tensor]:
    """Read a safetensors weight file (no unpickling); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such weight file")
    try:
        return load_file(str(path), device=str(device))
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor],
                                                                  list[dict[str, Any]]]:
    """``({"<param index>/<key>": tensor}, param_groups as JSON)`` of an optimizer."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, pstate in sd["state"].items():
        for key, value in pstate.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{idx}/{key}"] = t
    groups = [{k: (list(v) if isinstance(v, tuple) else float(v) if torch.is_tensor(v) else v)
               for k, v in g.items()} for g in sd["param_groups"]]  # a compiled run's lr is a tensor
    return tensors, groups


def save_state(run_dir: str | os.PathLike, *, model: torch.nn.Module, ema: torch.nn.Module,
               optimizer: torch.optim.Optimizer, step: int,
               scalars: Mapping[str, Any] | None = None,
               arrays: Mapping[str, torch.Tensor] | None = None,
               export_weights: bool = True) -> Path:
    """Write the resumable state atomically, then (optionally) the weight exports.

    Parameters
    ----------
    model, ema : nn.Module
        Raw and EMA networks (unwrapped: not DDP / compiled wrappers).
    optimizer : Optimizer
    step : int
        Number of optimizer steps taken so far.
    scalars : mapping, optional
        JSON-able values stored in the metadata (no NumPy scalars).
    arrays : mapping of str to Tensor, optional
        Extra tensors (names must not start with model/, ema/, opt/, rng/).
    export_weights : bool
        Also write ``model.safetensors`` and ``ema.safetensors``.
    """
    opt_tensors, groups = _optimizer_tensors(optimizer)
    tensors = state_file.state_tensors(
        model=_numpy(model.state_dict()), ema=_numpy(ema.state_dict()), opt=_numpy(opt_tensors),
        rng=_numpy({"torch": torch.get_rng_state()}), arrays=_numpy(dict(arrays or {})))
    path = state_file.write_state(state_path(run_dir), tensors,
                                  state_file.state_header(step, scalars, param_groups=groups))
    if export_weights:
        paths = RunPaths.of(run_dir)
        save_weights(paths.model, model.state_dict(), metadata={"step": str(step)})
        save_weights(paths.ema, ema.state_dict(), metadata={"step": str(step)})
    return path


def _optimizer_state_dict(opt: Mapping[str, torch.Tensor],
                          groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in opt.items():
        idx, key = name.split("/", 1)
        state.setdefault(int(idx), {})[key] = value
    param_groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()}
                    for g in groups]
    return {"state": state, "param_groups": param_groups}


@torch.no_grad()
def _restride_state(optimizer: torch.optim.Optimizer) -> None:
    """Lay each per-parameter state tensor (Adam's moments) out as its parameter is.

    The file holds them contiguous; a channels_last parameter (CUDA, or DDP on 1-channel
    data) needs them channels_last too: the fused Adam kernel walks the parameter, its
    gradient and its moments as flat memory, so other strides would pair wrong elements.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            st = optimizer.state.get(p, {})
            for key, value in st.items():
                if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                    st[key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def load_state(run_dir: str | os.PathLike, *, model: torch.nn.Module, ema: torch.nn.Module,
               optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, EMA, optimizer and the CPU RNG from ``state-torch.safetensors``.

    Returns
    -------
    dict
        ``{"step": int, "scalars": dict, "arrays": {name: Tensor}}`` (``arrays`` holds the
        extra tensors passed to :func:`save_state`).
    """
    state = state_file.read_state(run_dir, "torch", "torch")
    device = next(model.parameters()).device

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(v) for k, v in state.part(prefix).items()}

    try:
        model.load_state_dict({k: v.to(device) for k, v in part("model/").items()})
        ema.load_state_dict({k: v.to(device) for k, v in part("ema/").items()})
        optimizer.load_state_dict(_optimizer_state_dict(part("opt/"), state.header["param_groups"]))
        _restride_state(optimizer)
    except (RuntimeError, KeyError, ValueError) as e:
        raise ValueError(f"{state.path}: does not match this model/optimizer ({e})") from e
    torch.set_rng_state(torch.from_numpy(state.tensors["rng/torch"]))
    arrays = {k: torch.from_numpy(v) for k, v in state.extra.items()}
    return {"step": state.step, "scalars": state.scalars, "arrays": arrays}
