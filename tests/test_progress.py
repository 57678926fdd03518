"""Progress of long jobs (``ddpm_core.app.run.progress``): a tqdm bar on a terminal, plain
lines every few percent elsewhere, nothing when disabled; the sampling chains of both
backends report every step without changing a sample."""

from __future__ import annotations

import contextlib
import io
import os
import re

import numpy as np
import pytest

pytest.importorskip("tqdm")

from ddpm_core.app.run.options import TrainOptions  # noqa: E402
from ddpm_core.app.run.progress import Progress  # noqa: E402
from ddpm_core.app.training.logs import Progress as TrainingProgress  # noqa: E402


def _run(total: int, every: float, tty: bool, enabled: bool = True, **postfix) -> str:
    out = io.StringIO()
    with Progress(total, "work", unit="step", every=every, stream=out, tty=tty, enabled=enabled) as p:
        for _ in range(total):
            p.update(**postfix)
    return out.getvalue()


def test_off_a_terminal_a_plain_line_every_few_percent_and_no_carriage_return():
    text = _run(200, 10, tty=False, loss="0.5")
    lines = text.splitlines()
    assert "\r" not in text and len(lines) == 10
    assert [int(re.match(r"work:\s+(\d+)%", ln).group(1)) for ln in lines] == list(range(10, 101, 10))
    assert lines[-1].startswith("work: 100% 200/200") and "loss=0.5" in lines[-1]


def test_on_a_terminal_a_tqdm_bar():
    text = _run(50, 10, tty=True)
    assert "\r" in text and "50/50" in text


def test_disabled_writes_nothing():
    assert _run(50, 10, tty=False, enabled=False) == _run(50, 10, tty=True, enabled=False) == ""


def test_training_progress_counts_from_the_resumed_step():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        p = TrainingProgress(100, 8, enabled=True, initial=60)
        for step in (70, 80, 90, 100):
            p.update(step, 0.25, 321.0)
        p.close()
    lines = err.getvalue().splitlines()
    assert lines[0].startswith("training:  70% 70/100") and lines[-1].startswith("training: 100% 100/100")
    assert "loss=0.2500" in lines[-1] and "img_s=321" in lines[-1]


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_sampling_chain_reports_each_step_and_the_same_samples(backend, tmp_path):
    wanted = os.environ.get("DDPM_TEST_BACKENDS")
    if wanted and backend not in wanted.split(","):
        pytest.skip(f"runs in the tests-{backend} session")
    pytest.importorskip(backend)
    pytest.importorskip("sklearn")
    import importlib

    api = importlib.import_module(f"ddpm_core.backends.{backend}.api")
    run = tmp_path / "run"
    api.train(TrainOptions(preset="tiny", out=str(run), steps=2, log_every=1, ckpt_every=0, progress=False,
                           sample_n=2, backend=backend))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        shown = api.sample(run, n=3, steps=10, batch_size=2, progress=True)
    silent = io.StringIO()
    with contextlib.redirect_stderr(silent):
        quiet = api.sample(run, n=3, steps=10, batch_size=2)
    np.testing.assert_array_equal(shown, quiet)
    assert "sampling" not in silent.getvalue()
    lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("sampling:")]
    assert lines[-1].startswith("sampling: 100% 20/20") and "samples=3/3" in lines[-1]  # 2 batches x 10 steps
    assert len(lines) >= 10
