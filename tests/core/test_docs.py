"""README's examples and the core's docstring examples run as doctests (NumPy only)."""

from __future__ import annotations

import doctest
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
# every module of the framework-free rooms (the core, models, interop): their examples run here
CORE_MODULES = sorted(
    ".".join(("ddpm_core", *([] if folder == "ddpm_core" else [folder]), path.stem))
    for folder in ("ddpm_core", "models", "interop")
    for path in (ROOT / folder).glob("*.py")
    if path.stem not in ("__init__", "__main__")
)


def test_readme_examples_run() -> None:
    readme = ROOT / "README.md"
    if not readme.exists():
        pytest.skip("README.md is not beside the tests (installed-package run)")
    result = doctest.testfile(str(readme), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


NEEDS = {"ddpm_core.data": "sklearn"}  # examples that read the embedded data (the [data] extra)


@pytest.mark.parametrize("name", CORE_MODULES)
def test_docstring_examples_run(name: str) -> None:
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
