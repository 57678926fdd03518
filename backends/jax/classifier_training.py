"""The JAX side of ``ddpm train-classifier``: the noise-aware classifier's jitted step.

:class:`JaxClassifierTrainer` is the :class:`~ddpm_core.backends.jax.training.JaxTrainer`
(mesh, seeded initial weights, Adam with warm-up and clipping, the key of each step) with
the Flax classifier (:class:`~ddpm_core.backends.jax.classifier.Classifier`) as the network:
``make_train_step`` then minimises the cross-entropy of its logits on
``x_t = q_sample(x_0, t, eps)`` for the batch's classes. ``model.safetensors`` holds the
weights in the canonical (PyTorch) naming; the state file stores them under ``model/`` and
``ema/`` (the classifier has no EMA: the same tensors).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ddpm_core import q_sample
from ddpm_core.app.run.options import TrainOptions
from ddpm_core.app.run.rundir import RunPaths, make_schedule, schedule_dict
from ddpm_core.app.training.classifier_train import ClassifierTask
from ddpm_core.app.training.trainer import train as train_loop
from ddpm_core.backends.jax import checkpoint as ckpt
from ddpm_core.backends.jax.training import JaxTrainer, network

__all__ = ["JaxClassifierTrainer", "train_classifier"]


def train_classifier(options: TrainOptions) -> dict[str, Any]:
    """Train (or resume) a classifier run with JAX; see
    :mod:`ddpm_core.app.training.classifier_train`."""
    if options.backend != "jax":
        raise ValueError(f"backend must be 'jax' for this function; got {options.backend!r}")
    return train_loop(options, JaxClassifierTrainer, ClassifierTask())


class JaxClassifierTrainer(JaxTrainer):
    """A :class:`ddpm_core.app.training.trainer.TrainBackend` training the noise-aware classifier."""

    def __init__(self, options: TrainOptions, config: Any, train_cfg: Any) -> None:
        super().__init__(options, config, train_cfg)
        self.schedule = make_schedule(schedule_dict(train_cfg))

    def save(self, run_dir: str | Path, step: int, arrays: dict[str, np.ndarray]) -> None:
        st = self.state
        ckpt.save_state(run_dir, config=self.cfg, params=st.params, ema=st.params,
                        opt_state=st.opt_state, key=self.key, step=step,
                        scalars={"seed": self.o.seed}, arrays=arrays, export_weights=False)
        ckpt.save_weights(RunPaths.of(run_dir).model, st.params, self.cfg, step=step)

    def predict(self, x0: np.ndarray, t: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """Logits float64 (n, K) of ``q_sample(x0, t, eps)``; ``x0``/``eps`` float32
        (n, C, H, W), ``t`` int64 (n,)."""
        params = jax.tree.map(lambda a: a.addressable_data(0), self.state.params)
        fn = _predict_fn(self.cfg, self.dtype, self.schedule)
        return np.asarray(fn(params, x0, t.astype(np.int32), eps), np.float64)


@functools.lru_cache(maxsize=4)
def _predict_fn(config: Any, dtype: Any, schedule: Any) -> Any:
    net = network(config, dtype)
    return jax.jit(lambda p, x0, t, eps: net.apply({"params": p}, q_sample(schedule, x0, t, eps), t))
