"""MkDocs hook: lay the package out as it installs, for mkdocstrings to read statically.

pyproject.toml maps folders into one package (``ddpm_core.backends -> backends/``, ...), so
the checkout's ``ddpm_core/`` alone lacks its subpackages. The hook mirrors the
``[tool.setuptools] package-dir`` mapping as symlinks in a temporary folder and puts it first
on the Python handler's search paths; nothing is installed or imported.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mkdocs.plugins import event_priority

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the docs group installs tomli there
    import tomli as tomllib


def stage(root: Path) -> Path:
    """A temporary folder holding the mapped packages (parents first) as symlinked files."""
    with open(root / "pyproject.toml", "rb") as f:
        mapping = tomllib.load(f)["tool"]["setuptools"]["package-dir"]
    folder = Path(tempfile.mkdtemp(prefix="ddpm-docs-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    for name in sorted(mapping, key=lambda n: n.count(".")):
        dest = folder.joinpath(*name.split("."))
        dest.mkdir(parents=True, exist_ok=True)
        for entry in (root / mapping[name]).iterdir():
            link = dest / entry.name
            if entry.name != "__pycache__" and not link.exists():
                link.symlink_to(entry.resolve())
    return folder


@event_priority(100)  # before mkdocstrings reads its handlers' options
def on_config(config: Any, **kwargs: Any) -> Any:
    handlers = config["plugins"]["mkdocstrings"].config.handlers
    python = handlers.setdefault("python", {})
    python["paths"] = [str(stage(Path(config["config_file_path"]).parent)), *python.get("paths", [])]
    return config
