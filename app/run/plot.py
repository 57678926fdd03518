"""The loss curve of a run as a PNG (``ddpm plot``), for those who do not run TensorBoard.

The curve is ``log.csv``'s ``loss`` column (the mean loss of each log window, at the
window's last step; docs/run-directory.md) against ``step``, on a log scale where the loss
falls by more than a decade. Where the run has been evaluated (``RUN/fid.csv``, one row per
``ddpm eval fid``), the FIDs are drawn at their steps on a second axis, one marker series
per chain. A run trained with the bound (``--loss vlb|hybrid``) logs the loss's two parts
(``loss_simple``, ``loss_vlb``): L_simple is drawn beside the loss, and T * L_{t-1} (bits/dim,
on its own scale) in a second panel below. The PNG (default ``RUN/loss.png``) is written atomically
(:mod:`ddpm_core.app.run.atomic`); matplotlib comes with the ``eval`` extra.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ddpm_core.app.run.atomic import atomic_write_bytes
from ddpm_core.app.run.fid_log import read_fid_rows
from ddpm_core.app.run.rundir import RunPaths

__all__ = ["PLOT_NAME", "plot_loss", "read_loss_curve", "read_loss_parts", "render_loss_png"]

PLOT_NAME = "loss.png"  # the default output, in the run directory
PARTS = ("loss_simple", "loss_vlb")  # ddpm_core.app.training.logs.TERM_FIELDS
_EXTRA = 'pip install "ddpm-core[eval]"'


def read_loss_curve(run_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, losses)`` of ``run_dir/log.csv``: int64 (n,) and float64 (n,), n >= 1.

    Raises
    ------
    FileNotFoundError
        No such run directory, or it holds no ``log.csv``.
    ValueError
        ``log.csv`` has no ``step``/``loss`` columns, a value that is not a number (naming
        the line), or no rows yet.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such run directory")
    path = RunPaths.of(root).log
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; the run has no training log (is "
                                f"{root} a run directory written by `ddpm train`?)")
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("step", "loss") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: not a training log (no {missing[0]!r} column)")
        points = [_point(path, reader.line_num, row) for row in reader]
    if not points:
        raise ValueError(f"{path}: the log is empty (its first row is written after "
                         "--log-every steps); nothing to plot")
    steps, losses = zip(*points, strict=True)
    return np.asarray(steps, np.int64), np.asarray(losses, np.float64)


def read_loss_parts(run_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The loss's parts ``{"loss_simple", "loss_vlb"}`` of ``run_dir/log.csv``, float64 (n,)
    each on :func:`read_loss_curve`'s rows (NaN where a row has none, e.g. rows logged before
    the columns existed); empty for a log without them (``--loss simple``).

    Raises
    ------
    ValueError
        A part that is neither empty nor a number (naming the line).
    """
    path = RunPaths.of(run_dir).log
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        names = [c for c in PARTS if c in (reader.fieldnames or [])]
        rows = [(reader.line_num, row) for row in reader]
    return {name: np.asarray([_part(path, line, row, name) for line, row in rows], np.float64)
            for name in names}


def _part(path: Path, line: int, row: dict[str, str], name: str) -> float:
    text = row.get(name) or ""
    try:
        return float(text) if text.strip() else float("nan")
    except ValueError:
        raise ValueError(f"{path}: line {line}: {name} {text!r} is not a number") from None


def _point(path: Path, line: int, row: dict[str, str]) -> tuple[int, float]:
    try:
        return int(row["step"]), float(row["loss"])
    except (TypeError, ValueError):
        raise ValueError(f"{path}: line {line}: step {row.get('step')!r}, loss "
                         f"{row.get('loss')!r} is not a step and a loss") from None


