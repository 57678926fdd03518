"""DistributedDataParallel on CPU (gloo): 2 processes match 1 process at the same global batch.

The two workers get the environment ``torchrun`` sets (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT); ``train`` joins the process group from it.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from safetensors.torch import load_file  # noqa: E402

_WORKER = """
import sys, torch
torch.set_num_threads(1)
from ddpm_core.app.options import TrainOptions
from ddpm_core.backends.torch import api
api.train(TrainOptions(preset="tiny", out=sys.argv[1], steps=5, batch_size=8, log_every=1,
                       ckpt_every=0, progress=False, sample_n=1, random_flip=True))
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out, world_size, cwd):
    port = _free_port()
    procs = []
    for rank in range(world_size):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1",
               "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-c", _WORKER, str(out)], env=env,
                                      cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for p in procs:
        out_, err = p.communicate(timeout=180)
        assert p.returncode == 0, err.decode()[-3000:]


def _losses(run):
    with open(run / "log.csv", newline="") as f:
        return np.array([float(r["loss"]) for r in csv.DictReader(f)])


def test_two_processes_match_one(tmp_path):
    _launch(tmp_path / "one", 1, tmp_path)
    _launch(tmp_path / "two", 2, tmp_path)
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert one.shape == two.shape == (5,)
    np.testing.assert_allclose(two, one, rtol=1e-4)  # sums in another order; 6 digits logged
    a = load_file(str(tmp_path / "one" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
