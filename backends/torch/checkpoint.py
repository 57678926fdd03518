"""Checkpoints of the PyTorch backend: safetensors only, written atomically.

Files in the run directory (``ddpm_core.app.rundir.RunPaths``):

``state-torch.safetensors``
    The resumable state, in **one** file so that it is replaced atomically as a whole:
    ``model/<name>`` and ``ema/<name>`` weights, ``opt/<param index>/<key>`` Adam moments
    and step counts, ``rng/torch`` (the CPU generator state as uint8), extra arrays
    (e.g. ``tsampler/...``); the scalars (step, seed, optimizer hyper-parameters, ...)
    are JSON in the safetensors metadata under ``"ddpm_state"``.
``model.safetensors``, ``ema.safetensors``
    The weights alone, canonical ``state_dict`` naming, for sampling with either backend.
    Written after the state file; each is atomic on its own.

Loading uses ``safetensors`` (no pickle, so no arbitrary code), never ``torch.load``.
A crash (even SIGKILL) at any point leaves the previous state file or the new one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as _save_bytes

from ddpm_core.app.atomic import atomic_write_bytes
from ddpm_core.app.rundir import RunPaths

__all__ = [
    "STATE_KEY",
    "load_state",
    "load_weights",
    "save_state",
    "save_weights",
    "state_path",
]

STATE_KEY = "ddpm_state"
STATE_FORMAT = 1


def state_path(run_dir: str | os.PathLike) -> Path:
    """``run_dir/state-torch.safetensors``."""
    return RunPaths.of(run_dir).state("torch", ".safetensors")


def _plain(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def save_weights(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor], *,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Write a ``state_dict`` as safetensors atomically (contiguous CPU copies).

    Uses ``ddpm_core.backends.convert.save_safetensors`` (the canonical writer shared with
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
        from ddpm_core.backends import convert
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
    sd = optimizer.state_dict()
    tensors = {}
    for idx, pstate in sd["state"].items():
        for key, value in pstate.items():
            t = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"opt/{idx}/{key}"] = t
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in sd["param_groups"]]
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
    tensors = {**{f"model/{k}": v for k, v in model.state_dict().items()},
               **{f"ema/{k}": v for k, v in ema.state_dict().items()},
               **opt_tensors, "rng/torch": torch.get_rng_state(), **dict(arrays or {})}
    meta = {"format": STATE_FORMAT, "step": int(step), "param_groups": groups,
            "scalars": dict(scalars or {})}
    path = state_path(run_dir)
    payload = _save_bytes(_plain(tensors), metadata={STATE_KEY: json.dumps(meta)})
    atomic_write_bytes(path, payload)
    if export_weights:
        paths = RunPaths.of(run_dir)
        save_weights(paths.model, model.state_dict(), metadata={"step": str(step)})
        save_weights(paths.ema, ema.state_dict(), metadata={"step": str(step)})
    return path


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        info = json.loads(meta[STATE_KEY])
    except Exception as e:
        raise ValueError(f"{path}: not a ddpm-core torch state file ({e})") from e
    if info.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: state format {info.get('format')!r} is not supported")
    return info


def _split(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    n = len(prefix)
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix)}


def _optimizer_state_dict(tensors: Mapping[str, torch.Tensor],
                          groups: list[dict[str, Any]]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in _split(tensors, "opt/").items():
        idx, key = name.split("/", 1)
        state.setdefault(int(idx), {})[key] = value
    param_groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()}
                    for g in groups]
    return {"state": state, "param_groups": param_groups}


def load_state(run_dir: str | os.PathLike, *, model: torch.nn.Module, ema: torch.nn.Module,
               optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, EMA, optimizer and the CPU RNG from ``state-torch.safetensors``.

    Returns
    -------
    dict
        ``{"step": int, "scalars": dict, "arrays": {name: Tensor}}`` (``arrays`` holds the
        extra tensors passed to :func:`save_state`).
    """
    path = state_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    info = _read_meta(path)
    device = next(model.parameters()).device
    tensors = load_weights(path, device="cpu")
    try:
        model.load_state_dict({k: v.to(device) for k, v in _split(tensors, "model/").items()})
        ema.load_state_dict({k: v.to(device) for k, v in _split(tensors, "ema/").items()})
        optimizer.load_state_dict(_optimizer_state_dict(tensors, info["param_groups"]))
    except (RuntimeError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: does not match this model/optimizer ({e})") from e
    torch.set_rng_state(tensors["rng/torch"])
    known = ("model/", "ema/", "opt/", "rng/")
    arrays = {k: v for k, v in tensors.items() if not k.startswith(known)}
    return {"step": int(info["step"]), "scalars": info["scalars"], "arrays": arrays}
