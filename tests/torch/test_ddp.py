"""DistributedDataParallel on the CPU (gloo), started as users start it: ``torchrun``.

Two processes (``python -m torch.distributed.run --standalone --nproc_per_node 2 -m
ddpm_core train ...``) give the losses and weights of one process (``python -m ddpm_core
train ...``) at the same global batch (trained with L_hybrid, so the logged loss parts are
reduced across ranks too), exit 0 every time, print one summary line and no
DDP warning; a pair killed with SIGKILL after a checkpoint resumes to the weights of the
uninterrupted pair, bit for bit. One machine only: several machines are not tested.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from run_compare import assert_matches_one_process, losses, step, weights  # noqa: E402

STEPS, CKPT = 30, 5
TRAIN = ["-m", "ddpm_core", "train", "--backend", "torch", "--preset", "tiny", "--data",
         "digits", "--steps", str(STEPS), "--batch-size", "8", "--log-every", "1",
         "--ckpt-every", str(CKPT), "--sample-n", "1", "--quiet",
         "--loss", "hybrid", "--variance", "learned_range"]  # the loss and its parts all-reduced
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _command(out: Path, nproc: int, *extra: str) -> list[str]:
    launcher = TORCHRUN if nproc > 1 else []
    return [sys.executable, *launcher, *TRAIN, "--out", str(out), *extra]


def _train(out: Path, nproc: int, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(_command(out, nproc, *extra), env=ENV, cwd=out.parent,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One process, then the torchrun pair twice in a row (the resume test adds a third
    clean exit; each pair takes ~30 s on a loaded 2-core machine)."""
    root = tmp_path_factory.mktemp("ddp")
    one = root / "one"
    _train(one, 1)
    pairs = [(root / f"two-{i}", _train(root / f"two-{i}", 2)) for i in range(2)]
    return {"one": one, "pairs": pairs}


def test_torchrun_pair_matches_one_process(runs):
    assert_matches_one_process(runs["one"], [run for run, _ in runs["pairs"]], STEPS)


def test_torchrun_pair_ends_cleanly_and_speaks_once(runs):
    first = weights(runs["pairs"][0][0])
    for run, proc in runs["pairs"]:
        trained = [line for line in proc.stdout.splitlines() if line.startswith("trained ")]
        assert len(trained) == 1, proc.stdout
        final = f"final loss {losses(run)[-1]:.4f}"
        assert final in trained[0], (trained[0], final)
        assert "Grad strides do not match" not in proc.stderr, proc.stderr[-2000:]
        for k, v in weights(run).items():  # gloo sums two ranks in a fixed order
            np.testing.assert_array_equal(v, first[k], err_msg=k)


def _kill_tree(pid: int) -> None:
    """SIGKILL ``torchrun`` and its workers (which it starts in sessions of their own)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    for child in children:
        os.kill(child, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_torchrun_pair_killed_after_a_checkpoint_resumes_exactly(runs, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_command(out, 2), env=ENV, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while step(out) < CKPT and proc.poll() is None:
            time.sleep(0.02)
        _kill_tree(proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    killed_at = step(out)
    assert CKPT <= killed_at < STEPS, f"killed at step {killed_at}"
    _train(out, 2, "--resume")
    done = runs["pairs"][0][0]
    np.testing.assert_array_equal(losses(out), losses(done))
    for name in ("model", "ema"):
        want = weights(done, name)
        for k, v in weights(out, name).items():
            np.testing.assert_array_equal(v, want[k], err_msg=f"{name} {k}")
