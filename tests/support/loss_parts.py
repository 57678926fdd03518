"""log.csv's loss parts of a run trained with the bound (``--loss vlb|hybrid``), checked.

Both backends' training tests call :func:`check_loss_parts`: the columns are there (and
only for such a run), and each row's loss is made of them as ``training_loss_terms`` says
(``loss = loss_simple + 0.001 * loss_vlb`` for hybrid, ``loss = loss_vlb`` for vlb), which
fails if the parts are swapped, unweighted or taken from another step.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ddpm_core.app.training.logs import LOG_FIELDS, TERM_FIELDS

HYBRID_WEIGHT = 0.001  # training_losses' default, which the trainers use
CSV_RTOL = 2e-6  # log.csv keeps 6 significant digits


def log_rows(run: Path) -> tuple[list[str], list[dict[str, str]]]:
    """log.csv's header and rows."""
    with open(Path(run) / "log.csv", newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or ()), list(reader)


def check_loss_parts(run: Path, loss: str) -> dict[str, np.ndarray]:
    """Assert log.csv's columns and the make-up of each row's loss; the columns as arrays."""
    header, rows = log_rows(run)
    if loss == "simple":
        assert tuple(header) == LOG_FIELDS, header
        return {}
    assert tuple(header) == LOG_FIELDS + TERM_FIELDS, header
    col = {k: np.array([float(r[k]) for r in rows]) for k in ("loss", *TERM_FIELDS)}
    whole = (col["loss_simple"] + HYBRID_WEIGHT * col["loss_vlb"] if loss == "hybrid"
             else col["loss_vlb"])
    np.testing.assert_allclose(col["loss"], whole, rtol=3 * CSV_RTOL)
    assert np.all(col["loss_vlb"] > 0) and np.all(col["loss_simple"] > 0)
    if loss == "hybrid":  # the bound's part is visible in the loss, not lost in rounding
        assert np.all(HYBRID_WEIGHT * col["loss_vlb"] > 10 * CSV_RTOL * col["loss"])
    return col
