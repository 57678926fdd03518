"""Output paths, checked before any work: never a run's own file, never a directory.

``check_output(path, kind)`` is called by every subcommand that writes an ``--out`` before
it samples anything; ``check_train_out`` by the training loop before it writes anything.
"""

from __future__ import annotations

import os
from pathlib import Path

from ddpm_core.app.run.lock import LOCK_NAME
from ddpm_core.checks import check_choice

__all__ = ["OUTPUT_KINDS", "RUN_FILES", "check_output", "check_train_out", "output_files"]

# kind -> the suffixes of the files written (the first is the one --out names)
OUTPUT_KINDS = {"grid": (".png", ".npz"), "prefix": (".csv", ".png")}
RUN_FILES = ("run.json", "model.safetensors", "ema.safetensors", "log.csv", LOCK_NAME)


def output_files(path: str | os.PathLike, kind: str) -> list[Path]:
    """The files an output of ``kind`` at ``path`` writes (a grid: the PNG and the .npz
    beside it; a prefix: ``PREFIX.csv`` and ``PREFIX.png``)."""
    p = Path(path)
    if kind == "grid":
        return [p, p.with_suffix(".npz")]
    return [p.with_name(p.name + suffix) for suffix in OUTPUT_KINDS[kind]]


def check_output(path: str | os.PathLike, kind: str = "grid") -> list[Path]:
    """Check an ``--out`` before any work; returns the files it will write.

    Raises
    ------
    ValueError
        If the extension does not match the format written (``.png`` for a grid), or a
        file written would replace a run's own file (run.json, weights, state, log,
        sample grids) or a directory.
    FileNotFoundError, PermissionError
        If the folder does not exist or is not writable.
    """
    check_choice("kind", kind, OUTPUT_KINDS)
    p = Path(path)
    if kind == "grid" and p.suffix.lower() != ".png":
        raise ValueError(f"--out {p}: a grid is written as PNG, so --out must end in .png "
                         f"(the .npz is written beside it); got {p.suffix or 'no extension'!r}")
    files = output_files(p, kind)
    for f in files:
        _check_file(f)
    return files


def _check_file(f: Path) -> None:
    if f.is_dir():
        raise ValueError(f"--out {f}: is a directory; give a file name")
    if _is_run_file(f):
        raise ValueError(f"--out {f}: would replace a file of the run in {_run_of(f)}; "
                         "write outputs elsewhere")
    parent = f.parent if str(f.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"--out {f}: the folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK) or (f.exists() and not os.access(f, os.W_OK)):
        raise PermissionError(f"--out {f}: {parent} is not writable; choose another --out")


def _run_of(f: Path) -> Path:
    return f.parent.parent if f.parent.name == "samples" else f.parent


def _is_run_file(f: Path) -> bool:
    if (f.parent / "run.json").is_file():
        return f.name in RUN_FILES or f.name.startswith("state-")
    return f.parent.name == "samples" and (f.parent.parent / "run.json").is_file()


def check_train_out(out: str | os.PathLike, *, resume: bool) -> None:
    """A training ``--out``: a run directory, a new or empty folder; never a file.

    Raises
    ------
    FileExistsError
        If ``out`` is a file, or (a new run) a folder holding files that are not a run's.
    PermissionError
        If ``out`` (or the folder it would be created in) is not writable.
    """
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise FileExistsError(f"--out {p}: is a file, not a run directory; choose another --out")
    if p.is_dir():
        foreign = sorted(e.name for e in p.iterdir()
                         if not (e.name in RUN_FILES or e.name.startswith(("state-", "."))
                                 or e.name in ("samples", "tensorboard", "fid-cache", "fid.csv",
                                               "loss.png")))
        if foreign and not resume:
            raise FileExistsError(f"--out {p}: is a folder that is not a run directory (it "
                                  f"holds {', '.join(foreign[:3])}); choose a new or empty "
                                  "folder")
    target = p if p.is_dir() else _existing_parent(p)
    if not os.access(target, os.W_OK | os.X_OK):
        raise PermissionError(f"--out {p}: {target} is not writable; choose another --out")


def _existing_parent(p: Path) -> Path:
    for parent in p.absolute().parents:
        if parent.exists():
            return parent
    return Path("/")
