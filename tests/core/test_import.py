"""`import ddpm_core` (and its framework-free submodules) imports no framework.

Runs in a fresh interpreter so that frameworks other tests imported do not hide a leak.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

FRAMEWORKS = ("torch", "jax", "jaxlib", "flax", "optax", "tensorflow")
MODULES = ("ddpm_core", "ddpm_core.models", "ddpm_core.app.cli", "ddpm_core.app.training.trainer", "ddpm_core.data",
           "ddpm_core.runs")

_SCRIPT = """
import importlib, importlib.util, json, sys
found = []
for name in {modules!r}:
    if importlib.util.find_spec(name) is not None:
        importlib.import_module(name)
        found.append(name)
leaked = sorted(m for m in {frameworks!r} if m in sys.modules)
print(json.dumps({{"imported": found, "leaked": leaked}}))
"""


def _run(modules: tuple[str, ...]) -> dict:
    import json

    code = _SCRIPT.format(modules=modules, frameworks=FRAMEWORKS)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tempfile.gettempdir(),  # not the checkout: its ddpm_core/ would shadow the install
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_ddpm_core_imports_no_framework():
    result = _run(("ddpm_core",))
    assert result["imported"] == ["ddpm_core"]
    assert result["leaked"] == [], f"import ddpm_core imported {result['leaked']}"


@pytest.mark.parametrize("module", MODULES[1:])
def test_framework_free_submodules_import_no_framework(module):
    result = _run((module,))
    if module not in result["imported"]:
        pytest.skip(f"{module} not present")
    assert result["leaked"] == [], f"import {module} imported {result['leaked']}"


SURFACE = (
    "Schedule",
    "q_sample",
    "q_posterior",
    "ddpm_step",
    "ddim_step",
    "normal_kl",
    "discretized_gaussian_log_likelihood",
)


def test_embedding_surface_is_reexported():
    """The names issue 2 promises to embedding projects, at the top level and in __all__."""
    import ddpm_core

    missing = [name for name in SURFACE if not hasattr(ddpm_core, name)]
    assert not missing, f"ddpm_core lacks {missing}"
    assert set(SURFACE) <= set(ddpm_core.__all__)
    for name in ("linear", "cosine", "quadratic", "sigmoid", "scaled_linear", "from_betas"):
        assert callable(getattr(ddpm_core.Schedule, name)), name
