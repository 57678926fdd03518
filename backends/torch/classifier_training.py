"""The PyTorch side of ``ddpm train-classifier``: the noise-aware classifier's step.

:class:`TorchClassifierTrainer` is the :class:`~ddpm_core.backends.torch.training.TorchTrainer`
(device, process group, seeded initial weights, Adam with warm-up and gradient clipping,
the seeded ``eps`` of each step, metrics, checkpoints) with the classifier of Dhariwal &
Nichol 2021 (:class:`~ddpm_core.backends.torch.classifier.Classifier`) as the network and
the cross-entropy of its logits on ``x_t = q_sample(x_0, t, eps)`` at the shared loop's
uniform t as the loss. The classifier has no EMA: ``model.safetensors`` holds its weights
(canonical naming) and the state file stores them under ``model/`` (and ``ema/``, the same
tensors, so the checkpoint format is the diffusion run's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import ddpm_core
from ddpm_core.app.run.options import TrainOptions
from ddpm_core.app.run.rundir import RunPaths
from ddpm_core.app.training.classifier_train import ClassifierTask
from ddpm_core.app.training.trainer import HostBatch
from ddpm_core.app.training.trainer import train as train_loop
from ddpm_core.backends.torch import checkpoint as ckpt
from ddpm_core.backends.torch.classifier import Classifier
from ddpm_core.backends.torch.training import TorchTrainer, _step_rng

__all__ = ["TorchClassifierTrainer", "train_classifier"]


def train_classifier(options: TrainOptions) -> dict[str, Any]:
    """Train (or resume) a classifier run with PyTorch; see
    :func:`ddpm_core.app.training.classifier_train.train_classifier`."""
    if options.backend != "torch":
        raise ValueError(f"backend must be 'torch' for this function; got {options.backend!r}")
    return train_loop(options, TorchClassifierTrainer, ClassifierTask())


class TorchClassifierTrainer(TorchTrainer):
    """A :class:`ddpm_core.app.training.trainer.TrainBackend` training the noise-aware classifier."""

    network = Classifier
    terms = ()  # cross-entropy: no parts

    def save(self, run_dir: str | Path, step: int, arrays: dict[str, np.ndarray]) -> None:
        ckpt.save_state(run_dir, model=self.model, ema=self.model, optimizer=self.opt,
                        step=step, scalars={"seed": self.o.seed}, export_weights=False,
                        arrays={k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()})
        ckpt.save_weights(RunPaths.of(run_dir).model, self.model.state_dict(),
                          metadata={"step": str(step)})

    def train_step(self, step: int, batch: HostBatch) -> tuple[torch.Tensor, ...]:
        if batch.labels is None:
            raise ValueError("the classifier trains on labeled batches; got none")
        _, x_t, t, w, _ = self._inputs(step, batch)
        y = torch.as_tensor(batch.labels, device=self.device)
        with _step_rng(self.o.seed, step, self.rank, self.device), self._autocast():
            logits = self.net(x_t, t)
        losses = F.cross_entropy(logits.float(), y, reduction="none")
        loss = (losses * w).mean()
        grad_norm = self._optimize(loss)
        return loss.detach(), grad_norm.detach(), losses.detach()

    @torch.no_grad()
    def predict(self, x0: np.ndarray, t: np.ndarray, eps: np.ndarray) -> np.ndarray:
        """Logits float64 (n, K) of ``q_sample(x0, t, eps)``; ``x0``/``eps`` float32
        (n, C, H, W), ``t`` int64 (n,)."""
        self.model.eval()
        x0_, t_, eps_ = (torch.as_tensor(a, device=self.device) for a in (x0, t, eps))
        logits = self.model(ddpm_core.q_sample(self.schedule, x0_, t_, eps_), t_)
        self.model.train()
        return logits.double().cpu().numpy()
