"""DistributedDataParallel on the CPU (gloo), started as users start it: ``torchrun``.

Two processes (``python -m torch.distributed.run --standalone --nproc_per_node 2 -m
ddpm_core train ...``) give the losses and weights of one process (``python -m ddpm_core
train ...``) at the same global batch, exit 0 every time, print one summary line and no
DDP warning; a pair killed with SIGKILL after a checkpoint resumes to the weights of the
uninterrupted pair, bit for bit. One machine only: several machines are not tested.
"""

from __future__ import annotations

import csv
import json
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

from safetensors.torch import load_file  # noqa: E402

STEPS, CKPT = 30, 5
TRAIN = ["-m", "ddpm_core", "train", "--backend", "torch", "--preset", "tiny", "--data",
         "digits", "--steps", str(STEPS), "--batch-size", "8", "--log-every", "1",
         "--ckpt-every", str(CKPT), "--sample-n", "1", "--quiet"]
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


def _losses(run: Path) -> np.ndarray:
    with open(run / "log.csv", newline="") as f:
        return np.array([float(r["loss"]) for r in csv.DictReader(f)])


def _weights(run: Path, name: str = "model") -> dict[str, torch.Tensor]:
    return load_file(str(run / f"{name}.safetensors"))


def _step(run: Path) -> int:
    try:
        return int(json.loads((run / "run.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0


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
    one = runs["one"]
    ref = _losses(one)
    unit = 10.0 ** (np.floor(np.log10(np.abs(ref))) - 5)  # the log keeps 6 digits
    a = _weights(one)
    for run, _ in runs["pairs"]:
        two = _losses(run)
        assert two.shape == ref.shape == (STEPS,)
        assert np.all(np.abs(two - ref) <= unit), (two, ref)
        b = _weights(run)
        for k in a:  # float32 sums in another order, through 30 Adam steps
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
        assert (run / "samples" / f"step-{STEPS:06d}.png").is_file()  # rank 0's last file


def test_torchrun_pair_ends_cleanly_and_speaks_once(runs):
    first = _weights(runs["pairs"][0][0])
    for run, proc in runs["pairs"]:
        trained = [line for line in proc.stdout.splitlines() if line.startswith("trained ")]
        assert len(trained) == 1, proc.stdout
        final = f"final loss {_losses(run)[-1]:.4f}"
        assert final in trained[0], (trained[0], final)
        assert "Grad strides do not match" not in proc.stderr, proc.stderr[-2000:]
        for k, v in _weights(run).items():  # gloo sums two ranks in a fixed order
            assert torch.equal(v, first[k]), k


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
        while _step(out) < CKPT and proc.poll() is None:
            time.sleep(0.02)
        _kill_tree(proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    killed_at = _step(out)
    assert CKPT <= killed_at < STEPS, f"killed at step {killed_at}"
    _train(out, 2, "--resume")
    done = runs["pairs"][0][0]
    np.testing.assert_array_equal(_losses(out), _losses(done))
    for name in ("model", "ema"):
        want = _weights(done, name)
        for k, v in _weights(out, name).items():
            assert torch.equal(v, want[k]), (name, k)
