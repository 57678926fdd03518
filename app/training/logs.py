"""The CSV log of a run and the progress line on stderr."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ddpm_core.app.run import progress as run_progress
from ddpm_core.app.run.atomic import atomic_write_bytes

__all__ = ["LOG_FIELDS", "TERM_FIELDS", "CsvLog", "Progress", "log_fields"]

LOG_FIELDS = ("step", "loss", "grad_norm", "lr", "images_per_s", "seconds")
# the loss's parts (``ddpm_core.training_loss_terms``) of a run trained with the bound:
# L_simple (eq. 14) and T * L_{t-1} in bits/dim, each the step's weighted batch mean
TERM_FIELDS = ("loss_simple", "loss_vlb")


def log_fields(terms: Sequence[str] = ()) -> tuple[str, ...]:
    """log.csv's columns: :data:`LOG_FIELDS`, then the backend's loss ``terms`` (none, or
    :data:`TERM_FIELDS` for ``--loss vlb|hybrid``)."""
    return LOG_FIELDS + tuple(terms)


class CsvLog:
    """Append-only CSV log with a fixed header.

    Parameters
    ----------
    path : path
    fields : sequence of str
        Column names; the first should be ``"step"``.
    resume_step : int, optional
        When given and the file exists, rows with ``step > resume_step`` (written after
        the checkpoint being resumed) are dropped first, so the log matches the weights.
        Otherwise an existing file is replaced.
    """

    def __init__(self, path: str | os.PathLike, fields: Sequence[str], *,
                 resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.fields = list(fields)
        rows = self._kept_rows(resume_step) if resume_step is not None else []
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.path, buf.getvalue().encode("utf-8"))

    def _kept_rows(self, resume_step: int) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        return [r for r in rows if (step := _row_step(r)) is not None and step <= resume_step]

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row (missing columns left empty, floats with 6 significant digits)."""
        out = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore").writerow(out)

    def read(self) -> list[dict[str, str]]:
        with self.path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))


def _row_step(row: Mapping[str, str]) -> int | None:
    try:
        return int(row.get("step", ""))
    except ValueError:
        return None


class Progress:
    """The training progress on stderr: step, loss, images/s and ETA, at each log boundary
    (a tqdm bar on a terminal, a plain line every few percent elsewhere;
    :class:`ddpm_core.app.run.progress.Progress`). ``initial``: the step a resumed run starts at."""

    def __init__(self, total: int, batch_size: int, *, enabled: bool, initial: int = 0) -> None:
        self.total, self.batch_size, self.enabled = total, batch_size, enabled
        self.bar = run_progress.Progress(total, "training", unit="step", enabled=enabled, every=5.0,
                                         initial=initial)

    def update(self, step: int, loss: float, ips: float) -> None:
        """Show step ``step`` with its loss and throughput."""
        self.bar.update(step - self.bar.n, loss=f"{loss:.4f}", img_s=f"{ips:,.0f}")

    def close(self) -> None:
        """End the bar on a terminal."""
        self.bar.close()
