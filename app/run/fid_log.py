"""The FID rows of a run (``RUN/fid.csv``): one line per ``ddpm eval fid``, read by ``ddpm plot``.

Each evaluation appends one line, with the run's step at the time, the chain that sampled
and the metrics (``FID_LOG_FIELDS``); the header is written with the first line. A line is
one ``O_APPEND`` write, so two evaluations never interleave inside a line, and a row once
written is never rewritten. docs/run-directory.md lists the file.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["FID_LOG", "FID_LOG_FIELDS", "append_fid_row", "read_fid_rows"]

FID_LOG = "fid.csv"  # in the run directory
FID_LOG_FIELDS = ("step", "sampler", "steps", "n", "reference_n", "fid", "kid", "kid_std",
                  "floor_fid", "floor_kid")
_NUMBERS = {"step": int, "n": int, "reference_n": int, "fid": float, "kid": float,
            "kid_std": float, "floor_fid": float, "floor_kid": float}


def _line(values: list[Any]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(values)
    return out.getvalue().encode("utf-8")


def append_fid_row(run_dir: str | os.PathLike, row: Mapping[str, Any]) -> Path:
    """Append ``row`` (every key of ``FID_LOG_FIELDS``; ``steps`` may be None: the full
    chain) to ``run_dir/fid.csv``, writing the header first if the file is new or empty.

    Returns
    -------
    Path of the log.
    """
    path = Path(run_dir) / FID_LOG
    missing = [k for k in FID_LOG_FIELDS if k not in row]
    if missing:
        raise KeyError(f"an FID row needs {', '.join(missing)}")
    values = ["" if row[k] is None else (f"{row[k]:.6g}" if isinstance(row[k], float) else row[k])
              for k in FID_LOG_FIELDS]
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        head = _line(list(FID_LOG_FIELDS)) if os.fstat(fd).st_size == 0 else b""
        os.write(fd, head + _line(values))
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_fid_rows(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of ``run_dir/fid.csv`` (numbers parsed, ``steps`` None for the full chain);
    ``[]`` if the run has not been evaluated.

    Raises
    ------
    ValueError
        The file has another header, or a line whose numbers do not parse (naming the line).
    """
    path = Path(run_dir) / FID_LOG
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != FID_LOG_FIELDS:
            raise ValueError(f"{path}: not an FID log (its header is {reader.fieldnames}; "
                             f"expected {','.join(FID_LOG_FIELDS)})")
        return [_parse(path, reader.line_num, r) for r in reader]


def _parse(path: Path, line: int, row: dict[str, str]) -> dict[str, Any]:
    try:
        out: dict[str, Any] = {k: conv(row[k]) for k, conv in _NUMBERS.items()}
        out["steps"] = int(row["steps"]) if row["steps"] else None
    except (TypeError, ValueError):
        raise ValueError(f"{path}: line {line}: {row} is not an FID row "
                         f"({','.join(FID_LOG_FIELDS)})") from None
    return {**out, "sampler": row["sampler"]}
