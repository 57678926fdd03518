"""The training-state file ``state-<backend>.safetensors``: one format for both backends.

What the file holds (tensor names, header fields) and how the run directory uses it is in
docs/run-directory.md. This module is the format's only implementation, NumPy and
safetensors only: each backend turns its trees into ``{name: ndarray}`` mappings, and
back, and calls :func:`write_state` / :func:`read_state`. The file is written atomically
(``ddpm_core.app.run.atomic``) and read without unpickling anything.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_core.app.run.atomic import atomic_write_bytes
from ddpm_core.app.run.rundir import RunPaths

__all__ = [
    "PREFIXES",
    "STATE_FORMAT",
    "STATE_KEY",
    "StateFile",
    "read_state",
    "state_header",
    "state_path",
    "state_tensors",
    "write_state",
]

STATE_KEY = "ddpm_state"
STATE_FORMAT = 1
PREFIXES = ("model/", "ema/", "opt/", "rng/")


def state_path(run_dir: str | os.PathLike, backend: str) -> Path:
    """``run_dir/state-<backend>.safetensors``."""
    return RunPaths.of(run_dir).state(backend, ".safetensors")


def state_tensors(*, model: Mapping[str, np.ndarray], ema: Mapping[str, np.ndarray],
                  opt: Mapping[str, np.ndarray], rng: Mapping[str, np.ndarray],
                  arrays: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The file's tensors: each part under its prefix (``model/``, ``ema/``, ``opt/``,
    ``rng/``), then the extra ``arrays`` under their own names, which must not start with
    one of those prefixes."""
    extra = dict(arrays or {})
    clash = [k for k in extra if k.startswith(PREFIXES)]
    if clash:
        raise ValueError(f"arrays names must not start with {PREFIXES}; got {clash}")
    parts = zip(PREFIXES, (model, ema, opt, rng), strict=True)
    return {**{prefix + k: v for prefix, part in parts for k, v in part.items()}, **extra}


def state_header(step: int, scalars: Mapping[str, Any] | None = None, *,
                 param_groups: list[dict[str, Any]] | None = None,
                 key_impl: str | None = None) -> dict[str, Any]:
    """The JSON header, in the order its fields are written: ``format``, ``step``,
    ``param_groups`` (PyTorch), ``scalars``, ``key_impl`` (JAX)."""
    info: dict[str, Any] = {"format": STATE_FORMAT, "step": int(step)}
    if param_groups is not None:
        info["param_groups"] = param_groups
    info["scalars"] = dict(scalars or {})
    if key_impl is not None:
        info["key_impl"] = key_impl
    return info


def write_state(path: str | os.PathLike, tensors: Mapping[str, np.ndarray],
                header: Mapping[str, Any]) -> Path:
    """Write ``tensors`` with ``header`` (JSON under ``STATE_KEY``) to ``path`` atomically.

    The arrays are stored as given (shape, dtype and bytes): a backend that wants them
    contiguous or at least one-dimensional converts them first.
    """
    from safetensors.numpy import save

    path = Path(path)
    atomic_write_bytes(path, save(dict(tensors), metadata={STATE_KEY: json.dumps(dict(header))}))
    return path


@dataclasses.dataclass(frozen=True)
class StateFile:
    """A state file as read: its path, JSON header and tensors (NumPy)."""

    path: Path
    header: dict[str, Any]
    tensors: dict[str, np.ndarray]

    @property
    def step(self) -> int:
        return int(self.header["step"])

    @property
    def scalars(self) -> dict[str, Any]:
        return self.header["scalars"]

    @property
    def extra(self) -> dict[str, np.ndarray]:
        """The tensors under none of ``PREFIXES``: the ``arrays`` given to :func:`state_tensors`."""
        return {k: v for k, v in self.tensors.items() if not k.startswith(PREFIXES)}

    def part(self, prefix: str) -> dict[str, np.ndarray]:
        """The tensors under ``prefix``, with the prefix removed."""
        n = len(prefix)
        return {k[n:]: v for k, v in self.tensors.items() if k.startswith(prefix)}


def read_state(run_dir: str | os.PathLike, backend: str, label: str) -> StateFile:
    """Read ``state-<backend>.safetensors`` of ``run_dir``; ``label`` names the backend in
    the error that a file without this format's header raises."""
    path = state_path(run_dir, backend)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint to resume from")
    header = _read_header(path, label)
    try:
        from safetensors.numpy import load_file

        tensors = dict(load_file(str(path)))
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{path}: not a readable safetensors file ({e})") from e
    return StateFile(path, header, tensors)


def _read_header(path: Path, label: str) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        info = json.loads(meta[STATE_KEY])
    except Exception as e:  # noqa: BLE001 - any unreadable header is the same error
        raise ValueError(f"{path}: not a ddpm-core {label} state file ({e})") from e
    if info.get("format") != STATE_FORMAT:
        raise ValueError(f"{path}: state format {info.get('format')!r} is not supported "
                         f"(this version reads format {STATE_FORMAT})")
    return info
