"""Devices of the JAX backend: the multi-host start, the device list, the mesh, the dtype.

Data parallel: a ``jax.sharding.Mesh`` over every device (all hosts), the batch sharded
along its ``"data"`` axis and the parameters replicated. With ``JAX_COORDINATOR_ADDRESS``/
``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID`` set (or a SLURM allocation of several tasks),
``jax.distributed.initialize`` joins the hosts.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ddpm_core.checks import check_choice

__all__ = ["compute_dtype", "make_mesh", "maybe_initialize_distributed", "pick_devices"]


def maybe_initialize_distributed() -> bool:
    """Join a multi-host run when the environment describes one; True if it did.

    ``JAX_COORDINATOR_ADDRESS`` (with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``), or a
    SLURM job with more than one task, triggers ``jax.distributed.initialize``. Must run
    before the first JAX computation; a second call is a no-op.
    """
    env = os.environ
    if jax.distributed.is_initialized():
        return True
    if env.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                                   num_processes=int(env.get("JAX_NUM_PROCESSES", "1")),
                                   process_id=int(env.get("JAX_PROCESS_ID", "0")))
        return True
    if int(env.get("SLURM_NTASKS", "1")) > 1:
        jax.distributed.initialize()
        return True
    return False


def pick_devices(name: str = "auto") -> list[Any]:
    """All devices (every host) of the requested platform; ``"auto"``: JAX's default."""
    platform = {"auto": None, "cpu": "cpu", "cuda": "gpu", "gpu": "gpu", "tpu": "tpu"}
    check_choice("device", name, sorted(platform))
    try:
        return list(jax.devices(platform[name]))
    except RuntimeError as e:
        raise RuntimeError(f"device={name!r}: no such JAX devices ({e})") from e


def make_mesh(devices: list[Any]) -> Mesh:
    """A 1-D mesh ``("data",)`` over ``devices``."""
    return Mesh(np.asarray(devices), ("data",))


def compute_dtype(devices: list[Any]) -> Any:
    """bfloat16 on accelerators, float32 on the CPU."""
    return jnp.float32 if devices[0].platform == "cpu" else jnp.bfloat16
