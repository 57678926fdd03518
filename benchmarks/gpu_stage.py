"""Make a checkout importable without installing it (``benchmarks/gpu_check.py``'s staging).

The ``[tool.setuptools] package-dir`` mapping of pyproject.toml (``ddpm_core.backends ->
backends/``, ...) is laid out as symlinks in a temporary folder put first on ``sys.path``
and on the parts' ``PYTHONPATH``; pure-Python wheels of ``.whl/`` are unpacked and put last.
"""

from __future__ import annotations

import atexit
import importlib
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE_ENV = "GPUCHECK_STAGE"


def package_dirs(root: Path) -> dict[str, Path]:
    """``[tool.setuptools] package-dir`` of ``root/pyproject.toml``: package -> absolute folder."""
    try:
        import tomllib
    except ImportError as e:  # Python 3.10
        raise RuntimeError("gpu_check reads pyproject.toml with tomllib: it needs Python >= 3.11") from e

    path = root / "pyproject.toml"
    with open(path, "rb") as f:
        mapping = tomllib.load(f).get("tool", {}).get("setuptools", {}).get("package-dir", {})
    if not mapping:
        raise ValueError(f"{path}: no [tool.setuptools] package-dir mapping to stage")
    out = {}
    for name, folder in mapping.items():
        src = (root / folder).resolve()
        if not name or not (src / "__init__.py").is_file():
            raise ValueError(f"{path}: package-dir maps {name!r} to {folder!r}, which is not a "
                             f"package folder of {root} (a non-empty name and an __init__.py needed)")
        out[name] = src
    return out


def stage_packages(mapping: dict[str, Path], stage: Path) -> None:
    """Lay the mapped packages out under ``stage`` (parents first) as symlinks to their files.

    ``ddpm_core.backends -> backends/`` becomes ``stage/ddpm_core/backends/<each entry>``.
    A folder of a parent that a mapping also names is replaced by the mapped one.
    """
    for name in sorted(mapping, key=lambda n: n.count(".")):
        dest = stage.joinpath(*name.split("."))
        if dest.is_symlink():
            dest.unlink()
        dest.mkdir(parents=True, exist_ok=True)
        for entry in mapping[name].iterdir():
            link = dest / entry.name
            if entry.name != "__pycache__" and not os.path.lexists(link):
                link.symlink_to(entry)


def unpack_wheels(folder: Path, target: Path) -> list[str]:
    """Unpack every pure-Python wheel (``*-none-any.whl``) of ``folder`` into ``target``."""
    names = []
    for wheel in sorted(folder.glob("*.whl")):
        if not wheel.name.endswith("-none-any.whl"):
            print(f"gpu_check: {wheel} is not a pure-Python wheel; left out", file=sys.stderr)
            continue
        with zipfile.ZipFile(wheel) as z:
            z.extractall(target)
        names.append(wheel.name)
    return names


def bootstrap() -> dict[str, str]:
    """Make the checkout (and ``.whl/``) importable here and in the parts; their environment.

    The first call stages into a new temporary folder (removed at exit) and records it in
    ``$GPUCHECK_STAGE``; a part finds it there and only fixes the order of ``sys.path``.
    """
    stage = os.environ.get(STAGE_ENV)
    if stage is None:
        stage = tempfile.mkdtemp(prefix="gpu_check-")
        atexit.register(shutil.rmtree, stage, ignore_errors=True)
        stage_packages(package_dirs(ROOT), Path(stage, "src"))
        if (ROOT / ".whl").is_dir():
            unpack_wheels(ROOT / ".whl", Path(stage, "wheels"))
        src, wheels = str(Path(stage, "src")), str(Path(stage, "wheels"))
        os.environ[STAGE_ENV] = stage
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (src, os.environ.get("PYTHONPATH"), wheels) if p)
    src, wheels = str(Path(stage, "src")), str(Path(stage, "wheels"))
    sys.path[:] = [src] + [p for p in sys.path if p not in (src, wheels)] + [wheels]
    importlib.invalidate_caches()
    return dict(os.environ)
