"""Which backend runs a subcommand, imported only when it is needed."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from ddpm_core.app.run.options import BACKENDS
from ddpm_core.app.run.rundir import read_run_json
from ddpm_core.checks import check_choice

__all__ = ["BackendUnavailable", "default_train_backend", "installed", "load_backend",
           "load_evaluation", "run_backend"]

_FRAMEWORK_MODULES = {"torch": ("torch", "safetensors"),
                      "jax": ("jax", "flax", "optax", "safetensors")}


class BackendUnavailable(RuntimeError):
    """The requested backend's framework is not installed."""


def installed(backend: str) -> bool:
    """Whether every framework module ``backend`` needs can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in _FRAMEWORK_MODULES[backend])


def load_backend(name: str) -> Any:
    """``ddpm_core.backends.<name>.api``, with a clear message if its framework is missing."""
    check_choice("backend", name, BACKENDS)
    missing = [m for m in _FRAMEWORK_MODULES[name] if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendUnavailable(f"backend {name!r} needs {', '.join(missing)}, which is not "
                                 f"installed: pip install 'ddpm-core[{name}]'")
    try:
        return importlib.import_module(f"ddpm_core.backends.{name}.api")
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in _FRAMEWORK_MODULES[name]:
            raise BackendUnavailable(f"backend {name!r} needs {e.name}: pip install "
                                     f"'ddpm-core[{name}]'") from e
        if e.name and e.name.startswith(f"ddpm_core.backends.{name}"):
            raise BackendUnavailable(f"backend {name!r} is not part of this installation "
                                     f"({e.name} is missing)") from e
        raise


def load_evaluation(backend: str) -> Any:
    """``ddpm_core.backends.<backend>.evaluation`` (a clear message if the framework is missing)."""
    load_backend(backend)
    return importlib.import_module(f"ddpm_core.backends.{backend}.evaluation")


def default_train_backend() -> str:
    """torch if installed, else jax."""
    for name in BACKENDS:
        if installed(name):
            return name
    raise BackendUnavailable("no backend installed: pip install 'ddpm-core[torch]' or "
                             "'ddpm-core[jax]'")


def run_backend(run_dir: str, requested: str | None) -> str:
    """The backend that reads ``run_dir``: the requested one, else the run's, else any."""
    if requested:
        return requested
    trained = read_run_json(run_dir)["backend"]
    if installed(trained):
        return trained
    others = [b for b in BACKENDS if b != trained and installed(b)]
    return others[0] if others else trained
