"""Two JAX processes on loopback, started as users start them (one command per process).

Each process runs ``python -m ddpm_core train --backend jax ...`` with
``JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT``, ``JAX_NUM_PROCESSES=2`` and its
``JAX_PROCESS_ID``; each has one CPU device, and the gradient all-reduce crosses processes
through JAX's CPU collectives (gloo). The pair gives the losses and weights of one process
at the same global batch, exits 0 every time and prints one summary line; a pair killed
with SIGKILL after a checkpoint resumes to the weights of the uninterrupted pair, bit for
bit. One machine only: several machines are not tested.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from run_compare import assert_matches_one_process, losses, step, weights  # noqa: E402

pytest.importorskip("jax")
pytest.importorskip("flax")
pytest.importorskip("optax")
pytest.importorskip("sklearn")

STEPS, CKPT = 30, 5
TRAIN = ["-m", "ddpm_core", "train", "--backend", "jax", "--preset", "tiny", "--data",
         "digits", "--steps", str(STEPS), "--batch-size", "8", "--log-every", "1",
         "--ckpt-every", str(CKPT), "--sample-n", "1", "--quiet"]
FLOAT32_EPS = float(np.finfo(np.float32).eps)


def _env(process_id: int | None, port: int = 0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    # one CPU device per process: drop any forced host device count
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env.update(JAX_PLATFORMS="cpu", OMP_NUM_THREADS="1", XLA_FLAGS=" ".join(flags))
    if process_id is not None:
        env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                   JAX_PROCESS_ID=str(process_id))
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(out: Path, nproc: int, *extra: str) -> list[subprocess.Popen[str]]:
    cmd = [sys.executable, *TRAIN, "--out", str(out), *extra]
    if nproc == 1:
        envs = [_env(None)]
    else:
        port = _free_port()
        envs = [_env(i, port) for i in range(nproc)]
    return [subprocess.Popen(cmd, env=env, cwd=out.parent, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for env in envs]


def _train(out: Path, nproc: int, *extra: str) -> list[str]:
    """Run to the end; every process must exit 0. Returns each process's stdout."""
    procs = _start(out, nproc, *extra)
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for i, (p, (_, err)) in enumerate(zip(procs, results, strict=True)):
        assert p.returncode == 0, f"process {i}: exit {p.returncode}\n{err[-3000:]}"
    return [stdout for stdout, _ in results]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One process, then the pair once (the resume test adds a second clean exit of a pair;
    each process compiles its programs, ~40 s of CPU on a 2-core machine)."""
    root = tmp_path_factory.mktemp("jaxpair")
    one = root / "one"
    _train(one, 1)
    pairs = [(root / f"two-{i}", _train(root / f"two-{i}", 2)) for i in range(1)]
    return {"one": one, "pairs": pairs}


def test_pair_matches_one_process(runs):
    assert_matches_one_process(runs["one"], [run for run, _ in runs["pairs"]], STEPS)


def test_pair_speaks_once_and_is_deterministic(runs):
    first = weights(runs["pairs"][0][0])
    for run, stdouts in runs["pairs"]:
        trained = [[line for line in s.splitlines() if line.startswith("trained ")]
                   for s in stdouts]
        assert [len(t) for t in trained] == [1, 0], stdouts  # process 0 only
        assert f"final loss {losses(run)[-1]:.4f}" in trained[0][0]
        for k, v in weights(run).items():
            np.testing.assert_array_equal(v, first[k], err_msg=k)


def test_pair_killed_after_a_checkpoint_resumes_exactly(runs):
    out = runs["one"].parent / "killed"
    procs = _start(out, 2)
    try:
        while step(out) < CKPT and all(p.poll() is None for p in procs):
            time.sleep(0.02)
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
    finally:
        for p in procs:
            p.kill()
            p.communicate(timeout=60)
    killed_at = step(out)
    assert CKPT <= killed_at < STEPS, f"killed at step {killed_at}"
    _train(out, 2, "--resume")
    done = runs["pairs"][0][0]
    np.testing.assert_array_equal(losses(out), losses(done))
    for name in ("model", "ema"):
        want = weights(done, name)
        for k, v in weights(out, name).items():
            np.testing.assert_array_equal(v, want[k], err_msg=f"{name} {k}")
