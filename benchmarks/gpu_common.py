"""What every part of ``benchmarks/gpu_check.py`` shares: its sizes, its record, and how it
reports a partial result (a stdout line the driver reads)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT = "GPUCHECK_RESULT "  # a part's stdout line carrying its (partial or final) result


@dataclass(frozen=True)
class Settings:
    """Sizes of every part; :data:`SMOKE` shrinks them for a CPU."""

    smoke: bool = False
    preset: str = "cifar10"
    batch: int = 128
    matmul_n: int = 8192
    matmul_reps: int = 30
    train_warmup: int = 10  # untimed steps (compilation happens here)
    train_steps: int = 30
    train_window: int = 10  # logged windows of this many steps; images/s is their median
    minimal_batch: int = 128  # bench_train's minimal loop (always cifar10 networks)
    minimal_steps: int = 10
    sample_n: int = 256
    sample_steps: int = 1000  # chain length; fewer is a respaced chain of T = 1000
    probe_steps: int = 20


SMOKE = Settings(smoke=True, preset="tiny", batch=8, matmul_n=256, matmul_reps=3, train_warmup=1,
                 train_steps=2, train_window=1, minimal_batch=1, minimal_steps=1, sample_n=4, sample_steps=10,
                 probe_steps=5)


@dataclass(frozen=True)
class Part:
    """A part: its function ``(settings, seconds allowed) -> measured fields`` and limits."""

    run: Callable[[Settings, float], dict[str, Any]]
    title: str
    cap_s: float  # at most this many seconds, whatever the budget left
    needs: tuple[str, ...] = ()  # modules that must be importable, else the part is skipped
    cuda_only: str = ""  # why the part cannot run without CUDA ("" if it can)
    not_smoke: str = ""  # why --smoke leaves the part out ("" if it runs)


# In the order they run, within the budget: the ceiling (MFU needs it) and the tests first,


def _emit(result: dict[str, Any]) -> None:
    print(RESULT + json.dumps(result), flush=True)


def _torch_device(cuda: bool) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": cuda,
                           "cpu_threads": torch.get_num_threads()}
    if cuda:
        p = torch.cuda.get_device_properties(0)
        out |= {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                "capability": f"{p.major}.{p.minor}"}
    else:
        out["name"] = f"CPU, {torch.get_num_threads()} threads"
    return out


def _jax_device(jax: Any) -> dict[str, Any]:
    return {"jax": jax.__version__, "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()]}