def render_loss_png(steps: np.ndarray, losses: np.ndarray, title: str,
                    fid_rows: list[dict[str, Any]] | None = None,
                    parts: dict[str, np.ndarray] | None = None) -> bytes:
    """The loss against the step as PNG bytes (matplotlib's Agg canvas; no pyplot state),
    with ``fid_rows`` (:func:`~ddpm_core.app.run.fid_log.read_fid_rows`) on a second axis
    and the loss's ``parts`` (:func:`read_loss_parts`; a second panel for ``loss_vlb``).

    Raises
    ------
    ImportError
        matplotlib is missing (the message names the ``eval`` extra).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(f"ddpm plot needs matplotlib ({e}): {_EXTRA}") from e
    parts = parts or {}
    vlb = parts.get("loss_vlb")
    fig = Figure(figsize=(6.4, 4.0 if vlb is None else 6.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1 if vlb is None else 2, 1, 1)
    marker = "o" if len(steps) <= 50 else None
    ax.plot(steps, losses, marker=marker, markersize=3, lw=1.2, label="loss")
    if "loss_simple" in parts:
        ax.plot(steps, parts["loss_simple"], ls="--", lw=1, label="L_simple (eq. 14)")
        ax.legend(loc="upper left", fontsize="small")
    _scale_and_label(ax, losses, "training loss (mean of each log window)")
    ax.set_title(title)
    if fid_rows:
        _draw_fid(ax.twinx(), fid_rows)
    if vlb is not None:
        low = fig.add_subplot(2, 1, 2, sharex=ax)
        low.plot(steps, vlb, marker=marker, markersize=3, lw=1.2, color="tab:green")
        _scale_and_label(low, vlb, "T * L_{t-1} (bits/dim)")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    return out.getvalue()


def _scale_and_label(ax: Any, values: np.ndarray, ylabel: str) -> None:
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() > 0 and finite.max() >= 10 * finite.min():
        ax.set_yscale("log")  # a long run's loss falls by more than a decade
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)


def _draw_fid(ax: Any, rows: list[dict[str, Any]]) -> None:
    chains: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        name = f"{r['sampler']}-{r['steps']}" if r["steps"] is not None else r["sampler"]
        chains.setdefault(f"FID, {name} (N={r['n']})", []).append((r["step"], r["fid"]))
    for (label, points), marker in zip(sorted(chains.items()), "s^vDo<>", strict=False):
        xs, ys = zip(*sorted(points), strict=True)
        ax.plot(xs, ys, marker=marker, ls="--", lw=1, color="tab:red", label=label)
    ax.set_ylabel("FID (ddpm eval fid)", color="tab:red")
    ax.legend(loc="upper right", fontsize="small")


def _check_png_out(out: Path) -> None:
    if out.suffix.lower() != ".png":
        raise ValueError(f"--out {out}: the plot is written as PNG, so --out must end in .png; "
                         f"got {out.suffix or 'no extension'!r}")
    if out.is_dir():
        raise ValueError(f"--out {out}: is a directory; give a file name")
    if out.parent.name == "samples" and (out.parent.parent / "run.json").is_file():
        raise ValueError(f"--out {out}: would replace a sample grid of the run in "
                         f"{out.parent.parent}; write the plot elsewhere")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"--out {out}: the folder {parent} does not exist; create it "
                                "first")


def plot_loss(run_dir: str | os.PathLike, out: str | os.PathLike | None = None
              ) -> dict[str, Any]:
    """Plot ``run_dir/log.csv``'s loss curve to ``out`` (default ``run_dir/loss.png``).

    Returns
    -------
    dict
        ``{"out": str, "points": int, "last_step": int, "last_loss": float,
        "fid_points": int, "parts": [str]}`` (``fid_points``: the rows of ``RUN/fid.csv``
        drawn; ``parts``: the loss parts drawn, empty for ``--loss simple``).

    Raises
    ------
    FileNotFoundError, ValueError
        From :func:`read_loss_curve` or :func:`~ddpm_core.app.run.fid_log.read_fid_rows`,
        or an ``out`` that is not a ``.png`` in an existing folder.
    ImportError
        matplotlib is missing.
    """
    steps, losses = read_loss_curve(run_dir)
    parts = read_loss_parts(run_dir)
    fid_rows = read_fid_rows(run_dir)
    target = Path(out) if out is not None else RunPaths.of(run_dir).root / PLOT_NAME
    _check_png_out(target)
    title = f"{Path(run_dir).resolve().name}: loss over {int(steps[-1])} steps"
    atomic_write_bytes(target, render_loss_png(steps, losses, title, fid_rows, parts))
    return {"out": str(target), "points": int(steps.size), "last_step": int(steps[-1]),
            "last_loss": float(losses[-1]), "fid_points": len(fid_rows), "parts": list(parts)}
